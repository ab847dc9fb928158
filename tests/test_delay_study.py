"""Delay study: runs, summary maths, caching of finished runs, outputs."""
import json
import os

import pytest

from spikepipe_jax.report import write_delay_study
from spikepipe_jax.train import delay_study as ds


def test_study_runs_caches_and_writes(tmp_path):
    settings = lambda net: [ds.Setting("none"), ds.Setting("1f1b", delays="1f1b")]
    logs = []
    recs = ds.run_study(["fc_digits"], settings, [0], str(tmp_path), config_arg="smoke", log=logs.append)
    assert [r["setting"] for r in recs] == ["none", "1f1b"]
    assert recs[1]["delays"] == [1, 0] and recs[0]["delays"] == [0, 0]
    assert all(len(r["curve"]) == 1 for r in recs)
    assert all("(trained)" in l for l in logs)
    logs2 = []
    recs2 = ds.run_study(["fc_digits"], settings, [0], str(tmp_path), config_arg="smoke", log=logs2.append)
    assert all("(cached)" in l for l in logs2)
    assert [r["test_accuracy"] for r in recs2] == [r["test_accuracy"] for r in recs]
    paths = write_delay_study(recs, ds.summarize(recs), str(tmp_path))
    for p in paths.values():
        assert os.path.getsize(p) > 0
    assert open(paths["png"], "rb").read(4) == b"\x89PNG"
    table = open(paths["md"]).read()
    assert "| fc_digits | 1f1b | 1,0 |" in table
    assert json.load(open(paths["json"]))["summary"][0]["seeds"] == 1


def test_summary_degradation_and_remaining_fraction():
    mk = lambda s, acc, mit="none", sim="none", seed=0: dict(net="n", setting=s, seed=seed, delays=[1, 0],
                                                             mitigation=mit, simulate=sim,
                                                             test_accuracy=acc, wall_s=1.0, curve=[])
    recs = [mk("none", 0.9), mk("none", 0.8, seed=1), mk("1f1b", 0.7), mk("1f1b", 0.6, seed=1),
            mk("1f1b+x", 0.8, mit="x"), mk("1f1b+x", 0.8, mit="x", seed=1)]
    rows = {r["setting"]: r for r in ds.summarize(recs)}
    assert rows["none"]["mean"] == pytest.approx(0.85) and rows["none"]["std"] == pytest.approx(0.0707107, rel=1e-5)
    assert rows["1f1b"]["degradation_pts"] == pytest.approx(20.0)
    assert rows["1f1b+x"]["degradation_pts"] == pytest.approx(5.0)
    assert rows["1f1b+x"]["vs_plain_1f1b"] == pytest.approx(0.25)
    assert rows["1f1b"]["vs_plain_1f1b"] is None


def test_curve_gap_between_buffer_model_and_simulator():
    mk = lambda curve, sim: dict(curve=list(enumerate(curve)), simulate=sim)
    buffer = [mk([0.5, 0.7, 0.8], "none"), mk([0.3, 0.7, 0.9], "none")]   # mean 0.4, 0.7, 0.85
    sim = [mk([0.5, 0.6, 0.85], "stash")]
    assert ds.curve_gap_pts(buffer, sim) == pytest.approx(100 * (0.1 + 0.1 + 0.0) / 3)


def test_unknown_network_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no configs/nope.py"):
        ds.run_study(["nope"], lambda n: [ds.Setting("none")], [0], str(tmp_path))

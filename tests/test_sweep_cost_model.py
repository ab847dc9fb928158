"""Tests of the cost-model sweep (library, script and benchmark entry points)."""

import csv
import importlib
import io
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from spikepipe_jax.hardware import mapping, sweep, systolic

REPO = pathlib.Path(__file__).resolve().parents[1]
NETS = ("fc_small", "conv_medium", "vgg_large")


def _nets():
    from spikepipe_jax.experiments import network_specs
    return network_specs(NETS)


def test_quick_sweep_equals_training_tasks_row_by_row():
    nets = _nets()
    grid = sweep.default_grid(quick=True)
    res = sweep.sweep(nets, grid)
    n_tasks = sum(3 * len(v) for v in nets.values()) * len(grid.num_steps) * len(grid.batches)
    assert len(res["cycles"]) == n_tasks * len(grid.arrays) * len(grid.dataflows)
    checked = 0
    for net, infos in nets.items():
        for (r, c) in grid.arrays:
            for df in grid.dataflows:
                tasks = mapping.training_tasks(infos, batch=grid.batches[0],
                                               num_steps=grid.num_steps[0], rows=r, cols=c,
                                               dataflow=df)
                sel = ((res["network"] == net) & (res["rows"] == r) & (res["cols"] == c)
                       & (res["dataflow"] == df))
                assert list(res["task"][sel]) == [t["name"] for t in tasks]
                for key in ("cycles", "gemm_cycles", "vector_cycles", "macs"):
                    assert list(res[key][sel]) == [t[key] for t in tasks], (net, r, c, df, key)
                assert list(res["m"][sel]) == [t["gemm"]["m"] if t["gemm"] else 0 for t in tasks]
                checked += 1
    assert checked == len(nets) * len(grid.arrays) * len(grid.dataflows)


def test_evaluate_grid_is_exact_including_beyond_int32():
    rng = np.random.default_rng(0)
    m = np.concatenate([rng.integers(1, 5000, 20), [524288]])
    k = np.concatenate([rng.integers(1, 5000, 20), [4608]])
    n = np.concatenate([rng.integers(1, 600, 20), [512]])
    rows, cols = np.array([8, 16, 3, 256]), np.array([8, 64, 5, 32])
    res = sweep.evaluate_grid(m, k, n, rows, cols, ["os", "ws", "is"])
    assert res["cycles"].shape == (21, 4, 3) and res["cycles"].max() > 2**31
    for g in range(21):
        for a in range(4):
            for d in range(3):
                want = systolic.gemm_cost_exact(int(m[g]), int(k[g]), int(n[g]), int(rows[a]),
                                                int(cols[a]), d)
                assert res["cycles"][g, a, d] == want.cycles
                assert res["mapping_eff"][g, a, d] == pytest.approx(want.mapping_efficiency, rel=1e-5)
                assert res["compute_util"][g, a, d] == pytest.approx(want.compute_utilization, rel=1e-5)


def test_jitted_grid_does_not_recompile():
    args = [np.array([10, 20], np.int32)] * 3 + [np.array([4, 8], np.int32)] * 2 + [
        np.array([0, 1, 2], np.int32)]
    sweep.evaluate_grid_device(*args)
    before = sweep.evaluate_grid_device._cache_size()
    args[0] = np.array([11, 21], np.int32)
    sweep.evaluate_grid_device(*args)
    assert sweep.evaluate_grid_device._cache_size() == before


@pytest.mark.parametrize("kw,word", [
    (dict(m=np.array([0, 3])), "m"), (dict(rows=np.array([4.0])), "rows"),
    (dict(dataflows=["xs"]), "dataflow"), (dict(cols=np.array([4, 4])), "same length"),
    (dict(m=np.array([2**30, 3]), k=np.array([2**30, 3]), rows=np.array([1]), cols=np.array([1])),
     "folds"),
])
def test_evaluate_grid_bad_input(kw, word):
    args = dict(m=np.array([3, 3]), k=np.array([3, 3]), n=np.array([3, 3]), rows=np.array([4]),
                cols=np.array([4]), dataflows=["os"])
    args.update(kw)
    with pytest.raises(ValueError, match=word):
        sweep.evaluate_grid(**args)


def test_best_dataflow_table_is_argmin():
    nets = {"conv_medium": _nets()["conv_medium"]}
    grid = sweep.default_grid(quick=True)
    res = sweep.sweep(nets, grid)
    from spikepipe_jax.report.cost_model_report import DATAFLOWS, best_dataflow_table
    assert DATAFLOWS == systolic.DATAFLOWS
    layers, arrays, best = best_dataflow_table(res, "conv_medium", 2, 2)
    assert len(layers) == 3 and list(arrays) == [8, 32]
    infos = nets["conv_medium"]
    for i, l in enumerate(layers):
        for j, a in enumerate(arrays):
            tot = []
            for df in systolic.DATAFLOWS:
                tasks = mapping.training_tasks(infos, batch=2, num_steps=2, rows=int(a),
                                               cols=int(a), dataflow=df)
                tot.append(sum(t["gemm_cycles"] for t in tasks if t["layer"] == l))
            assert best[i, j] == int(np.argmin(tot))


def test_script_writes_csv_and_figures(tmp_path):
    from spikepipe_jax import experiments

    paths = experiments.write_cost_sweep(str(tmp_path), quick=True, networks=["fc_small", "conv_medium"])
    rows = list(csv.DictReader(io.StringIO(pathlib.Path(paths["csv"]).read_text())))
    from spikepipe_jax.report.cost_model_report import CSV_COLUMNS
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == (2 * 3 + 3 * 3) * 4 * 3
    assert {r["network"] for r in rows} == {"fc_small", "conv_medium"}
    b0 = [r for r in rows if r["task"] == "B0"]
    assert all(r["m"] == "0" and r["gemm_cycles"] == "0" and r["mapping_eff_pct"] == "" for r in b0)
    for name in ("task_cycles", "best_dataflow", "utilization"):
        data = pathlib.Path(paths[name]).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp_")]


def test_script_cli(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-m", "scripts.sweep_cost_model", f"--out={tmp_path}",
                    "--quick", "--networks=fc_small"], check=True, cwd=REPO, env=env,
                   capture_output=True)
    text = (tmp_path / "cost_model_sweep.csv").read_text().splitlines()
    assert len(text) == 1 + 6 * 4 * 3


def test_benchmark_entry_points():
    from benchmarks import cost_model

    r = cost_model.bench_model(repeats=1, step=128)
    assert r["evals_per_call"] == r["gemms"] * 4 * 3 and r["evals_per_s"] > 0
    s = cost_model.bench_scalesim() if importlib.util.find_spec("scalesim") is None else {"skipped": "x"}
    assert "skipped" in s


@pytest.mark.parametrize("args,words", [
    (["--out={d}/file/sub", "--quick"], ["Not a directory", "file/sub"]),
    (["--out={d}/o", "--quick", "--networks=nope"], ["configs/nope.py"]),
    (["--out={d}/o", "--quick", "--vector_lanes=x"], ["vector_lanes", "'x'"]),
])
def test_script_bad_input_is_one_error_line(tmp_path, args, words):
    (tmp_path / "file").write_text("not a folder")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-m", "scripts.sweep_cost_model",
                          *(a.format(d=tmp_path) for a in args)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])

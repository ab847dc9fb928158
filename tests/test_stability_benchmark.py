"""benchmarks/stability.py runs on the real files and reports what its README section reads."""
import json
import os
import subprocess
import sys

import pytest

from spikepipe_jax.data import idx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER, PACKAGE = idx.DEFAULT_DIRS["fashion_mnist"]


@pytest.mark.skipif(not os.path.isdir(FOLDER), reason=f"real Fashion-MNIST not installed in {FOLDER} "
                                                      f"(apt-get install {PACKAGE}; .ci/run does it)")
def test_stability_benchmark_smoke(tmp_path):
    out = tmp_path / "s.jsonl"
    cmd = [sys.executable, "-m", "benchmarks.stability", "--variants=old_defaults,defaults", "--delays=none,1.1",
           "--steps=3", "--stat_every=2", "--max_test=100", f"--out={out}"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in open(out)]
    assert [(x["variant"], x["delays"]) for x in rows] == [
        ("old_defaults", "none"), ("old_defaults", "1.1"), ("defaults", "none"), ("defaults", "1.1")]
    for x in rows:
        assert 0.0 <= x["test_accuracy"] <= 1.0 and x["steps"] == 3
        assert [s["step"] for s in x["stats"]] == [0, 2]
        assert all(s["grad_norm_layer_0"] > 0 and s["grad_norm_layer_1"] > 0 for s in x["stats"])
    # only the spiking readout reports silent outputs; the membrane readout has none to report
    assert all("silent_output" in s for s in rows[0]["stats"])
    assert all("silent_output" not in s for s in rows[2]["stats"])


def test_unknown_variant_is_refused():
    r = subprocess.run([sys.executable, "-m", "benchmarks.stability", "--variants=nope"], cwd=REPO,
                       capture_output=True, text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert r.returncode != 0 and "nope" in r.stderr

"""Smoke test of benchmarks/train_step.py: the spikepipe_jax worker at tiny sizes (no torch/spyx)."""
import json
import subprocess
import sys

import pytest

from benchmarks import train_step


def test_cli_prints_one_record_per_framework_and_net(repo_root, tmp_path):
    out = tmp_path / "bench.jsonl"
    # "snntorch" runs with this interpreter: without torch it must be reported as skipped,
    # with torch it runs; either way the spikepipe_jax records must be complete.
    cmd = [sys.executable, "-m", "benchmarks.train_step", "--nets=fc_small,conv_medium", "--batch=4",
           "--num_steps=2", "--steps=2", "--rounds=2", "--matmul_size=64", "--settle_s=0.01",
           "--frameworks=spikepipe_jax,spikepipe_jax[model.conv_impl=xla],snntorch",
           f"--peer_python={sys.executable}", f"--out={out}"]
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [json.loads(line) for line in out.read_text().splitlines()] == records
    assert "machine" in records[0] and "machine_after" in records[-1]
    assert records[0]["machine"]["settle_s"] == 0.01
    assert records[1]["matmul"]["xla_gflops"] > 0 and records[1]["matmul"]["numpy_gflops"] > 0
    runs = [r for r in records if "framework" in r]
    assert [(r["framework"], r["net"]) for r in runs] == [
        (f, n) for n in ("fc_small", "conv_medium") for f in ("spikepipe_jax", "spikepipe_jax", "snntorch")]
    for r in runs:
        if r["framework"] == "spikepipe_jax":
            assert r["samples_per_s"] > 0 and r["peak_rss_mb"] > 0 and r["steps"] == 2
            assert r["batch"] == 4 and r["num_steps"] == 2 and r["step_s"] > 0
            assert r["minor_faults"] >= 0 and r["major_faults"] >= 0
            # GEMM FLOP/s = FLOP per step x steps per second (the record rounds each to a few digits).
            assert r["gemm_gflops"] == pytest.approx(r["gemm_gflop_per_step"] * r["samples_per_s"] / 4, rel=0.02, abs=0.02)
            assert r["conv_impl"] == r.get("variant", "")[len("spikepipe_jax[model.conv_impl="):-1] or "auto"
        else:
            assert "skipped" in r or r["samples_per_s"] > 0
    summaries = {r["summary"]: r for r in records if "summary" in r}
    assert set(summaries) == {"fc_small", "conv_medium"}
    fc = summaries["fc_small"]
    assert 0 < fc["spikepipe_jax gemm_fraction_of_matmul"]
    # the fastest step is at most the median step: its figures are at least the median's
    assert fc["spikepipe_jax gemm_fraction_of_matmul fastest_step"] >= fc["spikepipe_jax gemm_fraction_of_matmul"]


def test_gemm_flops_from_the_cost_model():
    spec = train_step.net_spec("fc_small", batch=2, num_steps=3)
    # fc_small 784-1000-10: F0 and W0 (no B0), F1, B1, W1; 2 FLOPs per MAC.
    macs = 2 * 3 * (2 * 784 * 1000 + 3 * 1000 * 10)
    assert train_step.gemm_flops_per_step(spec) == 2 * macs
    assert spec["weight_layers"][0]["features"] == 1000 and spec["num_classes"] == 10


def test_parse_variant():
    assert train_step.parse_variant("spyx") == ("spyx", {})
    assert train_step.parse_variant("spikepipe_jax[model.remat=True;env.X=1]") == (
        "spikepipe_jax", {"model.remat": "True", "env.X": "1"})
    with pytest.raises(ValueError, match="'jaxsnn'"):
        train_step.parse_variant("jaxsnn")
    with pytest.raises(ValueError, match="key=value"):
        train_step.parse_variant("spyx[oops]")


def test_ab_step_times_each_tree_and_rejects_a_non_checkout(repo_root, tmp_path):
    cmd = [sys.executable, "-m", "benchmarks.ab_step", "--nets=fc_small", "--steps=2", "--rounds=2", "--settle_s=0",
           ".", ".|--xla_cpu_use_xnnpack=false"]
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [l for l in proc.stdout.splitlines() if " median " in l]
    assert len(rows) == 2 and all("(2 steps)" in r for r in rows)
    bad = subprocess.run(cmd[:-2] + [str(tmp_path)], cwd=repo_root, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "not a checkout" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_negative_settle_time_is_rejected(repo_root):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.train_step", "--settle_s=-1"], cwd=repo_root,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "--settle_s must be >= 0" in proc.stderr
    assert "Traceback" not in proc.stderr

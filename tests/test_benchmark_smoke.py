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


def _write_idx(path, arr):
    """An IDX file (gzip) of a uint8 array, as the MNIST files are written."""
    import gzip
    import numpy as np
    arr = np.asarray(arr, np.uint8)
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def test_end_to_end_runs_the_training_command_and_the_peer(repo_root, tmp_path):
    import numpy as np
    from benchmarks import common

    rng = np.random.default_rng(0)
    data = tmp_path / "fmnist"
    data.mkdir()
    for split, n in (("train", 48), ("t10k", 24)):
        _write_idx(data / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(data / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    x, y, xt, yt = common.load_images({"data": {"kind": "idx", "dir": str(data), "max_train": 40,
                                                     "max_test": 0}})
    assert x.shape == (40, 1, 28, 28) and xt.shape == (24, 1, 28, 28) and 0 <= x.min() and x.max() <= 1
    out = tmp_path / "e2e.jsonl"
    # this interpreter as the peer: without torch the snnTorch records say "skipped"
    cmd = [sys.executable, "-m", "benchmarks.end_to_end", "--nets=fc_small,vgg_large", f"--data_dir={data}",
           "--batch=8", "--num_steps=2", "--synthetic_train_steps=2", "--synthetic_test=8",
           f"--peer_python={sys.executable}", f"--workdir={tmp_path / 'runs'}", f"--out={out}"]
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [json.loads(line) for line in out.read_text().splitlines()] == records
    runs = {(r["framework"], r["net"]): r for r in records if "framework" in r}
    assert set(runs) == {(f, n) for f in ("spikepipe_jax", "snntorch") for n in ("fc_small", "vgg_large")}
    fc, vgg = runs["spikepipe_jax", "fc_small"], runs["spikepipe_jax", "vgg_large"]
    assert fc["steps"] == 48 // 8 and not fc["synthetic_data"] and fc["dataset"] == "fashion_mnist"
    assert vgg["steps"] == 2 and vgg["synthetic_data"] and vgg["num_steps"] == 2
    for r in (fc, vgg):
        assert r["rc"] == 0 and r["wall_s"] > r["train_eval_s"] > 0 and r["peak_rss_mb"] > 50
        assert 0.0 <= r["test_accuracy"] <= 1.0 and "--config.train.batch_size=8" in r["command"]
    for net in ("fc_small", "vgg_large"):
        peer = runs["snntorch", net]
        assert "skipped" in peer or (peer["steps"] == runs["spikepipe_jax", net]["steps"] and peer["wall_s"] > 0)
    # the training command ran with every hyper-parameter the peer uses, explicitly
    config = json.loads((tmp_path / "runs" / "spikepipe_jax_fc_small" / "config.json").read_text())
    # (--setup=config: fc_small's own readout, loss and schedule)
    assert config["train"]["loss"] == "ce_mem" and config["model"]["readout"] == "membrane"
    assert config["train"]["lr_schedule"] == "cosine" and config["train"]["warmup_steps"] == 100
    assert config["data"]["encoding"] == "rate" and fc["setup"] == "config" and fc["loss"] == "ce_mem"
    assert config["train"]["batch_size"] == 8 and config["model"]["num_steps"] == 2


def test_end_to_end_rejects_a_bad_framework(repo_root):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.end_to_end", "--frameworks=jaxsnn"], cwd=repo_root,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and "'jaxsnn'" in proc.stderr


@pytest.mark.parametrize("schedule,warmup", [("cosine", 100), ("cosine", 0), ("constant", 10), ("constant", 0),
                                             ("cosine", 1)])
def test_peer_learning_rate_schedule_is_the_training_one(schedule, warmup):
    """The snnTorch peer's LambdaLR factor equals optax's schedule of train/optimizer.py at every step."""
    import ml_collections
    import numpy as np
    import optax
    from benchmarks import common
    from spikepipe_jax.train import optimizer

    total, peak = 468, 5e-4
    cfg = ml_collections.ConfigDict(dict(learning_rate=peak, lr_schedule=schedule, warmup_steps=warmup,
                                         optimizer="sgd", weight_decay=0.0))
    tx = optimizer.make_base_optimizer(cfg, total_steps=total)
    state = tx.init({"w": np.zeros(())})
    for k in range(total + 3):
        # plain SGD: update = -lr(k) * g, so g = -1 reads the rate of step k
        upd, state = tx.update({"w": np.array(-1.0, np.float32)}, state)
        want = common.lr_factor(k, schedule=schedule, warmup_steps=warmup, total_steps=total)
        assert float(upd["w"]) == pytest.approx(peak * want, rel=1e-5), k  # optax computes in float32


def test_peer_spec_follows_the_config_or_the_pinned_setup():
    from benchmarks import common

    cfg = common.net_spec("fc_small", 128, setup="config")
    assert (cfg["readout"], cfg["loss"], cfg["lr_schedule"], cfg["warmup_steps"]) == (
        "membrane", "ce_mem", "cosine", 100)
    pinned = common.net_spec("fc_small", 128)
    assert (pinned["readout"], pinned["loss"], pinned["lr_schedule"], pinned["warmup_steps"]) == (
        "count", "ce_count", "constant", 0)
    with pytest.raises(ValueError, match="readout"):
        common.net_spec("fc_small", 128, overrides={"train.loss": "ce_count"}, setup="config")


def test_parity_without_the_peer_reports_it_skipped(repo_root, tmp_path):
    """benchmarks/parity.py runs our side; without torch the peer's record says skipped."""
    import numpy as np
    data = tmp_path / "fmnist"
    data.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("t10k", 4)):
        _write_idx(data / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(data / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.parity", "--nets=fc_small", "--batch=8",
                           f"--data_dir={data}", f"--peer_python={sys.executable}"], cwd=repo_root,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = [json.loads(l) for l in proc.stdout.splitlines()]
    assert rec["net"] == "fc_small" and rec["setup"] == "config"
    assert "skipped" in rec or (abs(rec["loss_snntorch"] - rec["loss_spikepipe_jax"]) < 1e-4
                                and all(l["w_cos"] > 0.999 for l in rec["layers"]))


def test_checkpoint_benchmark_compares_both_formats(repo_root, tmp_path):
    out = tmp_path / "ck.jsonl"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.checkpoint", "--nets=fc_digits", "--repeats=1",
                           f"--out={out}"], cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert rows[0]["import_orbax_s"] > 0
    got = {(r["case"], r["format"]): r for r in rows[1:]}
    assert set(got) == {(c, f) for c in ("train", "1f1b", "1f1b_async") for f in ("msgpack", "orbax")}
    assert all(r["exact"] and r["save_s"] > 0 and r["disk_bytes"] > 0 for r in got.values())
    assert got[("1f1b", "orbax")]["devices"] == 2 and got[("train", "msgpack")]["devices"] == 1
    assert got[("1f1b_async", "msgpack")]["devices"] == 2  # both stages' devices of the one process


def test_pipeline_benchmark_spikepipe_1f1b_and_gpipe_records(repo_root, tmp_path):
    """benchmarks.pipeline at tiny sizes, one process per processor: one record per mode with a
    measured and a predicted speed-up; the SpikePipe schedule (from task times measured on one
    device) stays within 1F1B's bytes (--comm_budget=1), and the bytes the task executor moves
    per iteration are reported next to the cost model's for the same placement."""
    out = tmp_path / "pipe.jsonl"
    cmd = [sys.executable, "-m", "benchmarks.pipeline", "--batch=16", "--num_steps=3", "--steps=2",
           "--modes=spikepipe,1f1b,gpipe", "--microbatches=2", "--repeats=2", f"--out={out}"]
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = {r["mode"]: r for r in (json.loads(line) for line in out.read_text().splitlines())}
    assert set(recs) == {"spikepipe", "1f1b", "gpipe"}
    assert recs["gpipe"]["microbatches"] == 2 and recs["1f1b"]["microbatches"] == 1
    for r in recs.values():
        assert r["measured_speedup"] > 0 and r["predicted_speedup"] > 0 and r["stages"] == 2
        assert r["processes"] == 2 and r["bytes_per_iteration"] > 0
        # two repeats, each against its own baseline run; the record holds their medians
        assert len(r["repeats"]) == 2
        assert r["measured_speedup"] == pytest.approx(
            sum(x["measured_speedup"] for x in r["repeats"]) / 2, abs=1e-3)
        assert r["baseline_step_s"] == pytest.approx(sum(x["baseline_step_s"] for x in r["repeats"]) / 2, abs=1e-5)
    sp = recs["spikepipe"]
    assert 0 < sp["useful_bytes"] <= recs["1f1b"]["useful_bytes"]
    assert {p for _, p in sp["stage_split"]} == {0, 1} and len(sp["delays"]) == 5
    assert sp["tasks_one_device_s"] == pytest.approx(sum(sp["task_s"].values()), rel=1e-3)

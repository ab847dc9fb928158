"""Training loop: learning, metrics files, resume after kill -9, data parallel, bad input."""
import importlib
import json
import os
import signal
import subprocess
import sys
import time

import flax.serialization
import jax
import numpy as np
import pytest

from spikepipe_jax import snn, train
from spikepipe_jax.train import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(name, arg="smoke"):
    return importlib.import_module(f"configs.{name}").get_config(arg)


def _params(workdir):
    with open(os.path.join(workdir, "params.msgpack"), "rb") as f:
        return flax.serialization.msgpack_restore(f.read())


def _run_script(args, env_extra=None, **kw):
    env = dict(os.environ, JAX_PLATFORMS="cpu", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "scripts.train", *args], cwd=REPO, env=env,
                           capture_output=True, text=True, **kw)


def test_fc_digits_learns_and_writes_metrics(tmp_path):
    c = _cfg("fc_digits", "")
    c.train.epochs = 3
    summary = train.train_and_evaluate(c, str(tmp_path), log=lambda s: None)
    assert summary["test_accuracy"] > 0.85, summary
    lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert lines[-1]["final"] and lines[-1]["test_accuracy"] == summary["test_accuracy"]
    evals = [l for l in lines if "test_accuracy" in l and not l.get("final")]
    assert len(evals) == 3
    assert json.load(open(tmp_path / "config.json"))["model"]["num_steps"] == c.model.num_steps
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


@pytest.mark.parametrize("name", ["conv_digits", "deep_digits"])
def test_other_digit_networks_train_one_smoke_epoch(tmp_path, name):
    summary = train.train_and_evaluate(_cfg(name), str(tmp_path), log=lambda s: None)
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and np.isfinite(summary["test_loss"])


def test_loss_decreases_with_membrane_readout_and_learnable_beta(tmp_path):
    c = _cfg("fc_digits")
    c.model.readout, c.train.loss, c.model.learn_beta = "membrane", "ce_mem", True
    c.data.max_train, c.train.epochs = 256, 4
    train.train_and_evaluate(c, str(tmp_path), log=lambda s: None)
    losses = [l["train_loss"] for l in map(json.loads, open(tmp_path / "metrics.jsonl")) if "train_loss" in l]
    assert losses[-1] < losses[0]
    p = _params(str(tmp_path))
    assert "beta" in p["layer_0"] and not np.allclose(p["layer_0"]["beta"], c.model.beta)


def test_resume_after_kill9_equals_uninterrupted(tmp_path):
    args = ["--config=configs/conv_digits.py", "--config.model.num_steps=8", "--config.train.batch_size=16",
            "--config.data.max_train=512", "--config.data.max_test=64", "--config.train.epochs=8",
            "--config.train.checkpoint_every_steps=4", "--config.train.log_every_steps=4"]
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    r = _run_script(args + [f"--workdir={full}"], timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-m", "scripts.train", *args, f"--workdir={killed}"], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = os.path.join(killed, "checkpoint.msgpack")
    deadline = time.time() + 240
    while not os.path.exists(ckpt) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # right after the first checkpoint: 250 of 256 steps still to go
    proc.wait()
    recs = [json.loads(l) for l in open(os.path.join(killed, "metrics.jsonl")) if l.strip().startswith("{")]
    assert not any(r.get("final") for r in recs), "the run finished before it was killed"
    assert not os.path.exists(os.path.join(killed, "params.msgpack"))
    r = _run_script(args + [f"--workdir={killed}"], timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from" in r.stderr
    a, b = _params(full), _params(killed)
    for la, lb in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(la, lb)
    final = [json.loads(l) for l in open(os.path.join(killed, "metrics.jsonl"))][-1]
    assert final["final"] and final["resumed_from"] > 0


def test_data_parallel_four_devices_matches_one(tmp_path):
    code = ("import sys, importlib; from spikepipe_jax import train; import jax;"
            "c = importlib.import_module('configs.fc_digits').get_config('smoke');"
            "c.train.batch_size = 16; c.data.max_train = 128; c.train.epochs = 2;"
            "s = train.train_and_evaluate(c, sys.argv[1], log=lambda m: None);"
            "print('devices', jax.local_device_count())")
    outs = {}
    for n in (1, 4):
        env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
        wd = str(tmp_path / f"d{n}")
        r = subprocess.run([sys.executable, "-c", code, wd], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert f"devices {n}" in r.stdout
        outs[n] = _params(wd)
    for la, lb in zip(jax.tree.leaves(outs[1]), jax.tree.leaves(outs[4])):
        np.testing.assert_allclose(la, lb, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("override,message", [
    ("--config.model.num_steps=0", "num_steps"),
    ("--config.train.batch_size=0", "batch_size"),
    ("--config.model.input_shape=(10,10,1)", "does not fit"),
    ("--config.data.name=mnist", "data directory"),
    ("--config.bogus_key=3", "unknown config key"),
    ("--config.model.readout=membrane", "needs model.readout='count'"),
    ("--config.model.native=maybe", "unknown model.native 'maybe'"),
    ("--config.model.native=on", "disabled by SPIKEPIPE_NATIVE=0"),  # run with native kernels disabled
])
def test_bad_input_one_line_error_and_no_workdir(tmp_path, override, message):
    wd = tmp_path / "wd"
    r = _run_script(["--config=configs/fc_digits.py:smoke", override, f"--workdir={wd}"],
                    env_extra={"SPIKEPIPE_NATIVE": "0"}, timeout=120)
    assert r.returncode == 1
    err_lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(err_lines) == 1 and message in err_lines[0], r.stderr[-1500:]
    assert "Traceback" not in r.stderr
    assert not wd.exists()


def test_nan_loss_stops_with_clear_error(tmp_path):
    c = _cfg("fc_digits")
    c.model.readout, c.train.loss, c.train.learning_rate = "membrane", "ce_mem", 1e38
    with pytest.raises(FloatingPointError, match="non-finite"):
        train.train_and_evaluate(c, str(tmp_path), log=lambda s: None)
    assert not os.path.exists(tmp_path / "params.msgpack")


def test_model_apply_shapes_and_readouts(key):
    c = _cfg("conv_digits")
    m = snn.model_from_config(c.model)
    p = snn.init_params(key, m)
    assert sorted(p) == ["layer_0", "layer_1", "layer_2"]
    assert p["layer_0"]["w"].shape == (3, 3, 1, 16) and p["layer_2"]["w"].shape == (128, 10)
    x = snn.encode("rate", jax.random.uniform(key, (5, 8, 8, 1)), 4, key)
    assert x.shape == (4, 5, 8, 8, 1) and set(np.unique(np.asarray(x))) <= {0.0, 1.0}
    out = snn.apply(p, m, x)
    assert out.logits.shape == (5, 10) and out.out_spikes.shape == (4, 5, 10)
    np.testing.assert_array_equal(np.asarray(out.logits), np.asarray(out.out_spikes.sum(0)))


def test_resume_refuses_a_workdir_of_another_config(tmp_path):
    c = _cfg("fc_digits")
    train.train_and_evaluate(c, str(tmp_path), log=lambda s: None)
    c.train.learning_rate = 0.5
    with pytest.raises(ValueError, match="another config.*train.learning_rate"):
        train.train_and_evaluate(c, str(tmp_path), log=lambda s: None)


def test_a_config_saved_before_a_field_was_added_still_matches():
    from spikepipe_jax.train import loop
    current = loop.config_json(_cfg("fc_digits"))
    old = json.loads(json.dumps(current))
    del old["pipeline"]["execute"], old["pipeline"]["stages"]  # written before these fields existed
    assert loop.config_differences(old, current) == []
    current["pipeline"]["execute"] = "gpipe"  # a new field away from its neutral value is a change
    assert loop.config_differences(old, current) == ["pipeline.execute"]
    old["train"].pop("epochs")  # a missing field that is not a known addition is a change
    assert "train.epochs" in loop.config_differences(old, current)


def test_output_layer_must_match_the_number_of_classes(tmp_path):
    c = _cfg("fc_digits")
    layers = [dict(l) for l in c.model.layers]
    layers[-1]["features"] = 7
    c.model.layers = layers
    wd = tmp_path / "wd"
    with pytest.raises(ValueError, match="7 units but dataset 'digits' has 10 classes"):
        train.train_and_evaluate(c, str(wd), log=lambda s: None)
    assert not wd.exists()


def test_step_metrics_finite_flag():
    """``finite`` is False for a single NaN or +-inf anywhere in the gradients, True for huge but
    finite ones (whose plain sum would overflow)."""
    import jax.numpy as jnp
    from spikepipe_jax.train import loop
    out = snn.models.Output(jnp.zeros((2, 3)), None, None)
    base = {"a": jnp.full((4, 5), 3e38, jnp.float32), "b": {"c": -jnp.full((7,), 3e38, jnp.float32)}}
    check = jax.jit(lambda g: loop.step_metrics(0.0, out, np.zeros(2, np.int32), g)["finite"])
    assert bool(check(base))
    for bad in (jnp.nan, jnp.inf, -jnp.inf):
        assert not bool(check({**base, "a": base["a"].at[2, 3].set(bad)}))
        assert not bool(check({**base, "b": {"c": base["b"]["c"].at[6].set(bad)}}))


def test_cpu_gemm_compiler_option():
    from spikepipe_jax.train import loop
    assert loop.compiler_options("xla_default") == {}
    opts = loop.compiler_options("eigen")
    assert opts == {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}  # tests run on CPU
    with pytest.raises(ValueError, match="train.cpu_gemm 'mkl'"):
        loop.compiler_options("mkl")
    c = _cfg("fc_digits")
    c.train.cpu_gemm = "mkl"
    with pytest.raises(ValueError, match="train.cpu_gemm 'mkl'"):
        loop.validate_config(c)
    # the option reaches XLA: with it, no dot is compiled into a YNNPACK fusion
    x = jax.numpy.ones((64, 64))
    hlo = jax.jit(lambda a, b: a @ b, compiler_options=opts).lower(x, x).compile().as_text()
    assert "ynn_fusion" not in hlo


# ----------------------------------------------------------------------------- bad config files
@pytest.mark.parametrize("body,message", [
    (None, "cannot load config file '{path}': no such file"),
    ("x = 1 / 0\n", "config file '{path}' failed to load: ZeroDivisionError"),
    ("def get_config(arg=''):\n    raise ValueError('no such network')\n",
     "config file '{path}' failed to load: ValueError: no such network"),
    ("def get_config(arg=''):\n    return {}.missing\n",  # not to be taken for an unknown config key
     "config file '{path}' failed to load: AttributeError: 'dict' object has no attribute 'missing'"),
])
def test_bad_config_file_one_line_error_naming_it(tmp_path, body, message):
    path = str(tmp_path / "nope.py")
    if body is not None:
        with open(path, "w") as f:
            f.write(body)
    wd = tmp_path / "wd"
    for extra in ([], ["--config.seed=3"]):  # an override makes config_flags fail at parse time
        r = _run_script([f"--config={path}", *extra, f"--workdir={wd}"], timeout=120)
        assert r.returncode == 1
        err_lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
        assert len(err_lines) == 1 and message.format(path=path) in err_lines[0], r.stderr[-1500:]
        assert "Traceback" not in r.stderr
        assert not wd.exists()


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_rotation_and_fallback_units(tmp_path):
    path = str(tmp_path / "checkpoint.msgpack")
    prev = str(tmp_path / "checkpoint.prev.msgpack")
    template = {"w": np.zeros(3, np.float32), "step": np.int32(0)}
    assert checkpoint.restore_latest(path, template, warn=print) is None and not checkpoint.exists(path)
    for k in range(1, 4):
        checkpoint.save_rotating(path, {"w": np.full(3, k, np.float32), "step": np.int32(k)})
    assert checkpoint.prev_path(path) == prev
    warnings = []
    state, used = checkpoint.restore_latest(path, template, warn=warnings.append)
    assert used == path and int(state["step"]) == 3 and not warnings
    assert int(checkpoint.restore(prev, template)["step"]) == 2  # only the newest two are kept
    with open(path, "r+b") as f:  # damage the newest
        f.truncate(10)
    state, used = checkpoint.restore_latest(path, template, warn=warnings.append)
    assert used == prev and int(state["step"]) == 2
    np.testing.assert_array_equal(state["w"], np.full(3, 2, np.float32))
    assert len(warnings) == 1 and path in warnings[0] and "previous checkpoint" in warnings[0]
    assert os.path.exists(path + ".corrupt") and not os.path.exists(path)
    state, used = checkpoint.restore_latest(path, template, warn=warnings.append)  # e.g. killed after rotating
    assert used == prev and int(state["step"]) == 2 and len(warnings) == 1
    checkpoint.save_rotating(path, {"w": np.full(3, 4, np.float32), "step": np.int32(4)})
    assert int(checkpoint.restore(prev, template)["step"]) == 2  # the good one was kept
    for p in (path, prev):
        with open(p, "wb") as f:
            f.write(b"\x00garbage")
    with pytest.raises(ValueError, match=r"corrupt.*previous checkpoint .*prev.msgpack cannot be read either"):
        checkpoint.restore_latest(path, template, warn=warnings.append)


def test_damaged_newest_checkpoint_resumes_from_the_previous_one(tmp_path, caplog):
    """A finished run's newest checkpoint is damaged: a re-run resumes from the previous one (with
    a warning), replays the last steps and ends with the same parameters, bit for bit."""
    c = _cfg("fc_digits")
    c.train.epochs, c.train.checkpoint_every_steps = 2, 3  # 4 steps per epoch: saves at 3, 4, 6, 8
    wd = str(tmp_path)
    first = train.train_and_evaluate(c, wd, log=lambda s: None)
    assert first["step"] == 8
    params_first = _params(wd)
    ckpt = os.path.join(wd, "checkpoint.msgpack")
    with open(ckpt, "r+b") as f:  # cut in half, as a partial write by a failing disk would leave it
        f.truncate(os.path.getsize(ckpt) // 2)
    with caplog.at_level("WARNING"):
        again = train.train_and_evaluate(c, wd, log=lambda s: None)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("checkpoint.msgpack" in w and "previous checkpoint" in w for w in warned), warned
    assert again["resumed_from"] == 6 and again["step"] == 8
    assert os.path.exists(ckpt + ".corrupt")
    for la, lb in zip(jax.tree.leaves(params_first), jax.tree.leaves(_params(wd))):
        np.testing.assert_array_equal(la, lb)
    recs = train.read_metrics(wd)
    assert sum(1 for r in recs if r.get("final")) == 1


# ----------------------------------------------------------------------------- one run per workdir
_HOLD_LOCK = ("import sys; from spikepipe_jax.train import workdir_lock\n"
              "with workdir_lock(sys.argv[1]):\n"
              "    print('locked', flush=True); sys.stdin.read()\n")


def test_second_run_on_a_workdir_refuses_naming_the_holder(tmp_path):
    wd = tmp_path / "wd"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(wd)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = _run_script(["--config=configs/fc_digits.py:smoke", f"--workdir={wd}"], timeout=120)
        assert r.returncode == 1
        err_lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
        assert len(err_lines) == 1, r.stderr[-1500:]
        assert f"workdir {wd} is in use" in err_lines[0] and f"process {holder.pid} " in err_lines[0]
        assert "Traceback" not in r.stderr
        assert sorted(os.listdir(wd)) == ["run.lock"]  # the refused run wrote nothing
        with pytest.raises(train.WorkdirBusyError, match=f"process {holder.pid} "):
            train.train_and_evaluate(_cfg("fc_digits"), str(wd), log=lambda s: None)
    finally:
        holder.kill()  # SIGKILL: the OS drops the lock with the process
        holder.wait()
    summary = train.train_and_evaluate(_cfg("fc_digits"), str(wd), log=lambda s: None)
    assert summary["final"] and summary["resumed_from"] == 0
    with open(wd / "run.lock") as f:
        assert f.read().strip() == str(os.getpid())  # the last holder's PID stays; the lock does not

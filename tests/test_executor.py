"""Pipeline executor (train/executor.py): stages on fake CPU devices, GPipe and 1F1B semantics.

Multi-device cases run in subprocesses with ``--xla_force_host_platform_device_count=N``
(``tests/executor_cases.py``); the rest runs on this process's one device.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spikepipe_jax import experiments, snn
from spikepipe_jax.train import checkpoint, executor, pipeline, stages as stages_lib
from tests import executor_cases

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(n: int) -> dict:
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")


# ----- stages in the model ---------------------------------------------------------------------

@pytest.mark.parametrize("net,stages", [("fc_digits", [(0, 1), (1, 2)]), ("conv_digits", [(0, 2), (2, 3)]),
                                        ("conv_digits", [(0, 1), (1, 2), (2, 3)])])
def test_apply_is_a_fold_over_stages(net, stages, key):
    """Running the stages one after the other, spikes crossing in uint8, gives the whole network's output."""
    cfg = experiments.load_config(net, "smoke")
    model = snn.model_from_config(cfg.model)._replace(native="off")
    params = snn.init_params(key, model)
    x = snn.encode("rate", jax.random.uniform(jax.random.key(3), (6,) + tuple(cfg.model.input_shape)),
                   cfg.model.num_steps, jax.random.key(4))
    whole = snn.apply(params, model, x)
    h = x
    for st in stages[:-1]:
        h = snn.apply_stage(params, model, h, st)
        assert h.shape[2:] == snn.stage_out_shape(model, st)
        assert set(np.unique(np.asarray(h))) <= {0.0, 1.0}
        h = h.astype(jnp.uint8)
    out = snn.apply_stage(params, model, h, stages[-1])
    np.testing.assert_allclose(out.logits, whole.logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(snn.apply(params, model, x, stages=stages).logits, whole.logits, rtol=1e-5, atol=1e-5)


def test_check_stages_rejects_bad_partitions():
    model = snn.model_from_config(experiments.load_config("conv_digits", "smoke").model)
    assert snn.check_stages(model, [(0, 1), (1, 3)]) == ((0, 1), (1, 3))
    for bad in ([(0, 1), (2, 3)], [(0, 2)], [(0, 0), (0, 3)], [(1, 3)], []):
        with pytest.raises(ValueError, match="not a partition"):
            snn.check_stages(model, bad)


def test_config_stages_and_their_delays():
    cfg = experiments.load_config("deep_digits", "smoke")  # 8 dense layers, the first one cheaper
    cfg.pipeline.stages = 0
    assert stages_lib.config_stages(cfg) == tuple((l, l + 1) for l in range(8))
    cfg.pipeline.stages = 1
    assert stages_lib.config_stages(cfg) == ((0, 8),)
    cfg.pipeline.stages = 3
    st = stages_lib.config_stages(cfg)
    costs = stages_lib.layer_costs(cfg)
    assert len(st) == 3 and st == tuple(stages_lib.partition_layers(costs, 3))
    assert max(stages_lib.stage_costs(costs, st)) <= max(stages_lib.stage_costs(costs, [(0, 3), (3, 6), (6, 8)]))
    cfg.pipeline.delays = "1f1b"
    smap = stages_lib.stage_map(st)
    assert pipeline.config_delays(cfg, 8) == [2 - s for s in smap]
    cfg.pipeline.delays = "fully_pipelined"
    assert pipeline.config_delays(cfg, 8) == [2 * (2 - s) for s in smap]
    cfg.pipeline.stages = 0  # one stage per layer: the delays of earlier versions
    cfg.pipeline.delays = "1f1b"
    assert pipeline.config_delays(cfg, 8) == [7 - l for l in range(8)]


@pytest.mark.parametrize("field,value,message", [
    ("execute", "pipedream", "unknown pipeline.execute"),
    ("stages", 9, "exceeds the network's 8 weight layers"),
    ("stages", -1, "pipeline.stages must be an integer >= 0"),
    ("microbatches", 0, "pipeline.microbatches must be a positive integer"),
])
def test_make_plan_errors_name_the_value(field, value, message):
    cfg = experiments.load_config("deep_digits", "smoke")
    cfg.pipeline.execute = "gpipe"
    cfg.pipeline[field] = value
    with pytest.raises(ValueError, match=message):
        executor.make_plan(cfg, 8)


def test_make_plan_checks_the_comm_budget():
    cfg = experiments.load_config("deep_digits", "smoke")
    cfg.pipeline.execute, cfg.pipeline.comm_budget = "spikepipe", -0.5
    with pytest.raises(ValueError, match=r"pipeline.comm_budget must be a number >= 0 .* got -0.5"):
        executor.make_plan(cfg, 2)
    cfg.pipeline.comm_budget = 1.0
    assert executor.make_plan(cfg, 2).processors == 2


def test_make_plan_checks_devices_batch_and_mode():
    cfg = experiments.load_config("deep_digits", "smoke")  # batch 16
    cfg.pipeline.execute, cfg.pipeline.stages = "gpipe", 3
    with pytest.raises(ValueError, match="pipeline.stages=3 does not divide the 4 devices"):
        executor.make_plan(cfg, 4)
    cfg.pipeline.stages, cfg.pipeline.microbatches = 2, 3
    with pytest.raises(ValueError, match="train.batch_size=16 must be divisible by 2 data-parallel"):
        executor.make_plan(cfg, 4)
    cfg.pipeline.execute = "1f1b"
    with pytest.raises(ValueError, match="microbatches=3: 1f1b"):
        executor.make_plan(cfg, 4)
    cfg.pipeline.microbatches, cfg.pipeline.delays = 1, "1f1b"
    with pytest.raises(ValueError, match="set pipeline.delays='none'"):
        executor.make_plan(cfg, 4)
    cfg.pipeline.delays = "none"
    plan = executor.make_plan(cfg, 4)
    assert (plan.mode, plan.data, plan.num_stages, plan.microbatches) == ("1f1b", 2, 2, 1)
    cfg.pipeline.execute, cfg.pipeline.stages = "spikepipe", 3  # one schedule processor per device
    with pytest.raises(ValueError, match="pipeline.stages=3 needs 3 devices, got 4"):
        executor.make_plan(cfg, 4)
    cfg.pipeline.stages, cfg.pipeline.microbatches = 0, 2
    with pytest.raises(ValueError, match="microbatches=2: spikepipe"):
        executor.make_plan(cfg, 4)
    cfg.pipeline.microbatches, cfg.pipeline.simulate = 1, "stash"
    with pytest.raises(ValueError, match="set pipeline.simulate='none'"):
        executor.make_plan(cfg, 4)
    cfg.pipeline.simulate = "none"
    assert executor.make_plan(cfg, 4).processors == 4


@pytest.mark.parametrize("net,num_stages", [("fc_small", 2), ("conv_medium", 2), ("conv_medium", 3),
                                             ("deep_digits", 3)])
def test_boundary_bytes_equal_the_cost_models_communication(net, num_stages):
    """The bytes a pipelined batch has to move between stages are the ones ``schedule.comm``
    counts for the same placement (every task of a layer on its stage's processor)."""
    from spikepipe_jax import snn
    from spikepipe_jax.hardware import mapping
    from spikepipe_jax.schedule import comm, training_graph
    from spikepipe_jax.train import stages as stages_lib

    cfg = experiments.load_config(net)
    cfg.pipeline.execute, cfg.pipeline.stages = "1f1b", num_stages
    plan = executor.make_plan(cfg, num_stages)
    model = snn.model_from_config(cfg.model)
    g = training_graph.graph_from_tasks(mapping.training_tasks_from_config(cfg))
    stage_of = stages_lib.stage_map(plan.stages)
    processor_of = {t.name: stage_of[t.layer] for t in g.tasks}
    got = executor.boundary_bytes(model, plan.stages, cfg.train.batch_size, cfg.model.num_steps)
    by_tensor = comm.bytes_by_tensor(g, processor_of)
    assert set(by_tensor) == {"spikes", "grad"}  # only boundary tensors cross: no split layer
    assert got == comm.bytes_communicated(g, processor_of) > 0


def test_one_device_gpipe_equals_unpipelined(key):
    """S = 1, M = 2 on this process's device: the executor's machinery with no exchange."""
    out = executor_cases.run_case("dense_s1_d2_gpipe") if jax.device_count() >= 2 else None
    if out is not None:
        assert out["err"] < 1e-6
    cfg = experiments.load_config("fc_digits", "smoke")
    cfg.pipeline.execute, cfg.pipeline.stages, cfg.pipeline.microbatches = "gpipe", 1, 2
    plan = executor.make_plan(cfg, 1)
    assert plan.stages == ((0, 2),) and plan.data == 1


# ----- multi-device equalities (subprocesses) ------------------------------------------------

@pytest.fixture(scope="module")
def cases():
    """Runs every case of tests/executor_cases.py on its device count (one subprocess each)."""
    out = {}
    for n in sorted({v[2] * v[3] for v in executor_cases.CASES.values()} - {1}):
        r = subprocess.run([sys.executable, "-m", "tests.executor_cases", str(n)], cwd=REPO, env=_env(n),
                           capture_output=True, text=True, timeout=2400)
        assert r.returncode == 0, r.stderr[-3000:]
        out.update(json.loads(r.stdout.strip().splitlines()[-1]))
    return out


@pytest.mark.parametrize("name", sorted(executor_cases.CASES))
def test_executor_equals_its_reference(cases, name):
    """gpipe == unpipelined step; 1f1b == the stash simulator at delays_for('1f1b', stage map);
    spikepipe == the stash simulator at delays_for(its schedule)."""
    res = cases[name]
    net, mode, num_stages, data, micro, steps = executor_cases.CASES[name]
    assert res["moved"] > 1e-3  # training moved the weights: the comparison is not trivial
    assert res["err"] < 2e-5 * max(1.0, res["moved"] / 1e-2), res
    if mode == "spikepipe":  # == the stash simulator at the delays its schedule implies, on P devices
        assert res["delays"] == res["schedule_delays"] and res["processors"] == num_stages
        assert 1 < len(res["devices"]) <= num_stages  # its tasks ran on several of the P devices
        np.testing.assert_allclose(res["losses_ex"], res["losses_ref"], rtol=1e-5, atol=1e-6)
        return
    assert len(res["stages"]) == num_stages
    assert res["step"] == steps
    if mode == "1f1b":
        smap = stages_lib.stage_map([tuple(s) for s in res["stages"]])
        assert res["delays"] == [num_stages - 1 - s for s in smap]  # PipeDream: S - 1 - stage
        assert res["config_delays"] == res["delays"]  # what --config.pipeline.delays=1f1b gives the simulator
        assert res["tick"] == 2 * steps + 2 * num_stages - 2  # drained: every batch finished
        done = [c for c, _ in res["losses_ex"]]
        assert sum(done) == steps - (num_stages - 1) // 2  # the rest reach the last stage in the drain
        # the loss of batch k is reported when the last stage's forward has computed it
        ex_losses = [l for c, l in res["losses_ex"] if c]
        np.testing.assert_allclose(ex_losses, res["losses_ref"][:len(ex_losses)], rtol=1e-5, atol=1e-6)
        # the asynchronous executor: the same parameters; every batch's loss reported once, when
        # its backward has reached the first stage (the drain reports the last S - 1)
        assert res["err_async"] < 2e-5 * max(1.0, res["moved"] / 1e-2), res
        counts = [c for c, _ in res["losses_async"]]
        assert counts[:num_stages - 1] == [0] * (num_stages - 1) and sum(counts) == steps
        async_losses = [l for c, l in res["losses_async"][:-1] if c] if num_stages > 1 else \
            [l for _, l in res["losses_async"]]
        np.testing.assert_allclose(async_losses, res["losses_ref"][:len(async_losses)], rtol=1e-5, atol=1e-6)
    else:  # GPipe, both executors: one mini-batch finished per step, its loss that of the unpipelined step
        np.testing.assert_allclose([l for _, l in res["losses_ex"]], res["losses_ref"], rtol=1e-5, atol=1e-6)
        assert res["err_async"] < 2e-5 * max(1.0, res["moved"] / 1e-2), res
        assert [c for c, _ in res["losses_async"]] == [1] * steps
        np.testing.assert_allclose([l for _, l in res["losses_async"]], res["losses_ref"], rtol=1e-5, atol=1e-6)


# ----- the user's command --------------------------------------------------------------------

def _train(args, workdir, n, timeout=600):
    return subprocess.run([sys.executable, "-m", "scripts.train", *args, f"--workdir={workdir}"], cwd=REPO,
                          env=_env(n), capture_output=True, text=True, timeout=timeout)


def _params(workdir):
    import flax.serialization
    with open(os.path.join(workdir, "params.msgpack"), "rb") as f:
        return flax.serialization.msgpack_restore(f.read())


def _max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_command_line_gpipe_equals_none_and_1f1b_equals_simulator(tmp_path):
    base = ["--config=configs/conv_digits.py:smoke", "--config.train.epochs=2"]
    runs = {
        "none": [],
        "gpipe": ["--config.pipeline.execute=gpipe", "--config.pipeline.stages=2", "--config.pipeline.microbatches=2"],
        "1f1b": ["--config.pipeline.execute=1f1b", "--config.pipeline.stages=2"],
        "sim": ["--config.pipeline.simulate=stash", "--config.pipeline.delays=1f1b", "--config.pipeline.stages=2"],
    }
    params = {}
    for name, extra in runs.items():
        r = _train(base + extra, tmp_path / name, 2)
        assert r.returncode == 0, r.stderr[-3000:]
        if name == "gpipe":
            assert "pipeline gpipe (asynchronous): stages [(0, 1), (1, 3)]" in r.stderr
        if name == "1f1b":
            assert "pipeline 1f1b (asynchronous): stages [(0, 1), (1, 3)]" in r.stderr
        params[name] = _params(tmp_path / name)
    moved = _max_diff(params["none"], params["sim"])
    assert moved > 1e-3  # the delays changed the result: 1f1b is not trivially none
    assert _max_diff(params["gpipe"], params["none"]) < 1e-5
    assert _max_diff(params["1f1b"], params["sim"]) < 1e-5


def test_command_line_spikepipe_equals_simulator_at_its_schedules_delays(tmp_path):
    """execute=spikepipe runs the SpikePipe schedule of the config's network on the devices and
    logs its delays; the stash simulator at those delays ends with the same parameters."""
    base = ["--config=configs/conv_digits.py:smoke", "--config.train.epochs=2"]
    r = _train(base + ["--config.pipeline.execute=spikepipe"], tmp_path / "sp", 2)
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(l for l in r.stderr.splitlines() if "pipeline spikepipe: 2 processor(s)" in l)
    delays = line.split("delays [")[1].split("]")[0].replace(" ", "")
    placed = line.split("; ")[-1]
    assert "@0" in placed and "@1" in placed and placed.count("@") == 11  # F, BL, W x 3 + BG x 2
    r = _train(base + ["--config.pipeline.simulate=stash", f"--config.pipeline.delays={delays}"], tmp_path / "sim", 2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _max_diff(_params(tmp_path / "sp"), _params(tmp_path / "sim")) < 1e-5


@pytest.mark.parametrize("extra,message", [
    (["--config.pipeline.execute=gpipe", "--config.pipeline.stages=3"], "pipeline.stages=3 exceeds the network's 2"),
    (["--config.pipeline.execute=1f1b", "--config.pipeline.stages=2", "--config.pipeline.microbatches=2"],
     "microbatches=2: 1f1b"),
    (["--config.pipeline.execute=gpipe", "--config.pipeline.stages=2", "--config.pipeline.microbatches=0"],
     "pipeline.microbatches must be a positive integer"),
])
def test_command_line_bad_pipeline_is_one_error_line(tmp_path, extra, message):
    r = _train(["--config=configs/fc_digits.py:smoke"] + extra, tmp_path / "w", 2, timeout=300)
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert lines[-1].startswith("error:") and message in lines[-1], r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "w" / "metrics.jsonl").exists()


def test_command_line_pipelined_batch_need_not_divide_the_devices(tmp_path):
    """Data parallelism over all devices needs the batch to divide among them; a pipelined run
    only among its data replicas x micro-batches (SpikePipe: each task takes the whole batch)."""
    base = ["--config=configs/fc_digits.py:smoke", "--config.train.batch_size=31"]
    r = _train(base, tmp_path / "none", 2, timeout=300)
    assert r.returncode != 0 and "error: train.batch_size=31 must be divisible by the 2 devices" in r.stderr
    r = _train(base + ["--config.pipeline.execute=spikepipe"], tmp_path / "sp", 2)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "final test accuracy" in r.stdout


def test_command_line_gpipe_refuses_a_tick_synchronous_checkpoint(tmp_path):
    """A workdir with the tick-synchronous executor's orbax checkpoint (GPipe before it ran
    asynchronously) is not silently restarted from step 0: one error line."""
    (tmp_path / "w" / "checkpoint_orbax" / "5").mkdir(parents=True)
    r = _train(["--config=configs/fc_digits.py:smoke", "--config.pipeline.execute=gpipe"], tmp_path / "w", 2,
               timeout=300)
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert lines[-1].startswith("error:") and "checkpoint_orbax/" in lines[-1] and "new --workdir" in lines[-1]
    assert not (tmp_path / "w" / "metrics.jsonl").exists()


def test_command_line_stages_must_divide_devices(tmp_path):
    r = _train(["--config=configs/conv_digits.py:smoke", "--config.pipeline.execute=1f1b",
                "--config.pipeline.stages=3"], tmp_path / "w", 2, timeout=300)
    assert r.returncode != 0
    assert "error: pipeline.stages=3 does not divide the 2 devices" in r.stderr


@pytest.mark.parametrize("mode", ["1f1b", "gpipe", "spikepipe"])
def test_resume_after_kill9_equals_uninterrupted(tmp_path, mode):
    """The executors' whole state is checkpointed and a second run resumes from it: 1F1B's
    (asynchronous) stashed vjps, labels and the messages in flight, one file per process;
    GPipe's tick-synchronous state with orbax-checkpoint, sharded; SpikePipe's tasks in flight
    (weight versions, kept spikes, LIF vjps, gradients) in one file."""
    args = ["--config=configs/fc_digits.py", "--config.model.num_steps=4", "--config.train.batch_size=16",
            "--config.data.max_train=512", "--config.data.max_test=64", "--config.train.epochs=4",
            "--config.train.checkpoint_every_steps=5", "--config.train.log_every_steps=4",
            f"--config.pipeline.execute={mode}", "--config.pipeline.stages=2",
            f"--config.pipeline.microbatches={2 if mode == 'gpipe' else 1}"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    r = _train(args, full, 2)
    assert r.returncode == 0, r.stderr[-2000:]
    proc = subprocess.Popen([sys.executable, "-m", "scripts.train", *args, f"--workdir={killed}"], cwd=REPO,
                            env=_env(2), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def saved():  # written atomically
        return (killed / ("checkpoint_tasks" if mode == "spikepipe" else "checkpoint_async") / "process_0.msgpack").exists()

    deadline = time.time() + 300
    while not saved() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # right after the first checkpoint (step 5 of 128, odd: mid-pipeline)
    proc.wait()
    assert not (killed / "params.msgpack").exists(), "the run finished before it was killed"
    r = _train(args, killed, 2)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from" in r.stderr
    a, b = _params(full), _params(killed)
    for la, lb in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(la, lb)


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _launch(args, workdir, num_processes: int, devices_each: int) -> list:
    """``scripts.train`` in ``num_processes`` local processes of one ``jax.distributed`` run."""
    port = _free_port()
    return [subprocess.Popen([sys.executable, "-m", "scripts.train", *args, f"--workdir={workdir}"], cwd=REPO,
                             env=dict(_env(devices_each), JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                                      JAX_NUM_PROCESSES=str(num_processes), JAX_PROCESS_ID=str(i)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(num_processes)]


def _finish(procs, timeout=900) -> list:
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:  # a process left waiting for the other (a failure) must not outlive the test
        for p in procs:
            p.kill()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return outs


@pytest.mark.parametrize("mode", ["1f1b", "gpipe", "spikepipe"])
def test_two_processes_equal_one(tmp_path, mode):
    """jax.distributed: 2 local CPU processes with one device each (one stage, or one schedule
    processor, each) end with the parameters of the single-process run on 2 devices; only process
    0 writes the workdir."""
    args = ["--config=configs/conv_digits.py:smoke", f"--config.pipeline.execute={mode}", "--config.pipeline.stages=2",
            f"--config.pipeline.microbatches={2 if mode == 'gpipe' else 1}"]
    r = _train(args, tmp_path / "one", 2)
    assert r.returncode == 0, r.stderr[-2000:]
    outs = _finish(_launch(args, tmp_path / "two", 2, 1))
    assert "final test accuracy" in outs[0][0] and "final test accuracy" not in outs[1][0]
    assert "2 device(s)" in outs[0][1] and "training" not in outs[1][1]  # process 1 logs nothing of its own
    assert _max_diff(_params(tmp_path / "one"), _params(tmp_path / "two")) < 1e-6
    finals = [json.loads(l) for l in open(tmp_path / "two" / "metrics.jsonl") if '"final"' in l]
    assert len(finals) == 1  # one writer


def test_1f1b_stage_spanning_two_processes_equals_one_process_and_resumes(tmp_path):
    """2 processes x 3 devices, 3 stages of 2 devices: stage 1 has a device in each process (its
    programs run SPMD over both, its messages go part by part, its kept vjps are saved part by
    part). It ends with the parameters of the one-process run on 6 devices (to float rounding:
    the processes' GEMMs may round differently); GPipe there with those of the unpipelined run. Killed after two checkpoints, with process 1's
    newest checkpoint then removed (as if killed between the two processes' writes), the rerun
    resumes both from the step they share and ends exactly as the uninterrupted run."""
    args = ["--config=configs/conv_digits.py", "--config.model.num_steps=4", "--config.train.batch_size=16",
            "--config.data.max_train=256", "--config.data.max_test=64", "--config.train.epochs=1",
            "--config.train.checkpoint_every_steps=5", "--config.train.log_every_steps=4",
            "--config.pipeline.execute=1f1b", "--config.pipeline.stages=3"]
    r = _train(args, tmp_path / "one", 6)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "stages [(0, 1), (1, 2), (2, 3)] x 2 data-parallel" in r.stderr
    outs = _finish(_launch(args, tmp_path / "two", 2, 3))
    assert "6 device(s)" in outs[0][1]
    assert _max_diff(_params(tmp_path / "one"), _params(tmp_path / "two")) < 1e-5
    # GPipe on the same layout (2 micro-batches): equal to the unpipelined run
    gpipe = [a for a in args if "pipeline.execute" not in a] + ["--config.pipeline.execute=gpipe",
                                                                "--config.pipeline.microbatches=2"]
    r = _train([a for a in args if "pipeline." not in a], tmp_path / "none", 2)
    assert r.returncode == 0, r.stderr[-2000:]
    outs = _finish(_launch(gpipe, tmp_path / "gpipe", 2, 3))
    assert "pipeline gpipe (asynchronous): stages [(0, 1), (1, 2), (2, 3)] x 2 data-parallel" in outs[0][1]
    assert _max_diff(_params(tmp_path / "none"), _params(tmp_path / "gpipe")) < 1e-5

    ck = tmp_path / "killed" / "checkpoint_async"
    files = [ck / f"process_{i}.msgpack" for i in (0, 1)]
    procs = _launch(args, tmp_path / "killed", 2, 3)
    deadline = time.time() + 600
    while (time.time() < deadline and all(p.poll() is None for p in procs)
           and not all(f.exists() and os.path.exists(checkpoint.prev_path(str(f))) for f in files)):
        time.sleep(0.02)
    for p in procs:  # right after both processes' second checkpoint (of three: steps 5, 10, 15)
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert not (tmp_path / "killed" / "params.msgpack").exists(), "the run finished before it was killed"
    step = lambda f: int(checkpoint.load_msgpack(str(f))["step"])
    steps = [step(f) for f in files]
    if steps[0] == steps[1]:  # as if killed between the two processes' writes: process 1 one behind
        os.replace(checkpoint.prev_path(str(files[1])), files[1])
        steps[1] = step(files[1])
    assert steps[0] != steps[1]
    outs = _finish(_launch(args, tmp_path / "killed", 2, 3))
    assert f"resuming every process from step {min(steps)}" in outs[0][1] + outs[1][1]
    assert f"at step {min(steps)}" in outs[0][1]  # "resumed from ... at step"
    for a, b in zip(jax.tree.leaves(_params(tmp_path / "two")), jax.tree.leaves(_params(tmp_path / "killed"))):
        np.testing.assert_array_equal(a, b)


def test_sharded_checkpoints_rotate_and_fall_back_to_the_previous(tmp_path):
    """orbax checkpoints of the executor: two kept, a damaged newest one moved aside with a warning."""
    ck = checkpoint.ShardedCheckpoints(str(tmp_path / "ck"))
    assert not ck.exists() and ck.restore_latest({"w": np.zeros(3, np.float32)}, warn=print) is None
    states = {k: {"w": np.full(3, float(k), np.float32), "step": np.int32(k)} for k in (1, 2, 3)}
    for k, st in states.items():
        ck.save(k, jax.device_put(st))
    assert ck.steps() == [3, 2]  # the two newest kept
    template = jax.device_put(states[1])
    got, path = ck.restore_latest(template, warn=lambda m: pytest.fail(m))
    assert path.endswith("3") and float(got["w"][0]) == 3.0
    for f in (tmp_path / "ck" / "3").rglob("*"):  # damage the newest: its files emptied
        if f.is_file():
            f.write_bytes(b"")
    warned = []
    got, path = ck.restore_latest(template, warn=warned.append)
    assert path.endswith("2") and float(got["w"][0]) == 2.0 and int(got["step"]) == 2
    assert len(warned) == 1 and "corrupt" in warned[0] and (tmp_path / "ck" / "3.corrupt").exists()
    for f in (tmp_path / "ck" / "2").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")
    with pytest.raises(ValueError, match="corrupt"):
        ck.restore_latest(template, warn=print)

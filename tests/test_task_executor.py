"""SpikePipe schedules executed task by task (train/task_executor.py) equal the stash simulator at
the delays schedule.delays_for reads from the same schedule."""

import os

import jax
import numpy as np
import pytest

from spikepipe_jax import experiments, snn
from spikepipe_jax.hardware.mapping import training_tasks_from_config
from spikepipe_jax.schedule import delays_for
from spikepipe_jax.schedule.policies import spikepipe_schedule
from spikepipe_jax.schedule.retiming import layerpipe_delays
from spikepipe_jax.schedule.training_graph import graph_from_tasks
from spikepipe_jax.train import task_executor
from spikepipe_jax.train import optimizer as optimizer_lib
from tests.executor_cases import stash_reference


def _schedule(cfg, processors):
    tasks = training_tasks_from_config(cfg)
    g = graph_from_tasks(tasks, delays=layerpipe_delays(len(tasks) // 3), split_backward=True)
    return spikepipe_schedule(g, processors)


def _setup(net, processors, steps):
    cfg = experiments.load_config(net, "smoke")
    model = snn.model_from_config(cfg.model)._replace(native="off")
    t, b = cfg.model.num_steps, cfg.train.batch_size
    tx = optimizer_lib.make_base_optimizer(cfg.train, total_steps=steps)
    encode = lambda x, k: snn.encode(cfg.data.encoding, x, t, k)
    rng = np.random.default_rng(1)
    xs = [rng.random((b,) + tuple(cfg.model.input_shape), dtype=np.float32) for _ in range(steps)]
    ys = [rng.integers(0, 10, b).astype(np.int32) for _ in range(steps)]
    params = snn.init_params(jax.random.key(cfg.seed), model)
    return cfg, model, tx, encode, xs, ys, params


@pytest.mark.parametrize("net,processors,steps", [("fc_digits", 2, 5), ("fc_digits", 3, 6), ("conv_digits", 3, 6),
                                                  ("deep_digits", 4, 8)])
def test_schedule_executed_equals_the_simulator_at_its_delays(net, processors, steps):
    cfg, model, tx, encode, xs, ys, params = _setup(net, processors, steps)
    sched = _schedule(cfg, processors)
    delays = delays_for(sched)
    procs = {p.processor for p in sched.placements}
    assert len(procs) > 1  # the tasks really are spread over processors
    key = jax.random.key(2)
    ex = task_executor.TaskExecutor(model, sched, delays, tx, loss_name=cfg.train.loss, num_classes=10,
                                    encode_fn=encode, devices=[jax.devices()[0]] * processors)
    st = ex.init(params)
    mets = []
    for k in range(steps):
        st, m = ex.step(st, xs[k], ys[k], key)
        mets += m["finished"]
    st, m = ex.drain(st, key)
    mets += m["finished"]
    got = ex.params(st)
    assert len(mets) == steps and not st["inputs"]  # every iteration finished
    # nothing left but the newest weights, kept for the iterations that would use them next
    assert st["kept"] and all(k[0] == "p" and k[2] >= steps for k in st["kept"]), sorted(st["kept"])

    ref_params, ref_losses = stash_reference(model, tx, params, delays, cfg.train.loss, encode, xs, ys, key)
    leaves = lambda tree: [np.asarray(a) for a in jax.tree.leaves(tree)]
    moved = max(float(np.max(np.abs(a - r))) for a, r in zip(leaves(params), leaves(ref_params)))
    err = max(float(np.max(np.abs(a - r))) for a, r in zip(leaves(got), leaves(ref_params)))
    assert moved > 1e-3 and err < 1e-6 * max(1.0, moved / 1e-2), (err, moved, delays)
    np.testing.assert_allclose([float(a[0]) for a in mets], ref_losses, rtol=1e-5, atol=1e-6)


def test_delays_that_do_not_match_the_order_are_refused():
    """Delays of zero ask a forward for a weight version its schedule has not made yet: refused
    before any work, naming the layer."""
    cfg, model, tx, encode, xs, ys, params = _setup("fc_digits", 2, 4)
    sched = _schedule(cfg, 2)
    delays = delays_for(sched)
    assert max(delays) > 0
    lagging = next(l for l, d in enumerate(delays) if d > 0)
    with pytest.raises(ValueError, match=f"F{lagging} of iteration 1 needs weight version 1, which W{lagging} makes "
                                         f"later"):
        task_executor.TaskExecutor(model, sched, [0] * model.num_layers, tx, loss_name=cfg.train.loss,
                                   num_classes=10, encode_fn=encode, devices=[jax.devices()[0]] * 2)
    bigger = [d + 1 for d in delays]  # older weights than the schedule's: a consistent order, accepted
    task_executor.TaskExecutor(model, sched, bigger, tx, loss_name=cfg.train.loss, num_classes=10,
                               encode_fn=encode, devices=[jax.devices()[0]] * 2)


def test_split_or_foreign_schedules_are_refused():
    cfg, model, tx, encode, *_ = _setup("fc_digits", 2, 1)
    sched = _schedule(cfg, 2)
    import dataclasses
    split = dataclasses.replace(sched, placements=tuple(
        dataclasses.replace(p, task=p.task + ".0") if p.task == "W0" else p for p in sched.placements))
    with pytest.raises(ValueError, match=r"task 'W0.0' is not an unsplit"):
        task_executor.TaskExecutor(model, split, [1, 0], tx, loss_name="ce_mem", num_classes=10, encode_fn=encode)
    missing = dataclasses.replace(sched, placements=tuple(p for p in sched.placements if p.task != "BL0"))
    with pytest.raises(ValueError, match=r"missing \[\('BL', 0\)\]"):
        task_executor.TaskExecutor(model, missing, [1, 0], tx, loss_name="ce_mem", num_classes=10, encode_fn=encode)
    with pytest.raises(ValueError, match="3 delays for 2 layers"):
        task_executor.TaskExecutor(model, sched, [1, 0, 0], tx, loss_name="ce_mem", num_classes=10, encode_fn=encode)
    with pytest.raises(ValueError, match="uses 2 processors, 1 device"):
        task_executor.TaskExecutor(model, sched, [1, 0], tx, loss_name="ce_mem", num_classes=10, encode_fn=encode,
                                   devices=jax.devices()[:1])


@pytest.mark.parametrize("net,processors,save_at", [("conv_digits", 3, 3), ("deep_digits", 4, 5)])
def test_save_and_restore_mid_schedule_continues_exactly(tmp_path, net, processors, save_at):
    """Iterations in flight (kept spikes, weights used, LIF vjps, gradients, weight versions)
    saved and restored into a new executor: the run ends bit for bit as the uninterrupted one."""
    steps = 8
    cfg, model, tx, encode, xs, ys, params = _setup(net, processors, steps)
    sched, delays = task_executor.config_schedule(cfg, processors)
    assert delays == delays_for(sched)
    key = jax.random.key(2)

    def make():
        return task_executor.TaskExecutor(
            model, sched, delays, tx, loss_name=cfg.train.loss, num_classes=10, encode_fn=encode,
            devices=[jax.devices()[0]] * processors, batch_size=cfg.train.batch_size,
            num_steps=cfg.model.num_steps, input_shape=cfg.model.input_shape)

    def run(ex, st, start):
        for k in range(start, steps):
            st, _ = ex.step(st, xs[k], ys[k], key)
        return ex.drain(st)[0]

    ex = make()
    full = ex.params(run(ex, ex.init(params), 0))
    st = ex.init(params)
    for k in range(save_at):
        st, _ = ex.step(st, xs[k], ys[k], key)
    assert any(k[0] == "vjp" for k in st["kept"])  # LIF vjps in flight
    directory = str(tmp_path / task_executor.CHECKPOINT_DIR)
    path = os.path.join(directory, "process_0.msgpack")
    ex.save(directory, st)
    ex2 = make()
    restored, read = ex2.restore_latest(directory, ex2.init(params), warn=pytest.fail)
    assert read == path and restored["fed"] == save_at
    resumed = ex2.params(run(ex2, restored, save_at))
    for a, r in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(a, r)
    ex2.save(directory, st)
    with open(path, "r+b") as f:  # damaged newest: the previous one, with a warning
        f.write(b"\x00\x01garbage")
    warned = []
    prev, read = ex2.restore_latest(directory, ex2.init(params), warn=warned.append)
    assert read.endswith(".prev.msgpack") and prev["fed"] == save_at and "corrupt" in warned[0]


def _two_processes(phase, out, net, devices_each, steps, save_at):
    import socket
    import subprocess
    import sys
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_each}")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    procs = [subprocess.Popen([sys.executable, "-m", "tests.task_executor_procs", str(i), str(port), phase, str(out),
                               net, str(steps), str(save_at)], cwd=repo, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    finally:  # a process left waiting for the other (a failure) must not outlive the test
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]


@pytest.mark.parametrize("net,devices_each,steps,save_at", [("conv_digits", 1, 6, 3), ("deep_digits", 2, 8, 5)])
def test_two_processes_equal_the_simulator_and_resume_exactly(tmp_path, net, devices_each, steps, save_at):
    """The schedule's processors in two jax.distributed processes (values crossing processes
    over TCP; with 2 devices each, also between devices of one process): the parameters and
    per-iteration losses equal the stash simulator at the schedule's delays; saved mid-run (the
    values in flight received into each process's file) and resumed by new processes, the run
    ends bit for bit as the uninterrupted one. The bytes sent equal the values crossing
    processes (bytes_per_iteration counts those crossing processors)."""
    import json
    _two_processes("full", tmp_path, net, devices_each, steps, save_at)
    _two_processes("resume", tmp_path, net, devices_each, steps, save_at)
    full, resumed = np.load(tmp_path / "full.npz"), np.load(tmp_path / "resume.npz")
    info = json.load(open(tmp_path / "full.json"))
    assert sorted(full.files) == sorted(resumed.files)
    for k in full.files:
        np.testing.assert_array_equal(full[k], resumed[k])
    assert len({p // devices_each for p in info["placement"].values()}) == 2  # both processes run tasks
    assert min(info["bytes_sent"]) > 0
    if devices_each == 1:  # processors = processes: every value crossing processors went over TCP, once
        last = f"F{len(info['delays']) - 1}"
        metrics = 8 * steps if info["placement"][last] != 0 else 0  # [loss, correct] to process 0
        assert sum(info["bytes_sent"]) == steps * sum(info["bytes_per_iteration"].values()) + metrics

    cfg, model, tx, encode, xs, ys, params = _setup(net, 2 * devices_each, steps)
    delays = info["delays"]
    ref_params, ref_losses = stash_reference(model, tx, params, delays, cfg.train.loss, encode, xs, ys,
                                             jax.random.key(2))
    moved = max(float(np.max(np.abs(np.asarray(ref_params[n][k]) - np.asarray(params[n][k]))))
                for n in params for k in params[n])
    err = max(float(np.max(np.abs(full[f"{n}/{k}"] - np.asarray(ref_params[n][k])))) for n in params for k in params[n])
    assert moved > 1e-3 and err < 1e-6 * max(1.0, moved / 1e-2), (err, moved, delays)
    np.testing.assert_allclose([m[0] for m in info["metrics"]], ref_losses, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("net,processors", [("deep_digits", 2), ("conv_digits", 3)])
def test_comm_budget_keeps_the_schedule_within_standard_pipelinings_bytes(net, processors):
    """pipeline.comm_budget=1: the schedule moves at most what 1F1B's contiguous stages move (the
    cost model's bytes); without it the free placement may move more."""
    from spikepipe_jax.schedule import comm
    cfg = experiments.load_config(net, "smoke")
    standard = task_executor.standard_bytes(cfg, processors)
    free, _ = task_executor.config_schedule(cfg, processors)
    cfg.pipeline.comm_budget = 1.0
    budgeted, delays = task_executor.config_schedule(cfg, processors)
    assert budgeted.info["within_budget"]
    assert comm.bytes_communicated(budgeted.graph, budgeted.processor_of) <= standard
    assert delays == delays_for(budgeted) and budgeted.period >= free.period
    assert standard > 0 and len({p.processor for p in budgeted.placements}) > 1

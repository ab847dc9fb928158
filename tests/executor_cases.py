"""Multi-device cases of the pipeline executor, run in a subprocess with N fake CPU devices.

``python -m tests.executor_cases N`` prints one JSON object: for each case that fits N devices,
the largest parameter difference between the executor after K steps (and its drain) and its
reference, how far the reference moved from the initial parameters, the per-layer delays the
reference used and the stages. References, on one device:

* ``gpipe``: the unpipelined train step (``pipeline.execute="none"``); both GPipe executors are
  compared with it: the tick-synchronous one (``err``) and the asynchronous one (``err_async``);
* ``1f1b``: the pipeline simulator with weight stashing (``train/pipesim.py``) at the delays
  ``schedule.delays_for("1f1b", stage map)`` gives for the executor's stages; both 1F1B
  executors are compared with it: the tick-synchronous one (``err``) and the asynchronous one
  (``train/async_executor.py``, ``err_async``, its losses ``losses_async``).
"""

from __future__ import annotations

import json
import os
import sys

CASES = {
    # name: (config, mode, stages, data, microbatches, steps)
    "dense_s1_d2_gpipe": ("fc_digits", "gpipe", 1, 2, 1, 3),
    "dense_s2_gpipe_m2": ("fc_digits", "gpipe", 2, 1, 2, 3),
    "dense_s2_1f1b": ("fc_digits", "1f1b", 2, 1, 1, 4),
    "dense_s1_1f1b": ("fc_digits", "1f1b", 1, 2, 1, 3),
    "conv_s2_gpipe_m2": ("conv_digits", "gpipe", 2, 1, 2, 3),
    "conv_s2_1f1b": ("conv_digits", "1f1b", 2, 1, 1, 4),
    "deep_s4_1f1b": ("deep_digits", "1f1b", 4, 1, 1, 6),
    "deep_s2_d2_gpipe_m2": ("deep_digits", "gpipe", 2, 2, 2, 3),
    "deep_s2_d2_1f1b": ("deep_digits", "1f1b", 2, 2, 1, 4),
    "conv_s3_1f1b": ("conv_digits", "1f1b", 3, 1, 1, 5),
    "deep_s8_1f1b": ("deep_digits", "1f1b", 8, 1, 1, 10),
    "deep_s4_d2_gpipe_m4": ("deep_digits", "gpipe", 4, 2, 4, 2),
    "deep_s3_1f1b": ("deep_digits", "1f1b", 3, 1, 1, 5),
    # SpikePipe's schedule (train/task_executor.py), one processor per device ("stages" = processors)
    "conv_p2_spikepipe": ("conv_digits", "spikepipe", 2, 1, 1, 5),
    "deep_p4_spikepipe": ("deep_digits", "spikepipe", 4, 1, 1, 8),
    "deep_p8_spikepipe": ("deep_digits", "spikepipe", 8, 1, 1, 10),
}


def stash_reference(model, tx, params, delays, loss_name, encode, xs, ys, key):
    """The single-device pipeline simulator with weight stashing at ``delays`` over the batches
    ``xs``, ``ys``: its final parameters and per-step losses (the reference of 1F1B and SpikePipe)."""
    import jax

    from spikepipe_jax.train import losses, pipesim

    step = jax.jit(pipesim.make_train_step(
        model, tx, delays=delays, mode="stash",
        loss_fn_from_output=lambda out, y: losses.compute_loss(loss_name, out, y, 10), encode_fn=encode))
    ref, out = pipesim.init_state(params, tx.init(params), delays, [i.name for i in model.infos]), []
    for x, y in zip(xs, ys):
        ref, m = step(ref, x, y, key)
        out.append(float(m["loss"]))
    return ref.params, out


def run_spikepipe_case(name: str) -> dict:
    """The task executor on P devices of this process against the stash simulator at the delays
    ``delays_for`` reads from its schedule (the cost model's, no byte budget)."""
    import jax
    import numpy as np

    from spikepipe_jax import experiments, snn
    from spikepipe_jax.schedule import delays_for
    from spikepipe_jax.train import task_executor
    from spikepipe_jax.train import optimizer as optimizer_lib

    net, _, processors, _, _, steps = CASES[name]
    cfg = experiments.load_config(net, "smoke")
    model = snn.model_from_config(cfg.model)._replace(native="off")
    t, b = cfg.model.num_steps, cfg.train.batch_size
    tx = optimizer_lib.make_base_optimizer(cfg.train, total_steps=steps)
    encode = lambda x, k: snn.encode(cfg.data.encoding, x, t, k)
    sched, delays = task_executor.config_schedule(cfg, processors)
    ex = task_executor.TaskExecutor(model, sched, delays, tx, loss_name=cfg.train.loss, num_classes=10,
                                    encode_fn=encode, devices=jax.devices()[:processors], batch_size=b,
                                    num_steps=t, input_shape=cfg.model.input_shape)
    params = snn.init_params(jax.random.key(cfg.seed), model)
    rng = np.random.default_rng(1)
    xs = [rng.random((b,) + tuple(cfg.model.input_shape), dtype=np.float32) for _ in range(steps)]
    ys = [rng.integers(0, 10, b).astype(np.int32) for _ in range(steps)]
    key = jax.random.key(2)
    st, losses_ex = ex.init(params), []
    for k in range(steps):
        st, m = ex.step(st, xs[k], ys[k], key)
        losses_ex += [float(a[0]) for a in m["finished"]]
    st, m = ex.drain(st)
    losses_ex += [float(a[0]) for a in m["finished"]]
    got = ex.params(st)
    ref_params, losses_ref = stash_reference(model, tx, params, delays, cfg.train.loss, encode, xs, ys, key)
    leaves = lambda tree: [np.asarray(a) for a in jax.tree.leaves(tree)]
    err = max(float(np.max(np.abs(a - r))) for a, r in zip(leaves(got), leaves(ref_params)))
    moved = max(float(np.max(np.abs(a - r))) for a, r in zip(leaves(params), leaves(ref_params)))
    devices = sorted({str(d) for d in ex.device.values()})
    return dict(err=err, moved=moved, delays=[int(d) for d in delays], schedule_delays=list(delays_for(sched)),
                losses_ex=losses_ex, losses_ref=losses_ref, devices=devices, processors=sched.processors)


def run_case(name: str) -> dict:
    if CASES[name][1] == "spikepipe":
        return run_spikepipe_case(name)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from spikepipe_jax import experiments, snn
    from spikepipe_jax.schedule import delays_for
    from spikepipe_jax.train import async_executor, executor, loop, losses, pipesim
    from spikepipe_jax.train import optimizer as optimizer_lib
    from spikepipe_jax.train import stages as stages_lib
    from spikepipe_jax.train.step import TrainState

    net, mode, num_stages, data, micro, steps = CASES[name]
    cfg = experiments.load_config(net, "smoke")
    cfg.pipeline.execute, cfg.pipeline.stages, cfg.pipeline.microbatches = mode, num_stages, micro
    cfg.train.batch_size = 8 * data * micro
    model = snn.model_from_config(cfg.model)._replace(native="off")
    plan = executor.make_plan(cfg, num_stages * data)
    t, b = cfg.model.num_steps, cfg.train.batch_size
    encoding = cfg.data.encoding
    tx = optimizer_lib.make_base_optimizer(cfg.train, total_steps=steps)
    encode = lambda x, k: snn.encode(encoding, x, t, k)
    ex = executor.Executor(model, plan, tx, loss_name=cfg.train.loss, num_classes=10, encode_fn=encode,
                           binary_input=encoding == "rate", batch_size=b, num_steps=t,
                           input_shape=cfg.model.input_shape,
                           mesh=executor.make_mesh(plan, jax.devices()[:num_stages * data]))
    params = snn.init_params(jax.random.key(cfg.seed), model)
    rng = np.random.default_rng(1)
    xs = [rng.random((b,) + tuple(cfg.model.input_shape), dtype=np.float32) for _ in range(steps)]
    ys = [rng.integers(0, 10, b).astype(np.int32) for _ in range(steps)]
    key = jax.random.key(2)
    state = ex.init(params)
    losses_ex = []
    for k in range(steps):
        state, m = ex.step(state, xs[k], ys[k], key)
        losses_ex.append((float(m["count"]), float(m["loss"])))
    state, _ = ex.drain(state)
    got = jax.device_get(ex.params(state))
    got_async, losses_async = None, []
    if mode in ("1f1b", "gpipe"):
        ax = async_executor.AsyncExecutor(
            model, plan, tx, loss_name=cfg.train.loss, num_classes=10, encode_fn=encode,
            binary_input=encoding == "rate", batch_size=b, num_steps=t, input_shape=cfg.model.input_shape,
            devices=jax.devices()[:num_stages * data])
        ast = ax.init(params)
        for k in range(steps):
            ast, m = ax.step(ast, xs[k], ys[k], key)
            losses_async.append((m["count"], m["loss"]))
        ast, m = ax.drain(ast)
        if m is not None:
            losses_async.append((m["count"], m["loss"]))
        got_async = ax.params(ast)

    if mode == "gpipe":
        delays = [0] * model.num_layers
        step = loop.make_train_step(model, tx, loss_name=cfg.train.loss, encoding=encoding, num_steps=t,
                                    num_classes=10)
        ref = TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))
    else:
        delays = delays_for("1f1b", num_layers=model.num_layers, stages=stages_lib.stage_map(plan.stages))
        step = pipesim.make_train_step(
            model, tx, delays=delays, mode="stash",
            loss_fn_from_output=lambda out, y: losses.compute_loss(cfg.train.loss, out, y, 10), encode_fn=encode)
        ref = pipesim.init_state(params, tx.init(params), delays, [i.name for i in model.infos])
    step = jax.jit(step)
    losses_ref = []
    for k in range(steps):
        ref, m = step(ref, xs[k], ys[k], key)
        losses_ref.append(float(m["loss"]))
    leaves = lambda tree: [np.asarray(a) for a in jax.tree.leaves(tree)]
    err = max(float(np.max(np.abs(a - r))) for a, r in zip(leaves(got), leaves(ref.params)))
    moved = max(float(np.max(np.abs(a - r))) for a, r in zip(leaves(params), leaves(ref.params)))
    err_async = (max(float(np.max(np.abs(a - r))) for a, r in zip(leaves(got_async), leaves(ref.params)))
                 if got_async is not None else None)
    return dict(err=err, err_async=err_async, losses_async=losses_async, moved=moved, delays=[int(d) for d in delays], stages=[list(s) for s in plan.stages],
                config_delays=[int(d) for d in _config_delays(cfg, model)] if mode == "1f1b" else None,
                losses_ex=losses_ex, losses_ref=losses_ref, step=int(state.step), tick=int(state.tick))


def _config_delays(cfg, model):
    """What the simulator's command line would use: pipeline.delays="1f1b" at the same stages."""
    from spikepipe_jax.train import pipeline

    c = cfg.copy_and_resolve_references()
    c.pipeline.execute, c.pipeline.delays = "none", "1f1b"
    return pipeline.config_delays(c, model.num_layers)


def main() -> None:
    n = int(sys.argv[1])
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    names = sys.argv[2:] or [k for k, v in CASES.items() if v[2] * v[3] == n]
    print(json.dumps({name: run_case(name) for name in names}))


if __name__ == "__main__":
    main()

"""Checkpoints: the project's msgpack files against orbax-checkpoint, on the states training saves.

    .venv/bin/python -m benchmarks.checkpoint [--nets=fc_small,conv_medium] [--repeats=5] [--out=F]

Issue 15 asks for orbax-checkpoint (the JAX ecosystem's format for sharded, multi-process
checkpoints) unless it measures worse here. Each case builds a state exactly as the training
loop does and saves / restores it ``--repeats`` times both ways, in one process with two fake
CPU devices:

* ``train``: the unpipelined ``TrainState`` (parameters, Adam state, step) of ``configs/<net>``
  after three training steps on random rate-coded batches;
* ``1f1b``: the pipeline executor's ``ExecState`` after three steps (2 stages on a ``("data", "stage")`` mesh:
  a parameter copy per stage, the Adam states, the rings of in-flight residuals, inputs and
  labels), sharded over the two devices;
* ``1f1b_async``: the asynchronous executor's ``AsyncState`` after three steps (what
  ``pipeline.execute=1f1b`` checkpoints: per stage its parameters, Adam state, kept vjps and the
  messages waiting for it; both stages in this one process, on its two devices). ``msgpack`` is
  then ``AsyncExecutor.save`` / ``restore_latest`` (one file per process), ``orbax`` the same
  ``StandardCheckpointer`` on the ``AsyncState`` pytree.

``msgpack``: :func:`spikepipe_jax.train.checkpoint.save_rotating` / ``restore_latest`` (what
``train/loop.py`` calls: the state gathered to the host, one file written atomically, the
previous one kept). ``orbax``: ``orbax.checkpoint.StandardCheckpointer`` saving the (sharded)
arrays into a fresh step directory and restoring them with the same shardings (abstract
target of ``ShapeDtypeStruct``\\ s), ``wait_until_finished`` inside the timed save. One JSON line
per (case, format): median save and restore seconds, bytes on disk, whether the restored state
equals the saved one bit for bit; and one line with the seconds ``import orbax.checkpoint``
adds to a fresh process (measured in a subprocess).
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from absl import app, flags  # noqa: E402

flags.DEFINE_list("nets", ["fc_small", "conv_medium"], "Network configs.")
flags.DEFINE_list("cases", ["train", "1f1b", "1f1b_async"], "States: train (TrainState), 1f1b (the tick-synchronous "
                  "executor's ExecState), 1f1b_async (the asynchronous executor's AsyncState, one process's).")
flags.DEFINE_integer("repeats", 5, "Saves and restores per case and format (median reported).")
flags.DEFINE_string("out", "", "Also write the JSON lines here.")
FLAGS = flags.FLAGS


def _tree_bytes(tree) -> int:
    import jax

    import numpy as np

    return sum(np.asarray(a).nbytes for a in jax.tree.leaves(tree))  # (AsyncState's step and tick are ints)


def _dir_bytes(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def _equal(a, b) -> bool:
    import jax
    import numpy as np

    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def build_state(net: str, case: str, steps: int = 3):
    """The state training would checkpoint after ``steps`` steps on random rate-coded batches
    (trained, so that its optimiser moments and in-flight rings are not the zeros of
    initialisation, which compress to nothing), and its one-line description."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from spikepipe_jax import snn
    from spikepipe_jax.experiments import load_config
    from spikepipe_jax.train import executor, optimizer as optimizer_lib
    from spikepipe_jax.train.step import TrainState

    cfg = load_config(net)
    model = snn.model_from_config(cfg.model)
    params = snn.init_params(jax.random.key(0), model)
    tx = optimizer_lib.make_base_optimizer(cfg.train, 1000)
    t, b = cfg.model.num_steps, cfg.train.batch_size
    rng = np.random.default_rng(0)
    batches = [(jnp.asarray(rng.random((b,) + tuple(cfg.model.input_shape), dtype=np.float32)),
                jnp.asarray(rng.integers(0, 10, b).astype(np.int32))) for _ in range(steps)]
    key = jax.random.key(1)
    if case == "train":
        from spikepipe_jax.train import loop

        step = jax.jit(loop.make_train_step(model, tx, loss_name=cfg.train.loss, encoding="rate",
                                            num_steps=t, num_classes=10))
        state = TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))
        for x, y in batches:
            state, _ = step(state, x, y, key)
        return jax.block_until_ready(state), f"TrainState after {steps} steps, one device"
    cfg.pipeline.execute, cfg.pipeline.stages = "1f1b", 2
    plan = executor.make_plan(cfg, 2)
    ex = executor.Executor(model._replace(native="off"), plan, tx, loss_name=cfg.train.loss, num_classes=10,
                           encode_fn=lambda x, k: snn.encode("rate", x, t, k), binary_input=True,
                           batch_size=b, num_steps=t, input_shape=tuple(cfg.model.input_shape),
                           mesh=executor.make_mesh(plan, jax.devices()[:2]))
    if case == "1f1b_async":
        from spikepipe_jax.train import async_executor
        ax = async_executor.AsyncExecutor(
            model._replace(native="off"), plan, tx, loss_name=cfg.train.loss, num_classes=10,
            encode_fn=lambda x, k: snn.encode("rate", x, t, k), binary_input=True, batch_size=b, num_steps=t,
            input_shape=tuple(cfg.model.input_shape), devices=jax.devices()[:2])
        state = ax.init(params)
        for x, y in batches:
            state, _ = ax.step(state, np.asarray(x), np.asarray(y), key)
        return (jax.block_until_ready(state), f"AsyncState after {steps} steps, 2 stages {list(plan.stages)} on "
                f"2 devices of one process"), ax
    state = ex.place(ex.init(params))
    for x, y in batches:
        state, _ = ex.step(state, x, y, key)
    return jax.block_until_ready(state), f"ExecState after {steps} steps, 2 stages {list(plan.stages)} on 2 devices"


def _time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def measure(state, repeats: int, executor=None) -> list[dict]:
    """Both formats on ``state``; ``executor``: an ``AsyncExecutor`` whose own per-process
    msgpack ``save`` / ``restore_latest`` are the msgpack side."""
    import jax
    import orbax.checkpoint as ocp

    from spikepipe_jax.train import checkpoint

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "checkpoint.msgpack")
        if executor is None:
            save_s, _ = _time(lambda: checkpoint.save_rotating(path, state), repeats)
            restore_s, (back, _) = _time(lambda: checkpoint.restore_latest(path, state, warn=print), repeats)
        else:
            path = os.path.join(tmp, "checkpoint_async")
            save_s, _ = _time(lambda: executor.save(path, state), repeats)
            restore_s, (back, _) = _time(lambda: executor.restore_latest(path, state, warn=print), repeats)
            path = os.path.join(path, "process_0.msgpack")
        rows.append(dict(format="msgpack", save_s=save_s, restore_s=restore_s, disk_bytes=_dir_bytes(path),
                         exact=_equal(state, back)))

        ckptr = ocp.StandardCheckpointer()
        counter = [0]

        def save():
            counter[0] += 1
            d = os.path.join(tmp, "orbax", str(counter[0]))
            ckptr.save(d, state)
            ckptr.wait_until_finished()
            return d

        save_s, d = _time(save, repeats)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        restore_s, back = _time(lambda: ckptr.restore(d, abstract), repeats)
        rows.append(dict(format="orbax", save_s=save_s, restore_s=restore_s, disk_bytes=_dir_bytes(d),
                         exact=_equal(state, back)))
        ckptr.close()
        shutil.rmtree(os.path.join(tmp, "orbax"), ignore_errors=True)
    return rows


def import_seconds() -> dict:
    """Seconds ``import orbax.checkpoint`` adds to a process that has imported jax and flax."""
    code = ("import time, jax, flax.serialization; t = time.perf_counter(); import orbax.checkpoint; "
            "print(time.perf_counter() - t)")
    times = []
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "XLA_FLAGS": ""})
        times.append(float(r.stdout.strip().splitlines()[-1]))
    return {"import_orbax_s": statistics.median(times)}


def main(argv) -> None:
    del argv
    import jax

    from spikepipe_jax.io import atomic_write_text

    lines = [import_seconds()]
    print(json.dumps(lines[0]), flush=True)
    for net in FLAGS.nets:
        for case in FLAGS.cases:
            built = build_state(net, case)
            (state, what), executor = built if case == "1f1b_async" else (built, None)
            for row in measure(state, FLAGS.repeats, executor):
                row = dict(net=net, case=case, state=what, state_bytes=_tree_bytes(state),
                           devices=len({d for a in jax.tree.leaves(state) if hasattr(a, "devices") for d in a.devices()}),
                           **{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
                lines.append(row)
                print(json.dumps(row), flush=True)
    if FLAGS.out:
        atomic_write_text(FLAGS.out, "".join(json.dumps(l) + "\n" for l in lines))


if __name__ == "__main__":
    app.run(main)

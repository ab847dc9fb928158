"""Training: jitted BPTT train step, evaluation, the epoch loop with checkpoints and resume.

Data flow::

    config ─► ModelDef (spec) ─► init_params(key) ─► TrainState(params, opt_state, step)
    dataset (numpy) ─► per-epoch permutation from (seed, epoch) ─► batch [B, ...]
    train_step(state, x, y, key):
        x_t = encode(x, T, fold_in(key, step))          # [T, B, ...] time-major
        loss, grads = value_and_grad(loss(apply(params, x_t)))   # BPTT through lax.scan
        updates, opt_state = tx.update(grads, opt_state, params)  # optax chain (delays, mitigation)
        params = apply_updates(params, updates)

Everything random is derived from ``config.seed`` and the step number, so a run resumed from a
checkpoint at step k replays steps k+1.. exactly: final parameters equal those of an
uninterrupted run (on CPU). Data-parallel over all local devices: the batch is sharded over a
1-D ``("data",)`` mesh, params and optimiser state are replicated, and XLA inserts the gradient
all-reduce (``jax.sharding``; no pmap).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import json
import math
import os
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from spikepipe_jax import data as data_lib
from spikepipe_jax import native, runtime, snn
from spikepipe_jax import spec as spec_lib
from spikepipe_jax.io import atomic_write_json, atomic_write_text
from spikepipe_jax.train import async_executor, checkpoint, executor, losses, pipesim, task_executor, transport
from spikepipe_jax.train import optimizer as optimizer_lib
from spikepipe_jax.train import pipeline as pipeline_lib
from spikepipe_jax.train.step import TrainState, step_metrics


CPU_GEMMS = ("eigen", "xla_default")


def compiler_options(cpu_gemm: str = "eigen") -> dict:
    """XLA compiler options for the jitted train and eval steps (``config.train.cpu_gemm``).

    On the CPU backend XLA gives most dots to YNNPACK, whose worker threads keep spinning for
    a while after a GEMM; the memory-bound kernels that follow (the native LIF/readout
    kernel, fusions) then share the cores with them. ``"eigen"`` keeps every dot on Eigen
    (YNNPACK still takes the reductions); its measured effect is in benchmarks/README.md
    (section 8). ``"xla_default"``: no options. Other backends: no options.
    """
    if cpu_gemm not in CPU_GEMMS:
        raise ValueError(f"unknown train.cpu_gemm {cpu_gemm!r}; expected one of {CPU_GEMMS}")
    if cpu_gemm == "eigen" and jax.default_backend() == "cpu":
        return {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}
    return {}


def validate_config(config) -> snn.ModelDef:
    """Checks every field the run needs before anything is written; returns the model."""
    model = snn.model_from_config(config.model)
    if model.native == "on":
        native.usable("on")  # a clear error now (no compiler, several devices) rather than at trace time
    t = config.train
    for field in ("batch_size", "epochs", "eval_batch_size", "log_every_steps", "checkpoint_every_steps"):
        v = t[field]
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"train.{field} must be a positive integer, got {v!r}")
    losses.check_loss_readout(t.loss, model.readout)
    optimizer_lib.make_base_optimizer(t, total_steps=1)
    compiler_options(t.get("cpu_gemm", "eigen"))
    if config.data.encoding not in snn.encoders.ENCODINGS:
        raise ValueError(f"unknown data.encoding {config.data.encoding!r}; "
                         f"expected one of {snn.encoders.ENCODINGS}")
    n_dev = jax.device_count()
    if t.batch_size % n_dev and config.pipeline.get("execute", "none") == "none":  # data parallel over all
        # (a pipelined run checks its own split in executor.make_plan: data replicas x micro-batches)
        raise ValueError(f"train.batch_size={t.batch_size} must be divisible by the {n_dev} devices")
    pipeline_lib.config_delays(config, model.num_layers)
    simulate = config.pipeline.get("simulate", "none")
    if simulate not in ("none",) + pipesim.MODES:
        raise ValueError(f"unknown pipeline.simulate {simulate!r}; expected one of {('none',) + pipesim.MODES}")
    if simulate != "none" and config.pipeline.get("mitigation", "none") != "none":
        raise ValueError("pipeline.simulate runs the plain pipeline; set pipeline.mitigation='none'")
    if config.pipeline.get("execute", "none") not in executor.MODES:
        raise ValueError(f"unknown pipeline.execute {config.pipeline.execute!r}; expected one of {executor.MODES}")
    if config.pipeline.execute != "none":
        executor.make_plan(config, jax.device_count())  # one error line before any work
    return model


def config_json(config) -> dict:
    """The config as the plain JSON object written to ``workdir/config.json``."""
    return json.loads(json.dumps(config.to_dict(), sort_keys=True, default=list))


def read_metrics(workdir: str) -> list[dict]:
    """The records of ``workdir/metrics.jsonl`` (a line cut by a kill is skipped)."""
    recs = []
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return recs


def eval_curve(workdir: str) -> list[tuple[int, float]]:
    """``(epoch, test_accuracy)`` of each end-of-epoch evaluation of a run."""
    return [(r["epoch"], r["test_accuracy"]) for r in read_metrics(workdir)
            if "test_accuracy" in r and not r.get("final")]


def _time_major(x: jax.Array, encoding: str, num_steps: int, key: jax.Array, temporal: bool) -> jax.Array:
    if temporal:  # event frames [B, T, ...] -> [T, B, ...]
        return jnp.swapaxes(x, 0, 1)
    return snn.encode(encoding, x, num_steps, key)


def make_train_step(model: snn.ModelDef, tx: optax.GradientTransformation, *, loss_name: str,
                    encoding: str, num_steps: int, num_classes: int, temporal: bool = False,
                    params_for_gradient: Optional[Callable] = None):
    """Returns the (un-jitted) pure train step ``(state, x, y, key) -> (state, metrics)``."""

    def train_step(state: TrainState, x, y, key):
        step_key = jax.random.fold_in(key, state.step)
        xt = _time_major(x, encoding, num_steps, step_key, temporal)

        def loss_fn(params):
            out = snn.apply(params, model, xt)
            return losses.compute_loss(loss_name, out, y, num_classes), out

        grad_params = state.params if params_for_gradient is None else params_for_gradient(
            state.params, state.opt_state)
        (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(grad_params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, state.step + 1), step_metrics(loss, out, y, grads)

    return train_step


def make_eval_step(model: snn.ModelDef, *, loss_name: str, encoding: str, num_steps: int,
                   num_classes: int, temporal: bool = False):
    """Pure eval step ``(params, x, y, mask, key) -> (sum_correct, sum_loss)``; mask pads batches."""

    def eval_step(params, x, y, mask, key):
        xt = _time_major(x, encoding, num_steps, key, temporal)
        out = snn.apply(params, model, xt)
        correct = jnp.sum((jnp.argmax(out.logits, -1) == y) * mask)
        per_example = losses.per_example_loss(loss_name, out, y, num_classes)
        return correct, jnp.sum(per_example * mask)

    return eval_step


# Config fields added after runs were already written, with the value that reproduces how those
# runs trained. A saved config without such a field matches a current one holding this value, so
# finished runs (and their checkpoints) stay usable when the config grows.
ADDED_FIELDS = {"pipeline.execute": "none", "pipeline.stages": 0, "pipeline.microbatches": 1}


def config_differences(saved: dict, current: dict) -> list[str]:
    """Dotted keys where a saved ``config.json`` and the current config disagree (sorted).

    A key missing from ``saved`` is not a difference when it is one of :data:`ADDED_FIELDS` and the
    current config holds its neutral value.
    """
    return sorted(k for k in _diff_keys(saved, current)
                  if not (k in ADDED_FIELDS and _lookup(saved, k) is _MISSING
                          and _lookup(current, k) == ADDED_FIELDS[k]))


_MISSING = object()


def _lookup(d, dotted: str):
    """``d["a"]["b"]`` for ``"a.b"``, or :data:`_MISSING`."""
    for k in dotted.split("."):
        if not isinstance(d, dict) or k not in d:
            return _MISSING
        d = d[k]
    return d


def _diff_keys(a, b, prefix=""):
    """Dotted keys where two nested dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in set(a) | set(b):
            yield from _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
    elif a != b:
        yield prefix.rstrip(".")


class WorkdirBusyError(ValueError):
    """Another process holds the workdir's lock (a ValueError, so scripts print one error line)."""


LOCK_FILE = "run.lock"


@contextlib.contextmanager
def workdir_lock(workdir: str):
    """Holds an exclusive ``fcntl.flock`` on ``workdir/run.lock`` (created with the workdir).

    The lock file holds the owner's PID. A second run on the same workdir raises
    :class:`WorkdirBusyError` naming the workdir and that PID. The OS drops the lock when its
    process ends, however it ends, so a run killed with ``kill -9`` leaves no stale lock.
    """
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise WorkdirBusyError(f"workdir {workdir} is in use by another run (process {holder} holds "
                                   f"{path}); wait for it to end or use another --workdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


class _Metrics:
    """metrics.jsonl writer: one JSON object per line, flushed; resume drops lines past the checkpoint."""

    def __init__(self, path: str, resume_step: int):
        self.path = path
        kept = []
        if os.path.exists(path):
            kept = [json.dumps(r, sort_keys=True) + "\n" for r in read_metrics(os.path.dirname(path))
                    if r.get("step", 0) <= resume_step and not r.get("final")]
        atomic_write_text(path, "".join(kept))

    def write(self, rec: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
            f.flush()


class _NoMetrics:
    """The metrics writer of processes other than 0 in a multi-process run."""

    def write(self, rec: dict) -> None:
        del rec


def _save(save_fn, path: str, tree, writer: bool) -> None:
    """``save_fn(path, tree)`` by process 0; with several processes every process first takes
    part in gathering the sharded arrays to host memory."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        tree = multihost_utils.process_allgather(tree, tiled=True)
    if writer:
        save_fn(path, tree)


def _window_means(window: list[dict]) -> tuple[float, float, float]:
    """Mean loss and accuracy over a logging window's step metrics, and the number of batches
    they cover; a step that reports a ``count`` (the pipeline executor: batches finished in that
    step, 0 while its pipeline fills) weighs by it."""
    counts = [float(w["count"]) if "count" in w else 1.0 for w in window]
    n = sum(counts)
    if n == 0:
        return float("nan"), float("nan"), 0.0
    loss = sum(c * float(w["loss"]) for c, w in zip(counts, window)) / n
    return loss, sum(c * float(w["accuracy"]) for c, w in zip(counts, window)) / n, n


def _temp_bytes(compiled) -> int:
    """The temporary buffer of a compiled computation per device in bytes (0 when unknown)."""
    try:
        return int(compiled.memory_analysis().temp_size_in_bytes)
    except (AttributeError, NotImplementedError, RuntimeError):  # no analysis (None) on this backend
        return 0


def evaluate(eval_fn, params, x, y, *, batch_size: int, key, data_sharding,
             temp_bytes: int = 0) -> tuple[float, float]:
    """Accuracy and mean loss over a whole split, padding the last batch with a mask.

    ``temp_bytes``: the temporary buffer of one ``eval_fn`` call per device, for
    :func:`spikepipe_jax.runtime.make_room` before each call (0: not called).
    """
    n = len(x)
    n_dev = data_sharding.mesh.size
    n_local = len(data_sharding.addressable_devices)
    batch_size = max(n_dev, batch_size - batch_size % n_dev)
    sums = []
    for i, start in enumerate(range(0, n, batch_size)):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        m = len(xb)
        mask = np.ones(batch_size, np.float32)
        if m < batch_size:
            pad = batch_size - m
            xb = np.concatenate([xb, np.zeros((pad,) + xb.shape[1:], xb.dtype)])
            yb = np.concatenate([yb, np.zeros(pad, yb.dtype)])
            mask[m:] = 0
        # inputs ready before the call: it then runs inline and frees its buffers (runtime.py)
        batch = jax.block_until_ready(jax.device_put((xb, yb, mask), data_sharding))
        runtime.make_room(temp_bytes, count=n_local)
        sums.append(eval_fn(params, *batch, jax.random.fold_in(key, i)))
    # one transfer at the end: a float() per batch would wait for each batch before the next
    sums = jax.device_get(sums)
    return sum(float(c) for c, _ in sums) / n, sum(float(l) for _, l in sums) / n


def train_and_evaluate(config, workdir: str, *, log: Callable[[str], None] = logging.info) -> dict:
    """Trains ``config`` (validated first), writing metrics, config and checkpoints to ``workdir``.

    Returns the final summary dict (also the last line of ``workdir/metrics.jsonl``). Bad
    config or data raise before the workdir is touched; the run then holds the workdir's lock
    (:func:`workdir_lock`: a second run on it raises :class:`WorkdirBusyError`) and resumes
    from its newest readable checkpoint (:func:`checkpoint.restore_latest`).
    """
    runtime.configure_allocator()  # glibc malloc for XLA's per-step buffers (a no-op after the scripts' call)
    model = validate_config(config)
    dataset = data_lib.load_dataset(config.data.name, config.data.dir, num_steps=config.model.num_steps,
                                    max_train=config.data.max_train, max_test=config.data.max_test)
    snn.check_input_shape(model, dataset.input_shape)
    model = model._replace(binary_input=snn.encoders.is_binary(config.data.encoding, dataset.is_temporal))
    if spec_lib.num_classes(model.infos) != dataset.num_classes:
        raise ValueError(f"the network's output layer has {spec_lib.num_classes(model.infos)} units but "
                         f"dataset {config.data.name!r} has {dataset.num_classes} classes "
                         f"(model.layers: last features)")
    t_cfg = config.train
    steps_per_epoch = len(dataset.train_x) // t_cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"train.batch_size={t_cfg.batch_size} exceeds the {len(dataset.train_x)} training samples")

    # --- everything validated: now the run takes the workdir (one run at a time) and touches it.
    if jax.process_index() != 0:  # a multi-process run: process 0 alone writes (and locks) the workdir
        return _train(config, workdir, model, dataset, steps_per_epoch, lambda m: None)
    with workdir_lock(workdir):
        return _train(config, workdir, model, dataset, steps_per_epoch, log)


def _train(config, workdir: str, model: snn.ModelDef, dataset, steps_per_epoch: int,
           log: Callable[[str], None]) -> dict:
    """The body of :func:`train_and_evaluate` once the config is valid and the workdir locked."""
    t_cfg = config.train
    num_steps = int(config.model.num_steps)
    total_steps = steps_per_epoch * t_cfg.epochs
    ckpt_path = os.path.join(workdir, "checkpoint.msgpack")
    config_path = os.path.join(workdir, "config.json")
    config_dict = config_json(config)
    execute = config.pipeline.get("execute", "none")
    # the asynchronous GPipe / 1F1B executor: one file per process (async_executor.AsyncExecutor.save),
    # the SpikePipe task executor too (task_executor.TaskExecutor.save); else one msgpack file
    async_dir = os.path.join(workdir, async_executor.CHECKPOINT_DIR)
    tasks_dir = os.path.join(workdir, task_executor.CHECKPOINT_DIR)
    if execute != "none":
        part = os.path.join(tasks_dir if execute == "spikepipe" else async_dir, f"process_{jax.process_index()}.msgpack")
        have_checkpoint = checkpoint.exists(part)
    else:
        have_checkpoint = checkpoint.exists(ckpt_path)
    if execute == "gpipe" and not have_checkpoint and os.path.isdir(os.path.join(workdir, checkpoint.ORBAX_DIR)):
        raise ValueError(f"workdir {workdir} holds a GPipe checkpoint of the tick-synchronous executor "
                         f"({checkpoint.ORBAX_DIR}/, written before GPipe ran asynchronously); this version "
                         f"cannot resume it: use a new --workdir")
    if have_checkpoint and os.path.exists(config_path):
        with open(config_path) as f:
            saved = json.load(f)
        changed = config_differences(saved, config_dict)
        if changed:
            raise ValueError(f"workdir {workdir} holds a checkpoint of a run with another config "
                             f"(differs in {', '.join(changed[:5])}); use a new --workdir to start afresh")
    writer = jax.process_index() == 0
    if writer:
        atomic_write_json(config_path, config_dict)

    devices = jax.devices()  # all processes' devices (one process: the local ones)
    mesh = Mesh(np.array(devices), ("data",))
    data_sharding = NamedSharding(mesh, PartitionSpec("data"))
    n_local = len(data_sharding.addressable_devices)  # one step buffer each (runtime.make_room)
    replicated = NamedSharding(mesh, PartitionSpec())

    root_key = jax.random.key(config.seed)
    init_key, train_key, eval_key = jax.random.split(root_key, 3)
    del root_key
    params = snn.init_params(init_key, model)
    common = dict(loss_name=t_cfg.loss, encoding=config.data.encoding, num_steps=num_steps,
                  num_classes=dataset.num_classes, temporal=dataset.is_temporal)
    simulate = config.pipeline.get("simulate", "none")
    options = compiler_options(t_cfg.get("cpu_gemm", "eigen"))
    runner = None  # the pipeline executor (pipeline.execute), else None
    if execute != "none":  # what every executor is told about the network, the data and training
        plan = executor.make_plan(config, len(devices))
        run_kw = dict(loss_name=t_cfg.loss, num_classes=dataset.num_classes,
                      encode_fn=lambda x, k: _time_major(x, config.data.encoding, num_steps, k, dataset.is_temporal),
                      batch_size=t_cfg.batch_size, num_steps=num_steps, input_shape=dataset.input_shape)
        run_tx = optimizer_lib.make_base_optimizer(t_cfg, total_steps)
        binary_input = config.data.encoding == "rate" and not dataset.is_temporal
    if execute in ("gpipe", "1f1b"):  # one program per stage and action, messages point to point (train/async_executor.py)
        runner = async_executor.AsyncExecutor(model, plan, run_tx, binary_input=binary_input, devices=devices,
                                              transport_factory=transport.for_jax_distributed,
                                              compiler_options=options, **run_kw)
        state = runner.init(params)
        micro = f", {plan.microbatches} micro-batch(es)" if execute == "gpipe" else ""
        log(f"pipeline {plan.mode} (asynchronous): stages {list(plan.stages)} x {plan.data} data-parallel{micro}")
    elif execute == "spikepipe":  # the SpikePipe schedule's tasks on its processors (train/task_executor.py)
        schedule, sched_delays = task_executor.config_schedule(config, plan.processors)
        runner = task_executor.TaskExecutor(model, schedule, sched_delays, run_tx, devices=devices,
                                            binary_input=binary_input,
                                            transport_factory=transport.for_jax_distributed, **run_kw)
        state = runner.init(params)
        placement = ", ".join(f"{p.task}@{p.processor}" for p in sorted(schedule.placements, key=lambda p: p.task))
        log(f"pipeline spikepipe: {plan.processors} processor(s), period {schedule.period} cycles, "
            f"delays {sched_delays}; {placement}")
    elif simulate == "none":
        tx, params_for_gradient = optimizer_lib.make_optimizer(config, model, total_steps=total_steps)
        state = TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))
        step_fn = make_train_step(model, tx, params_for_gradient=params_for_gradient, **common)
    else:  # faithful pipeline simulation (per-layer weight versions) instead of the buffer model
        tx = optimizer_lib.make_base_optimizer(t_cfg, total_steps)
        delays = pipeline_lib.config_delays(config, model.num_layers)
        state = pipesim.init_state(params, tx.init(params), delays, [i.name for i in model.infos])
        step_fn = pipesim.make_train_step(
            model, tx, delays=delays, mode=simulate,
            loss_fn_from_output=lambda out, y: losses.compute_loss(t_cfg.loss, out, y, dataset.num_classes),
            encode_fn=lambda x, k: _time_major(x, config.data.encoding, num_steps, k, dataset.is_temporal))
    resumed_from = 0
    is_async = isinstance(runner, async_executor.AsyncExecutor)
    is_tasks = isinstance(runner, task_executor.TaskExecutor)
    if is_async:
        restored = runner.restore_latest(async_dir, state, warn=logging.warning)
    elif is_tasks:
        restored = runner.restore_latest(tasks_dir, state, warn=logging.warning)
    else:
        restored = checkpoint.restore_latest(ckpt_path, state, warn=logging.warning)
    if restored is not None:
        state, path = restored
        resumed_from = int(state["fed"] if is_tasks else state.step)
        log(f"resumed from {path} at step {resumed_from}")
    if runner is None and jax.process_count() > 1:
        state = jax.device_get(state)  # host values, the same in every process, onto the global mesh
    if not is_tasks:
        state = runner.place(state) if runner else jax.device_put(state, replicated)
        state = jax.block_until_ready(state)
    if is_async or is_tasks:  # host arrays, the same in every process
        params_of = lambda st: jax.device_put(runner.params(st), replicated)
    else:
        params_of = runner.params if runner else (lambda st: st.params)

    def save_checkpoint(st):
        """Writes ``st``; returns the state to go on with (the asynchronous executor's holds the
        messages it waited for to save them)."""
        if is_async:  # every process writes its own stages
            return runner.save(async_dir, st)
        if is_tasks:  # every process writes its own tasks' state
            return runner.save(tasks_dir, st)
        _save(checkpoint.save_rotating, ckpt_path, st, writer)
        return st

    metrics_log = _Metrics(os.path.join(workdir, "metrics.jsonl"), resumed_from) if writer else _NoMetrics()

    train_step = runner.step if runner else jax.jit(step_fn, donate_argnums=(0,), compiler_options=options)
    eval_step = jax.jit(make_eval_step(model, **common), out_shardings=replicated, compiler_options=options)
    # the temporary buffer of one train / eval step per device: runtime.make_room before each
    # step (0: unknown, not called)
    train_temp = eval_temp = 0
    if resumed_from < total_steps and runner is None:
        # compile both steps before the first one and give the compiler's freed memory back, so
        # that the step buffers are not placed above it and the evaluation's compile does not
        # split the free training buffer (runtime.release_free_memory)
        def spec(a, n):
            return jax.ShapeDtypeStruct((n,) + a.shape[1:], a.dtype, sharding=data_sharding)

        eb = max(len(devices), t_cfg.eval_batch_size - t_cfg.eval_batch_size % len(devices))  # as evaluate()
        lowered = [train_step.lower(state, spec(dataset.train_x, t_cfg.batch_size),
                                    spec(dataset.train_y, t_cfg.batch_size), train_key),
                   eval_step.lower(state.params, spec(dataset.test_x, eb), spec(dataset.test_y, eb),
                                   spec(np.zeros(1, np.float32), eb), eval_key)]
        # the two compiles side by side (XLA compiles without the GIL, each on one thread)
        with concurrent.futures.ThreadPoolExecutor(len(lowered)) as pool:
            compiled = list(pool.map(lambda lo: lo.compile(), lowered))
        runtime.release_free_memory()
        if jax.default_backend() == "cpu":
            train_temp, eval_temp = (_temp_bytes(c) for c in compiled)

    log(f"training {total_steps} steps ({t_cfg.epochs} epochs x {steps_per_epoch}), "
        f"batch {t_cfg.batch_size}, T={num_steps}, {len(devices)} device(s), {model.num_layers} layers")
    step = resumed_from
    t_start = time.perf_counter()
    window_t, window_n, window, eval_s = time.perf_counter(), 0, [], 0.0
    test_acc = test_loss = float("nan")
    while step < total_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        for xb, yb in data_lib.iterate_batches(dataset.train_x, dataset.train_y, t_cfg.batch_size,
                                               rng=np.random.default_rng([config.seed, epoch]), start=offset):
            # the batch on the device before the step: with the synchronous dispatch of
            # runtime.configure_allocator the step then runs inline and frees its temporary
            # buffer before the next step allocates one (a heap that stays at one buffer)
            batch = ((xb, yb) if is_async or is_tasks
                     else jax.block_until_ready(jax.device_put((xb, yb), data_sharding)))
            # buffers of the step that would land in new memory: free pages given back first
            runtime.make_room(train_temp, count=n_local)
            state, m = train_step(state, *batch, train_key)
            step += 1
            if runner and step == total_steps:  # 1F1B: finish the batches still in flight
                state, drained = runner.drain(state)
                if drained is not None:
                    window.append(drained)
            window.append(m)
            window_n += len(yb)
            if step % t_cfg.log_every_steps == 0 or step == total_steps:
                loss, acc, finished = _window_means(window)
                if (finished and not math.isfinite(loss)) or not all(bool(w["finite"]) for w in window):
                    raise FloatingPointError(f"loss or gradients became non-finite (loss {loss}) by step {step} "
                                             f"(epoch {epoch}); "
                                             f"lower train.learning_rate? no checkpoint was written past step "
                                             f"{step - len(window)}")
                dt = time.perf_counter() - window_t - eval_s
                rate = window_n / dt if dt > 0 else float("nan")
                log(f"step {step}/{total_steps} epoch {epoch} loss {loss:.4f} acc {acc:.3f} "
                    f"{rate:.0f} samples/s")
                metrics_log.write({"step": step, "epoch": epoch, "train_loss": loss,
                                   "train_accuracy": acc, "samples_per_s": rate})
                window_t, window_n, window, eval_s = time.perf_counter(), 0, [], 0.0
            if step % t_cfg.checkpoint_every_steps == 0 and step < total_steps:
                state = save_checkpoint(state)
        # end of epoch: evaluate, checkpoint (time excluded from samples/s)
        eval_t0 = time.perf_counter()
        test_acc, test_loss = evaluate(eval_step, params_of(state), dataset.test_x, dataset.test_y,
                                       batch_size=t_cfg.eval_batch_size, key=eval_key,
                                       data_sharding=data_sharding, temp_bytes=eval_temp)
        if not math.isfinite(test_loss):
            raise FloatingPointError(f"test loss is {test_loss} after epoch {epoch}")
        log(f"epoch {epoch} test_accuracy {test_acc:.4f} test_loss {test_loss:.4f}")
        metrics_log.write({"step": step, "epoch": epoch, "test_accuracy": test_acc, "test_loss": test_loss})
        state = save_checkpoint(state)
        eval_s += time.perf_counter() - eval_t0

    if resumed_from >= total_steps:  # the run had already finished: re-evaluate for the summary
        test_acc, test_loss = evaluate(eval_step, params_of(state), dataset.test_x, dataset.test_y,
                                       batch_size=t_cfg.eval_batch_size, key=eval_key,
                                       data_sharding=data_sharding)
    summary = {"final": True, "step": step, "test_accuracy": test_acc, "test_loss": test_loss,
               "wall_s": time.perf_counter() - t_start, "resumed_from": resumed_from,
               "num_devices": len(devices)}
    metrics_log.write(summary)
    _save(checkpoint.save, os.path.join(workdir, "params.msgpack"), params_of(state), writer)
    return summary

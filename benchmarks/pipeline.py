"""Pipeline executor speed: S stages on S devices against one device, measured and predicted.

    .venv/bin/python -m benchmarks.pipeline [--nets=balanced4] [--modes=1f1b,gpipe] [--stages=2]

One JSON line per (mode, net): ``{"mode", "net", "stages", "samples_per_s", "measured_speedup",
"predicted_speedup", "bytes_per_iteration", ...}``. Each measurement is a worker process:

* ``baseline``: the unpipelined train step (``pipeline.execute="none"``) on one device;
* ``<mode>``: ``1f1b`` and ``gpipe`` are what ``scripts.train --config.pipeline.execute=1f1b``
  (``gpipe``) runs, the asynchronous executor (``train.async_executor.AsyncExecutor``: one program
  per stage and action, messages point to point, over TCP between processes); ``1f1b_ticks`` and
  ``gpipe_ticks`` the tick-synchronous ``train.executor.Executor`` (one SPMD program, a barrier
  after every tick), with ``--stages`` devices on the stage axis;

every device on one core: each worker process is pinned to its cores (``sched_setaffinity``
before XLA starts; ``--xla_cpu_multi_thread_eigen=false`` alone is not enough, XLA:CPU's YNNPACK
fusions have their own thread pool sized by the affinity), the baseline to one core, and by
default (``--processes``) each stage is its own process on its own core, joined by
``jax.distributed``. So "S devices" means S cores, and the baseline gets one. A step is timed from dispatch to its
result; the median of ``--steps`` steps after two warm-up steps.

Prediction: the baseline worker also times each stage alone on one device, as the executor
runs it on one tick's batch: F = the stage's ``jax.vjp`` (forward, residuals kept), B = applying
the vjp to a cotangent. For ``1f1b`` (asynchronous) a full pipeline's step is the slowest
stage's F + B, for ``gpipe`` the span of one step's M micro-batches through the stages
(``async_executor.predicted_step_time``, the timeline of their per-stage orders); for the tick-synchronous modes
``executor.predicted_step_time`` gives each tick of the tick table the duration of its slowest
device, and one step the sum of its ticks. ``bytes_per_iteration`` is
what the ``ppermute`` calls move per training step (both directions, every tick, ``uint8`` spikes and
``float32`` gradients, padded to the widest stage boundary), next to ``useful_bytes`` (each
boundary's spikes once at 1 bit, its gradient once at 32, the cost model's default widths:
``schedule.comm.bytes_communicated`` of the same placement, ``executor.boundary_bytes``).

Repeats: the baseline and then every mode are measured ``--repeats`` times in turn (3 by default),
so that the VM's drift between runs (+-10 %) reaches the baseline and the pipelined runs alike;
a record holds the medians over the repeats of the speed-ups, the ratio and the times, and each
repeat's own values under ``repeats`` (stderr shows every repeat's record as it is made).

``balanced4`` (built here) is 1280-1024-1024-1024-1024-10 (random inputs of 32 x 40 pixels, rate
coded) with a membrane readout: four dense LIF layers whose two halves cost the same, the
cut after layer 1 that the cost model chooses. The first layer has no input gradient to compute
(``BG0``), so with 784 inputs (sessions 8-11) it cost ~0.7 of the others and the half holding it
~0.85 of the other half on one core (task times 0.69 / 0.81 s); 1280 inputs make up for the
missing ``BG0`` (0.70 / 0.76 s). Other names are ``configs/<net>.py``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

_CPUS = os.cpu_count() or 1
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_list("nets", ["balanced4"], "Networks: balanced4 or config names.")
flags.DEFINE_list("modes", ["1f1b", "spikepipe", "gpipe", "1f1b_ticks", "gpipe_ticks"], "Executor modes: 1f1b "
                  "and gpipe (asynchronous, the command line's), spikepipe (the SpikePipe schedule task by task), "
                  "1f1b_ticks and gpipe_ticks (tick-synchronous).")
flags.DEFINE_integer("stages", 2, "Stages (devices on the stage axis).")
flags.DEFINE_integer("microbatches", 4, "GPipe's micro-batches.")
flags.DEFINE_float("link_bytes_per_us", 1000.0, "spikepipe: the link between processors the scheduler plans "
                   "with (bytes per microsecond; 0: ideal).")
flags.DEFINE_float("comm_budget", 1.0, "spikepipe: bytes per iteration the schedule may move between processors, "
                   "as a multiple of standard pipelining's (1F1B's contiguous stages, the cost model's bytes); 0: "
                   "no budget.")
flags.DEFINE_integer("batch", 128, "Batch size.")
flags.DEFINE_integer("num_steps", 25, "T.")
flags.DEFINE_integer("steps", 12, "Timed steps per worker.")
flags.DEFINE_integer("repeats", 3, "Measure the baseline and every mode this many times, in turn; a record's "
                     "speed-ups and times are the medians over the repeats (this VM drifts +-10 % between runs).",
                     lower_bound=1)
flags.DEFINE_bool("processes", True, "Run the pipelined workers as one process per stage (jax.distributed, one "
                  "device and one core each); --noprocesses: one process with --stages fake devices on "
                  "--stages cores (they share one XLA:CPU thread pool).")
flags.DEFINE_string("out", "", "Also write the JSON lines here.")
flags.DEFINE_string("worker", "", "(internal) run one worker on this JSON description.")
FLAGS = flags.FLAGS


def _config(net: str, batch: int, num_steps: int, comm_budget: float = 0.0):
    from configs import base
    from spikepipe_jax.experiments import load_config

    if net == "balanced4":
        c = base.make_config(layers=[dict(kind="dense", features=1024) for _ in range(4)] + [
            dict(kind="dense", features=10)], input_shape=(32, 40, 1), num_steps=num_steps,
            readout="membrane", loss="ce_mem", batch_size=batch)
    else:
        c = load_config(net)
    c.train.batch_size, c.model.num_steps = batch, num_steps
    c.model.native = "off"
    c.pipeline.comm_budget = comm_budget  # spikepipe's schedule (task_executor.config_schedule)
    return c


def _median_step(step, steps: int) -> float:
    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def worker(desc: dict) -> dict:
    os.sched_setaffinity(0, set(desc["cpus"]))  # before XLA sizes its thread pools
    if desc.get("coordinator"):  # one process per stage: join the others before any computation
        from spikepipe_jax import runtime
        runtime.initialize_distributed(desc["coordinator"], desc["stages"], desc["process_id"])
    import jax
    import jax.numpy as jnp
    import numpy as np

    from spikepipe_jax import snn
    from spikepipe_jax.train import executor, loop, optimizer as optimizer_lib
    from spikepipe_jax.train.step import TrainState

    cfg = _config(desc["net"], desc["batch"], desc["num_steps"], desc.get("comm_budget", 0.0))
    mode, s_count = desc["mode"], desc["stages"]
    cfg.pipeline.execute, cfg.pipeline.stages = mode.removesuffix("_ticks"), s_count
    cfg.pipeline.microbatches = desc["microbatches"] if mode.startswith("gpipe") else 1
    model = snn.model_from_config(cfg.model)._replace(native="off")
    t, b = cfg.model.num_steps, cfg.train.batch_size
    tx = optimizer_lib.make_base_optimizer(cfg.train, 1000)
    encode = lambda x, k: snn.encode("rate", x, t, k)
    params = snn.init_params(jax.random.key(0), model)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((b,) + tuple(cfg.model.input_shape), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, 10, b).astype(np.int32))
    key = jax.random.key(1)
    out = {"devices": jax.device_count()}
    if mode == "none":
        step_fn = jax.jit(loop.make_train_step(model, tx, loss_name=cfg.train.loss, encoding="rate",
                                               num_steps=t, num_classes=10), donate_argnums=(0,))
        box = [TrainState(jax.tree.map(jnp.copy, params), tx.init(params), jnp.zeros((), jnp.int32))]

        def step():
            box[0], m = step_fn(box[0], x, y, key)
            jax.block_until_ready(m["loss"])
        out["step_s"] = _median_step(step, desc["steps"])
        out["stage_times"] = _stage_times(desc, cfg, model, params, x, y, key)
        return out
    plan = executor.make_plan(cfg, s_count)
    if mode == "spikepipe":  # the SpikePipe schedule of the measured task times, task by task
        from spikepipe_jax.schedule import comm
        from spikepipe_jax.train import task_executor, transport
        sched, delays = task_executor.config_schedule(cfg, s_count, desc["durations"], _link(desc))
        tx_ = task_executor.TaskExecutor(
            model, sched, delays, tx, loss_name=cfg.train.loss, num_classes=10, encode_fn=encode, binary_input=True,
            batch_size=b, num_steps=t, input_shape=cfg.model.input_shape, devices=jax.devices()[:s_count],
            transport_factory=transport.for_jax_distributed, profile=desc.get("profile", False))
        tbox = [tx_.init(params)]
        xh, yh = np.asarray(x), np.asarray(y)

        def tstep():
            tbox[0], _ = tx_.step(tbox[0], xh, yh, key)
            jax.block_until_ready(tbox[0]["kept"])
        for _ in range(2 * s_count + max(delays)):  # fill the pipeline before timing
            tstep()
        out["step_s"] = _median_step(tstep, desc["steps"])
        tbox[0], _ = tx_.drain(tbox[0])
        tx_.params(tbox[0])  # every process finishes (a collective) before any exits
        out["stages"] = sorted((p.task, p.processor) for p in sched.placements)
        out["delays"] = delays
        if tx_.profile:  # each process's tasks' times in the pipeline (less their waits), gathered
            from jax.experimental import multihost_utils
            import statistics as stats
            mine = {n: stats.median(t[2:]) for n, t in tx_.task_times.items()}
            names = sorted(p.task for p in sched.placements)
            vec = np.asarray([mine.get(n, 0.0) for n in names])
            got = np.asarray(multihost_utils.process_allgather(vec)).reshape(-1, len(names)).sum(0)
            out["pipeline_task_s"] = dict(zip(names, got.tolist()))
        out["bytes_per_iteration"] = sum(tx_.bytes_per_iteration(params).values())
        out["useful_bytes"] = comm.bytes_communicated(sched.graph, sched.processor_of)
        return out
    if mode in ("1f1b", "gpipe"):  # the asynchronous executor: host batches, every process the same
        from spikepipe_jax.train import async_executor, transport
        ax = async_executor.AsyncExecutor(
            model, plan, tx, loss_name=cfg.train.loss, num_classes=10, encode_fn=encode, binary_input=True,
            batch_size=b, num_steps=t, input_shape=cfg.model.input_shape, devices=jax.devices()[:s_count],
            transport_factory=transport.for_jax_distributed)
        abox = [ax.init(params)]
        xh, yh = np.asarray(x), np.asarray(y)

        def astep():
            abox[0], _ = ax.step(abox[0], xh, yh, key)
            jax.block_until_ready([st.params for st in abox[0].stages.values()])
        for _ in range(2 * s_count):  # fill the pipeline before timing
            astep()
        out["step_s"] = _median_step(astep, desc["steps"])
        out["stages"] = [list(st) for st in plan.stages]
        out["bytes_per_iteration"] = ax.bytes_per_step()
        out["useful_bytes"] = executor.boundary_bytes(ax.model, plan.stages, b, t)
        return out
    ex = executor.Executor(model, plan, tx, loss_name=cfg.train.loss, num_classes=10, encode_fn=encode,
                           binary_input=True, batch_size=b, num_steps=t, input_shape=cfg.model.input_shape,
                           mesh=executor.make_mesh(plan, jax.devices()[:s_count]))
    box = [ex.init(params)]
    if desc.get("coordinator"):  # the same batch in every process, as one global array
        from jax.sharding import NamedSharding, PartitionSpec
        x, y = jax.device_put((np.asarray(x), np.asarray(y)), NamedSharding(ex.mesh, PartitionSpec()))

    def step():
        box[0], m = ex.step(box[0], x, y, key)
        jax.block_until_ready(m["loss"])
    out["step_s"] = _median_step(step, desc["steps"])
    out["stages"] = [list(st) for st in plan.stages]
    out["bytes_per_iteration"] = ex.bytes_per_step()
    out["useful_bytes"] = ex.useful_bytes_per_batch()
    return out


def _stage_times(desc, cfg, model, params, x, y, key) -> dict:
    """Per-stage F (``jax.vjp``) and B (applying it) times at every mode's batch per tick."""
    import jax
    import jax.numpy as jnp

    from spikepipe_jax import snn
    from spikepipe_jax.train import executor, losses

    res = {}
    for mode in desc["predict_modes"]:
        if mode == "spikepipe":
            res[mode] = _task_times(desc, cfg, model, params, x, y, key)
            continue
        c = cfg.copy_and_resolve_references()
        c.pipeline.execute, c.pipeline.stages = mode.removesuffix("_ticks"), desc["stages"]
        c.pipeline.microbatches = desc["microbatches"] if mode.startswith("gpipe") else 1
        plan = executor.make_plan(c, desc["stages"])
        mb = cfg.train.batch_size // plan.microbatches
        h = snn.encode("rate", x[:mb], cfg.model.num_steps, key)
        fwd, bwd = [], []
        for i, st in enumerate(plan.stages):
            last = i == len(plan.stages) - 1

            def fn(p, h, st=st, last=last):
                out = snn.apply_stage(p, model, h, st)
                return losses.compute_loss(cfg.train.loss, out, y[:mb], 10) if last else out

            f = jax.jit(lambda p, h, fn=fn: jax.vjp(fn, p, h))
            out, vjp = f(params, h)
            b = jax.jit(lambda vjp, ct: vjp(ct))
            ct = jnp.ones_like(out)
            fwd.append(_median_step(lambda: jax.block_until_ready(f(params, h)), desc["steps"]))
            bwd.append(_median_step(lambda: jax.block_until_ready(b(vjp, ct)), desc["steps"]))
            h = out
        if mode in ("1f1b", "gpipe"):
            from spikepipe_jax.train import async_executor  # the timeline of its per-stage order
            pred = async_executor.predicted_step_time(fwd, bwd, microbatches=plan.microbatches if mode == "gpipe" else 0)
        else:
            pred = executor.predicted_step_time(plan, fwd, bwd)
        res[mode] = {"forward_s": fwd, "backward_s": bwd, "predicted_step_s": pred}
    return res


def _link(desc: dict):
    from spikepipe_jax.schedule.comm import CommModel
    return CommModel(link_bytes_per_cycle=desc["link_bytes_per_us"])




def _task_times(desc, cfg, model, params, x, y, key) -> dict:
    """SpikePipe: each task's time alone on one device (the task executor's programs, the
    cost model's schedule run on one device with ``profile=True``: the median of the last
    ``--steps`` iterations, after as many as the spikepipe worker runs before timing, scaled so
    that they add up to the median iteration of the same executor run without waiting for each
    task), then the project's scheduler on those durations (microseconds): the
    schedule the ``spikepipe`` worker runs, and its period the predicted step time."""
    import statistics as stats

    import jax
    import numpy as np

    from spikepipe_jax import snn
    from spikepipe_jax.train import optimizer as optimizer_lib, task_executor

    s_count, t, b = desc["stages"], cfg.model.num_steps, cfg.train.batch_size
    sched, delays = task_executor.config_schedule(cfg, s_count)
    ex = task_executor.TaskExecutor(
        model, sched, delays, optimizer_lib.make_base_optimizer(cfg.train, 1000), loss_name=cfg.train.loss,
        num_classes=10, encode_fn=lambda x_, k: snn.encode("rate", x_, t, k), binary_input=True, batch_size=b,
        num_steps=t, input_shape=cfg.model.input_shape, devices=[jax.devices()[0]] * s_count, profile=True)
    st = ex.init(params)
    warm = 2 * s_count + max(delays) + 2  # as the spikepipe worker: the iterations in flight reach their steady state
    for _ in range(desc["steps"] + warm):
        st, _ = ex.step(st, np.asarray(x), np.asarray(y), key)
    profiled = {name: stats.median(times[-desc["steps"]:]) for name, times in ex.task_times.items()}
    # waiting for every task adds the dispatch of the next one to its time (a run does not wait:
    # it dispatches while the device computes), so the profile gives each task's share and an
    # unprofiled run of the same executor one iteration's time on the device
    ex.profile = False
    box = [st]

    def one():
        box[0], _ = ex.step(box[0], np.asarray(x), np.asarray(y), key)
        jax.block_until_ready(box[0]["kept"])
    iteration_s = _median_step(one, desc["steps"])
    scale = iteration_s / sum(profiled.values())
    task_s = {name: t_ * scale for name, t_ in profiled.items()}
    durations = {name: max(1, round(s_ * 1e6)) for name, s_ in task_s.items()}
    sched, delays = task_executor.config_schedule(cfg, s_count, durations, _link(desc))
    return {"task_s": task_s, "durations": durations, "predicted_step_s": sched.period / 1e6,
            "one_device_s": sum(task_s.values()), "profiled_s": sum(profiled.values()), "delays": delays,
            "placement": {p.task: p.processor for p in sched.placements}}


def _run_worker(desc: dict, devices: int, processes: int = 1) -> dict:
    """One worker process with ``devices`` fake devices, or ``processes`` processes of one device
    each joined by ``jax.distributed`` (process 0's result is returned)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} --xla_cpu_multi_thread_eigen=false")
    descs = [desc]
    if processes > 1:
        import socket
        with socket.socket() as sock:
            sock.bind(("localhost", 0))
            port = sock.getsockname()[1]
        descs = [dict(desc, coordinator=f"localhost:{port}", process_id=i, cpus=[i % _CPUS]) for i in range(processes)]
    else:
        descs = [dict(desc, cpus=list(range(min(devices, _CPUS))))]
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.pipeline", f"--worker={json.dumps(d)}"],
                              cwd=_REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for d in descs]
    try:
        outs = [p.communicate(timeout=3600) for p in procs]
    finally:  # a worker left waiting for another (a failure) must not outlive the benchmark
        for p in procs:
            p.kill()
    for p, (out, err) in zip(procs, outs):
        if p.returncode != 0:
            raise RuntimeError(f"worker {desc['mode']} failed:\n{err[-3000:]}")
    return json.loads(outs[0][0].strip().splitlines()[-1])


def _record(mode: str, net: str, base: dict, r: dict) -> dict:
    """One repeat's record of ``mode``: its worker's result ``r`` against the baseline ``base``."""
    pred = base["stage_times"][mode]["predicted_step_s"]
    return {"mode": mode, "net": net, "stages": FLAGS.stages,
            "samples_per_s": round(FLAGS.batch / r["step_s"], 1),
            "measured_speedup": round(base["step_s"] / r["step_s"], 3),
            "predicted_speedup": round(base["step_s"] / pred, 3),
            "measured_over_predicted": round(pred / r["step_s"], 3),
            "bytes_per_iteration": r["bytes_per_iteration"], "useful_bytes": r["useful_bytes"],
            "step_s": round(r["step_s"], 5), "baseline_step_s": round(base["step_s"], 5),
            "predicted_step_s": round(pred, 5), "stage_split": r["stages"],
            **({"task_s": base["stage_times"][mode]["task_s"], "delays": r["delays"],
                "tasks_one_device_s": round(base["stage_times"][mode]["one_device_s"], 5),
                "tasks_profiled_s": round(base["stage_times"][mode]["profiled_s"], 5)}
               if mode == "spikepipe" else
               {"stage_forward_s": base["stage_times"][mode]["forward_s"],
                "stage_backward_s": base["stage_times"][mode]["backward_s"]}),
            "microbatches": FLAGS.microbatches if mode.startswith("gpipe") else 1,
            "batch": FLAGS.batch, "num_steps": FLAGS.num_steps, "processes": FLAGS.stages if FLAGS.processes else 1,
            "loadavg": os.getloadavg()[0]}


_PER_REPEAT = ("measured_speedup", "predicted_speedup", "measured_over_predicted", "step_s", "baseline_step_s",
               "predicted_step_s")


def summarize(recs: list) -> dict:
    """The repeats of one (mode, net) as one record: the ratios and times are the medians over the
    repeats (each repeat's own values in ``repeats``), everything else the median repeat's
    (by measured speed-up)."""
    order = sorted(recs, key=lambda r: r["measured_speedup"])
    out = dict(order[(len(order) - 1) // 2])
    for k in _PER_REPEAT:
        out[k] = round(statistics.median(r[k] for r in recs), 5 if k.endswith("_s") else 3)
    out["samples_per_s"] = round(FLAGS.batch / out["step_s"], 1)
    out["repeats"] = [{k: r[k] for k in _PER_REPEAT} for r in recs]
    return out


def main(argv):
    del argv
    if FLAGS.worker:
        print(json.dumps(worker(json.loads(FLAGS.worker))))
        return
    lines = []
    for net in FLAGS.nets:
        common = dict(net=net, batch=FLAGS.batch, num_steps=FLAGS.num_steps, steps=FLAGS.steps,
                      stages=FLAGS.stages, microbatches=FLAGS.microbatches,
                      link_bytes_per_us=FLAGS.link_bytes_per_us, comm_budget=FLAGS.comm_budget)
        per_mode = {mode: [] for mode in FLAGS.modes}
        for _ in range(FLAGS.repeats):  # baseline next to the pipelined runs, so drift hits both
            base = _run_worker(dict(common, mode="none", predict_modes=FLAGS.modes), 1)
            for mode in FLAGS.modes:
                desc = dict(common, mode=mode)
                if mode == "spikepipe":  # the schedule of the task times measured on one device
                    desc["durations"] = base["stage_times"][mode]["durations"]
                r = (_run_worker(desc, 1, processes=FLAGS.stages) if FLAGS.processes
                     else _run_worker(desc, FLAGS.stages))
                per_mode[mode].append(_record(mode, net, base, r))
                print(json.dumps(dict(per_mode[mode][-1], repeat=len(per_mode[mode]) - 1)), file=sys.stderr,
                      flush=True)
        for mode in FLAGS.modes:
            rec = summarize(per_mode[mode])
            print(json.dumps(rec), flush=True)
            lines.append(json.dumps(rec))
    if FLAGS.out:
        from spikepipe_jax.io import atomic_write_text
        atomic_write_text(FLAGS.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    app.run(main)

r"""A SpikePipe schedule executed task by task: ``F``, ``BL``, ``BG`` and ``W`` of every layer on the
processor the scheduler chose, in its order (each processor one device, in one or several processes).

The training graph of :mod:`spikepipe_jax.schedule.training_graph` (``split_backward=True``)
has four tasks per layer ``l``; here each is one jitted program on the device of its processor:

* ``F_l`` (iteration ``i``): the layer's synapse (:func:`spikepipe_jax.snn.layer_currents`) and
  its LIF recurrence (:func:`spikepipe_jax.snn.layer_neurons`; the loss too for the output
  layer) at weight version ``max(0, i - d_l)``; keeps its input, the weights it used (PipeDream's
  weight stashing) and the LIF recurrence's vjp;
* ``BL_l``: that vjp applied to the gradient of the layer's spikes (from ``BG_{l+1}``; the
  loss's cotangent 1 for the output layer): the gradient of the layer's currents, and of its
  bias (and beta);
* ``BG_l`` (``l > 0``): the synapse's vjp in its input at the kept weights: the gradient of the
  previous layer's spikes;
* ``W_l``: the synapse's vjp in its weights at the kept input, then the layer's optimiser
  update, which makes weight version ``i + 1``.

``d_l`` is what :func:`spikepipe_jax.schedule.delays_for` reads from the schedule's timeline
(the updates of layer ``l`` that end after ``F_l(i)`` starts), so the run equals the single-device
simulator with weight stashing at those delays (``pipeline.simulate="stash"``,
``tests/test_task_executor.py``). Tasks run in the order of their start times in the unrolled
schedule (``(i + offset) * period + start``), which respects every dependency of a valid
schedule; a processor therefore runs its own tasks in the schedule's order. Delays that ask a
forward for weights its order has not made yet are refused before any work.

Values (``_VALUES``): each task's outputs are kept for the readers on its own process and sent
once to every other process with a reader; a reader takes a value from what is kept, or waits
for it from its producer's process. Between devices of one process a value is a
``jax.device_put``; between processes it goes over TCP
(:class:`spikepipe_jax.train.transport.SocketTransport`): spikes bit-packed (8 to a byte),
the rest (float32 activations and gradients, the LIF vjp's residuals, weights) as they are. The
weights iteration ``i`` uses are one value made by ``W_l(i - d_l - 1)`` and read by ``F_l(i)``,
``BG_l(i)`` and ``W_l(i)``. Every process runs its own tasks in the same global order, and a
task only waits for values made earlier in that order, so several processes cannot deadlock;
process 0 receives each iteration's ``[loss, correct]`` at the iteration's end (after its last
task anywhere) and reports it. :meth:`TaskExecutor.bytes_per_iteration` counts the bytes that
cross processors (tested equal to what the processes send).

Checkpoints: one file per process (``checkpoint_tasks/process_<i>.msgpack``); at a step
boundary the values in flight towards a process are those made before the step's horizon for
its tasks not run yet: ``save`` receives them into the state it writes, so a resumed run
continues exactly.

What of a schedule is executed: the placement and order of every task of every layer, and the
delays its timeline implies. What is not: the durations and the period (tasks take as long as
they take on the device, and start when their inputs are there, not at their scheduled times),
split tasks (only schedules without splits: ``info["split"]`` empty), and the link model (the
messages take what TCP takes).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from spikepipe_jax import snn
from spikepipe_jax.io import atomic_write_bytes
from spikepipe_jax.train import checkpoint, losses

KINDS = ("F", "BL", "BG", "W")
CHECKPOINT_DIR = "checkpoint_tasks"  # in the run's workdir: one file per process (the previous one kept beside it)


def standard_bytes(config, processors: int) -> int:
    """Bytes per iteration standard pipelining moves for this config's network on
    ``processors`` processors: 1F1B's contiguous stages (``min(processors, layers)``, balanced by
    the cost model), each boundary's spikes at 1 bit and gradient at 32
    (:func:`spikepipe_jax.train.executor.boundary_bytes`)."""
    from spikepipe_jax.train import executor
    from spikepipe_jax.train import stages as stages_lib

    c = config.copy_and_resolve_references()
    c.pipeline.stages = min(processors, len(config.model.layers))
    stages = stages_lib.config_stages(c)
    return executor.boundary_bytes(snn.model_from_config(config.model), stages, config.train.batch_size,
                                   config.model.num_steps)


def config_schedule(config, processors: int, durations: Optional[Mapping[str, int]] = None, comm=None,
                    comm_budget: Optional[float] = None):
    """The SpikePipe schedule ``scripts.schedule`` makes for this config's network on
    ``processors`` processors (the cost model's tasks with ``config.hardware``, LayerPipe2's
    delays on the update loops, the backward split into LIF and GEMM parts, ideal links, no task
    splitting), validated, and the delays its timeline implies.

    ``durations``: ``{"F0": d, "BL0": d, "W0": d, "BG1": d, ...}``, every task's duration (e.g.
    microseconds measured on one device: :attr:`TaskExecutor.task_times`) in place of the cost
    model's cycles; the schedule's period is then in those units. ``comm``: the link between
    processors (:class:`spikepipe_jax.schedule.comm.CommModel`, in the same units; default ideal).
    ``comm_budget``: the most bytes per iteration the schedule may move between processors
    (``policies.spikepipe_schedule``'s budget); None: ``config.pipeline.comm_budget`` times
    :func:`standard_bytes` (0 there: no budget)."""
    from spikepipe_jax.hardware.mapping import training_tasks_from_config
    from spikepipe_jax.schedule import delays_for, validate
    from spikepipe_jax.schedule.policies import spikepipe_schedule
    from spikepipe_jax.schedule.retiming import layerpipe_delays
    from spikepipe_jax.schedule.training_graph import graph_from_tasks

    tasks = training_tasks_from_config(config)
    if durations is not None:
        tasks = [_measured(t, durations) for t in tasks]
    g = graph_from_tasks(tasks, delays=layerpipe_delays(len(tasks) // 3), split_backward=True)
    options = {} if comm is None else {"comm": comm}
    if comm_budget is None and config.pipeline.get("comm_budget", 0.0):
        comm_budget = config.pipeline.comm_budget * standard_bytes(config, processors)
    if comm_budget is not None:
        options["comm_budget"] = comm_budget
    sched = spikepipe_schedule(g, processors, **options)
    validate(sched)  # raises naming the violations
    return sched, [int(d) for d in delays_for(sched)]


def _measured(task: dict, durations: Mapping[str, int]) -> dict:
    """A cost-model task with measured durations (B: BL + BG, its LIF part BL)."""
    l, kind = task["layer"], task["kind"]
    try:
        if kind == "B":
            bl, bg = int(durations[f"BL{l}"]), int(durations[f"BG{l}"]) if l > 0 else 0
            if bl < 1 or (l > 0 and bg < 1):
                raise ValueError(f"durations of BL{l} / BG{l} must be positive integers, got {bl} / {bg}")
            return dict(task, cycles=bl + bg, vector_cycles=bl, gemm_cycles=bg)
        d = int(durations[f"{kind}{l}"])
    except KeyError as e:
        raise ValueError(f"no measured duration for task {e.args[0]} (durations for {sorted(durations)})") from None
    if d < 1:
        raise ValueError(f"duration of {kind}{l} must be a positive integer, got {d}")
    return dict(task, cycles=d, gemm_cycles=d, vector_cycles=0)


def _task_kind(name: str) -> tuple[str, int]:
    for kind in ("BL", "BG", "F", "W"):
        if name.startswith(kind) and name[len(kind):].isdigit():
            return kind, int(name[len(kind):])
    raise ValueError(f"task {name!r} is not an unsplit F/BL/BG/W task of one layer (split schedules are not "
                     f"executed)")


# The values tasks pass on: name -> (producer kind, layer offset of the producer, reader kinds).
# A value ("name", l, i) of layer l and iteration i is made by <producer kind>_{l + offset}(i) and
# read by <reader kind>_l(i), except: ("spk", l, i), layer l's spikes, is read by F_{l+1}(i);
# ("g", l, i), the gradient of layer l's spikes, is made by BG_{l+1}(i); ("p", l, i), the weights
# iteration i uses (version max(0, i - d_l)), is made by W_l(i - d_l - 1) (the initial weights for
# i <= d_l); ("met", L - 1, i), iteration i's [loss, correct], is read at the iteration's end by
# process 0, which reports it.
_VALUES = {
    "spk": ("F", 0, ()),
    "x": ("F", 0, ("BG", "W")),
    "p": ("W", 0, ("F", "BG", "W")),
    "vjp": ("F", 0, ("BL",)),
    "dcur": ("BL", 0, ("BG", "W")),
    "dneuron": ("BL", 0, ("W",)),
    "g": ("BG", 1, ("BL",)),
    "met": ("F", 0, ("END",)),
}
_END = "END"  # the end of an iteration (after its last task anywhere): metrics, clean-up


class TaskExecutor:
    """Runs a SpikePipe schedule's tasks (module docstring). ``step`` feeds one mini-batch and runs
    every task of this process that starts before the next mini-batch's first one; ``drain``
    finishes the rest. With several processes each runs the tasks of its processors (devices)
    and the values that cross processes go through ``transport_factory(peers)``
    (:class:`spikepipe_jax.train.transport.SocketTransport`)."""

    def __init__(self, model: snn.ModelDef, schedule, delays: Sequence[int], tx: optax.GradientTransformation, *,
                 loss_name: str, num_classes: int, encode_fn: Callable, devices: Optional[Sequence[Any]] = None,
                 batch_size: int = 0, num_steps: int = 0, input_shape: Sequence[int] = (),
                 binary_input: bool = False, transport_factory: Optional[Callable] = None,
                 profile: bool = False):
        self.model = model._replace(native="off")
        # batch_size, num_steps, input_shape: the shapes of values received from other processes
        # and of a restored checkpoint's kept vjps
        self.batch_size, self.num_steps, self.input_shape = batch_size, num_steps, tuple(input_shape)
        self.binary_input = binary_input  # the encoder's output is exact 0/1 (sent bit-packed)
        self.tx, self.loss_name, self.num_classes, self.encode_fn = tx, loss_name, num_classes, encode_fn
        self.delays = [int(d) for d in delays]
        self.names = [info.name for info in model.infos]
        n_layers = model.num_layers
        if len(self.delays) != n_layers:
            raise ValueError(f"{len(self.delays)} delays for {n_layers} layers")
        self.period = schedule.period
        self.tasks = []  # (start within the unrolled schedule for iteration 0, kind, layer, processor)
        for p in schedule.placements:
            kind, layer = _task_kind(p.task)
            if not 0 <= layer < n_layers:
                raise ValueError(f"task {p.task!r}: no layer {layer} in a {n_layers}-layer network")
            self.tasks.append((p.iteration_offset * schedule.period + p.start, kind, layer, p.processor))
        have = {(k, l) for _, k, l, _ in self.tasks}
        want = {(k, l) for l in range(n_layers) for k in KINDS if not (k == "BG" and l == 0)}
        if have != want:
            raise ValueError(f"the schedule's tasks {sorted(have)} are not one F/BL/BG/W per layer "
                             f"(missing {sorted(want - have)})")
        devices = list(jax.devices() if devices is None else devices)
        if len(devices) < schedule.processors:
            raise ValueError(f"the schedule uses {schedule.processors} processors, {len(devices)} device(s) given")
        self.device = {(k, l): devices[proc] for _, k, l, proc in self.tasks}
        self.start = {(k, l): t0 for t0, k, l, _ in self.tasks}
        self.processor = {(k, l): proc for _, k, l, proc in self.tasks}
        self.process = {task: getattr(dev, "process_index", 0) for task, dev in self.device.items()}
        self.process[(_END, n_layers - 1)] = 0  # process 0 reports the metrics
        self.me = jax.process_index()
        self.tasks.sort()
        for l, d in enumerate(self.delays):  # F_l(i) reads the weights W_l(i - d_l - 1) makes: before it in the order
            w_key = (self.start[("W", l)], self.processor[("W", l)], "W", l, 0)
            f_key = (self.start[("F", l)] + (d + 1) * self.period, self.processor[("F", l)], "F", l, d + 1)
            if not w_key < f_key:
                raise ValueError(f"F{l} of iteration {d + 1} needs weight version 1, which W{l} makes later in the "
                                 f"schedule's order: delays {self.delays} do not match the schedule "
                                 f"(schedule.delays_for gives the ones that do)")
        self.end_start = max(t0 for t0, *_ in self.tasks)  # the end of iteration 0 (sorted after its tasks)
        self.local = [(t0, k, l, proc) for t0, k, l, proc in self.tasks if self.process[(k, l)] == self.me]
        self.local.append((self.end_start, _END, -1, schedule.processors))
        # a device of this process for each layer's weight versions (W's, else F's, else any)
        local_dev = jax.local_devices()[0]
        self.home = []
        for l in range(n_layers):
            devs = [self.device[(k, l)] for k in ("W", "F", "BG", "BL") if (k, l) in self.device
                    and self.process[(k, l)] == self.me]
            self.home.append(devs[0] if devs else local_dev)
        peers = {self.process[t] for t in self.device} | {0}
        self.transport = None
        if len(peers) > 1:
            if transport_factory is None:
                raise ValueError("a schedule whose processors are in several processes needs a transport "
                                 "(a jax.distributed run)")
            if not (batch_size and num_steps and self.input_shape):
                raise ValueError("several processes: batch_size, num_steps and input_shape are needed (the shapes "
                                 "of the values received)")
            self.transport = transport_factory(peers - {self.me})
        self.bytes_sent = 0  # bytes this process has sent to others (messages' payloads)
        # profile: wait for each task's results and record its wall time (seconds, per task name),
        # less the time it waited for values from other processes
        self.profile, self.task_times, self._waited = profile, {}, 0.0
        self._treedefs = {}
        self._f = [jax.jit(self._forward(l)) for l in range(n_layers)]
        self._bl = jax.jit(lambda vjp, g: vjp(g))
        self._bg = [jax.jit(self._input_grad(l)) for l in range(n_layers)]
        self._w = [jax.jit(self._weight_update(l)) for l in range(n_layers)]

    # ----- the programs ------------------------------------------------------------------------
    def _forward(self, l: int):
        model, last = self.model, l == self.model.num_layers - 1
        name = self.names[l]

        def f(p, x, y):
            cur = snn.layer_currents({name: p}, model, x, l)
            neuron_params = {k: v for k, v in p.items() if k != "w"}

            def neurons(c, q):
                out = snn.layer_neurons({name: dict(q, w=p["w"])}, model, c, l)
                if last:
                    return losses.compute_loss(self.loss_name, out, y, self.num_classes), out.logits
                return out
            out, vjp, *aux = jax.vjp(neurons, cur, neuron_params, has_aux=last)
            if last:
                correct = jnp.sum(jnp.argmax(aux[0], -1) == y).astype(jnp.float32)
                return jnp.stack([out, correct]), vjp
            return out, vjp
        return f

    def _input_grad(self, l: int):
        name = self.names[l]

        def bg(p, x, dcur):
            _, vjp = jax.vjp(lambda x_: snn.layer_currents({name: p}, self.model, x_, l), x)
            return vjp(dcur)[0]
        return bg

    def _weight_update(self, l: int):
        name = self.names[l]

        def w(p_latest, opt, p_used, x, dcur, dneuron):
            _, vjp = jax.vjp(lambda w_: snn.layer_currents({name: dict(p_used, w=w_)}, self.model, x, l),
                             p_used["w"])
            grads = dict(dneuron, w=vjp(dcur)[0])
            upd, opt = self.tx.update(grads, opt, p_latest)
            return optax.apply_updates(p_latest, upd), opt
        return w

    # ----- where values go -------------------------------------------------------------------
    def _producer(self, key: tuple) -> tuple:
        """``(kind, layer, iteration)`` of the task that makes the value ``key``."""
        name, l, i = key
        kind, offset, _ = _VALUES[name]
        return (kind, l, i - self.delays[l] - 1) if name == "p" else (kind, l + offset, i)

    def _consumers(self, key: tuple) -> list:
        """``(kind, layer, iteration)`` of the tasks that read the value ``key``."""
        name, l, i = key
        if name == "spk":
            return [("F", l + 1, i)]
        return [(k, l, i) for k in _VALUES[name][2] if (k, l) in self.process or k == _END]

    def _process_of(self, kind: str, l: int) -> int:
        return 0 if kind == _END else self.process[(kind, l)]

    def _spike_shape(self, l: int) -> tuple:
        """``[T, B, ...]`` of layer ``l``'s spikes (``l = -1``: the encoded input)."""
        shape = self.input_shape if l < 0 else tuple(self.model.infos[l].out_shape)
        return (self.num_steps, self.batch_size) + tuple(shape)

    def _packed(self, key: tuple) -> Optional[tuple]:
        """The shape of the value ``key`` if it is exact 0/1 spikes (sent 8 to a byte), else None."""
        name, l, _ = key
        if name == "spk" or (name == "x" and (l > 0 or self.binary_input)):
            return self._spike_shape(l if name == "spk" else l - 1)
        return None

    def _treedef(self, key: tuple, state: dict):
        name, l, _ = key
        if name not in ("p", "dneuron", "vjp"):
            return jax.tree.structure(0)
        if (name, l) not in self._treedefs:
            p = state["layers"][l]["latest"]
            if name == "vjp":
                t = self._vjp_treedef(l, p)
            elif name == "dneuron":
                t = jax.tree.structure({k: v for k, v in p.items() if k != "w"})
            else:
                t = jax.tree.structure(p)
            self._treedefs[(name, l)] = t
        return self._treedefs[(name, l)]

    def _send(self, dst: int, key: tuple, value) -> None:
        base = "|".join(str(part) for part in key)
        shape = self._packed(key)
        if shape is not None:
            arrays = [np.packbits(np.asarray(jnp.asarray(value, jnp.uint8)).ravel())]
        else:
            arrays = [np.asarray(a) for a in jax.tree.leaves(jax.device_get(value))]
        for j, a in enumerate(arrays):
            self.transport.send(dst, f"{base}#{j}", a)
            self.bytes_sent += a.nbytes

    def _recv(self, src: int, key: tuple, state: dict):
        t0 = time.perf_counter()
        try:
            return self._recv_value(src, key, state)
        finally:
            self._waited += time.perf_counter() - t0

    def _recv_value(self, src: int, key: tuple, state: dict):
        base = "|".join(str(part) for part in key)
        shape = self._packed(key)
        if shape is not None:
            bits = self.transport.recv(src, f"{base}#0")
            return jnp.asarray(np.unpackbits(bits, count=math.prod(shape)).reshape(shape), jnp.float32)
        treedef = self._treedef(key, state)
        leaves = [jnp.asarray(self.transport.recv(src, f"{base}#{j}")) for j in range(treedef.num_leaves)]
        return jax.tree.unflatten(treedef, leaves)

    def _put(self, state: dict, key: tuple, value) -> None:
        """A task made ``value``: kept for the consumers in this process, sent to the others
        (once per process)."""
        consumers = self._consumers(key)
        procs = {self._process_of(k, l) for k, l, _ in consumers}
        for dst in sorted(procs - {self.me}):
            self._send(dst, key, value)
        if self.me in procs:
            state["kept"][key] = value

    def _get(self, state: dict, key: tuple, pop: bool = False):
        """The value ``key`` for a task of this process (received from its producer's process if
        it is not here yet; ``pop``: its last reader here)."""
        kept = state["kept"]
        if key not in kept:
            kind, l, i = self._producer(key)
            src = self._process_of(kind, l)
            if src == self.me:
                raise RuntimeError(f"{key} is read before {kind}{l} of iteration {i} made it (the schedule's order "
                                   f"does not respect its dependencies)")  # (checked in __init__ for the weights)
            kept[key] = self._recv(src, key, state)
        return kept.pop(key) if pop else kept[key]

    # ----- state and running ---------------------------------------------------------------------
    def init(self, params) -> dict:
        """The state: per layer its newest weights (``latest``, on a device of this process:
        ``W_l``'s where it is here), optimiser state and updates done; the values kept for
        iterations in flight (``kept``: spikes, inputs, the weights each iteration uses, vjps,
        gradients, values received), their host batches (``inputs``), this process's tasks run
        of unfinished iterations (``ran``), the iterations fed and the first unfinished one.
        Iterations ``0..d_l`` use the initial weights: kept for this process's readers."""
        layers, kept = [], {}
        for l, n in enumerate(self.names):
            dev = self.home[l]
            p = jax.device_put(params[n], dev)
            layers.append({"latest": p, "opt": jax.device_put(self.tx.init(params[n]), dev), "updates": 0})
            if any(self.process[(k, l)] == self.me for k in ("F", "BG", "W") if (k, l) in self.process):
                for i in range(self.delays[l] + 1):
                    kept[("p", l, i)] = p
        return {"layers": layers, "kept": kept, "inputs": {}, "ran": set(), "fed": 0, "done_tasks_from": 0}

    @staticmethod
    def _copy(state: dict) -> dict:
        """A new state sharing the arrays (the step does not change its argument)."""
        return dict(state, layers=[dict(lay) for lay in state["layers"]], kept=dict(state["kept"]),
                    inputs=dict(state["inputs"]), ran=set(state["ran"]))

    def _ready(self, state: dict, horizon: float) -> list:
        """This process's tasks (and iteration ends) of fed iterations not run yet that start
        before ``horizon`` (unrolled time), in the order every process uses."""
        out = []
        for i in range(state["done_tasks_from"], state["fed"]):
            for t0, kind, l, proc in self.local:
                start = t0 + i * self.period
                if start < horizon and (kind, l, i) not in state["ran"]:
                    out.append((start, proc, kind, l, i))
        return sorted(out)

    def _run_task(self, state: dict, kind: str, l: int, i: int, key) -> None:
        """Runs one task of iteration ``i`` (updates ``state`` in place: the caller's copy)."""
        lay = state["layers"][l]
        dev = self.device[(kind, l)]
        last = l == self.model.num_layers - 1
        if kind == "F":
            p = jax.device_put(self._get(state, ("p", l, i)), dev)
            if l == 0:
                x, y = state["inputs"][i]
                x = self.encode_fn(jax.device_put(x, dev), jax.random.fold_in(key, i)).astype(jnp.float32)
            else:
                x = jax.device_put(self._get(state, ("spk", l - 1, i), pop=True), dev)
                y = state["inputs"][i][1]
            out, vjp = self._f[l](p, x, jax.device_put(y, dev) if last else None)
            self._put(state, ("x", l, i), x)
            self._put(state, ("vjp", l, i), vjp)
            self._put(state, ("met" if last else "spk", l, i), out)
            return
        if kind == "BL":
            g = jnp.ones((), jnp.float32) if last else jax.device_put(self._get(state, ("g", l, i), pop=True), dev)
            dcur, dneuron = self._bl(jax.device_put(self._get(state, ("vjp", l, i), pop=True), dev), g)
            self._put(state, ("dcur", l, i), dcur)
            self._put(state, ("dneuron", l, i), dneuron)
            return
        if kind == "BG":
            p, x = jax.device_put(self._get(state, ("p", l, i)), dev), jax.device_put(self._get(state, ("x", l, i)), dev)
            self._put(state, ("g", l - 1, i), self._bg[l](p, x, jax.device_put(self._get(state, ("dcur", l, i)), dev)))
            return
        # W: the update that makes version i + 1 (tasks of one layer run in iteration order)
        if lay["updates"] != i:
            raise RuntimeError(f"W{l} of iteration {i} would be update {lay['updates']}")
        p_used = jax.device_put(self._get(state, ("p", l, i)), dev)
        x = jax.device_put(self._get(state, ("x", l, i)), dev)
        dcur = jax.device_put(self._get(state, ("dcur", l, i)), dev)
        new, lay["opt"] = self._w[l](jax.device_put(lay["latest"], dev), lay["opt"], p_used, x, dcur,
                                     jax.device_put(self._get(state, ("dneuron", l, i), pop=True), dev))
        lay["latest"], lay["updates"] = new, i + 1
        self._put(state, ("p", l, i + 1 + self.delays[l]), new)  # version i + 1: iteration i + 1 + d_l's

    def _advance(self, state: dict, horizon: float, key) -> list:
        """Runs this process's tasks that start before ``horizon``; returns the metrics of the
        iterations that ended (process 0; none elsewhere)."""
        finished = []
        for start, proc, kind, l, i in self._ready(state, horizon):
            if kind != _END:
                t0, self._waited = time.perf_counter(), 0.0
                self._run_task(state, kind, l, i, key)
                if self.profile:
                    jax.block_until_ready((state["kept"], [lay["latest"] for lay in state["layers"]]))
                    self.task_times.setdefault(f"{kind}{l}", []).append(time.perf_counter() - t0 - self._waited)
                state["ran"].add((kind, l, i))
                continue
            if self.me == 0:  # every task of iteration i (in every process) is before its end
                finished.append(self._get(state, ("met", self.model.num_layers - 1, i), pop=True))
            for k in [k for k in state["kept"] if k[-1] == i]:
                del state["kept"][k]
            state["ran"] = {r for r in state["ran"] if r[2] != i}
            state["inputs"].pop(i)
            state["done_tasks_from"] = i + 1
        return finished

    def step(self, state: dict, x, y, key) -> tuple[dict, list]:
        """Feeds iteration ``fed`` (host ``x`` ``[B, ...]``, ``y`` ``[B]``, the same in every
        process) and runs this process's tasks that start before iteration ``fed + 1``'s first;
        returns the new state and the metrics of the iterations that ended (:meth:`_metrics`)."""
        state = self._copy(state)
        state["key"] = key
        i = state["fed"]
        state["inputs"][i] = (np.asarray(x), np.asarray(y))
        state["fed"] = i + 1
        state["horizon"] = min(t0 for t0, *_ in self.tasks) + (i + 1) * self.period
        return state, self._metrics(self._advance(state, state["horizon"], key))

    def _metrics(self, finished: list) -> dict:
        """Loss / accuracy of the iterations that ended (``count``; ``finished``: their
        ``[loss, correct]``); ``finite``: their losses. Processes other than 0 report none."""
        if not finished:
            return {"loss": 0.0, "accuracy": 0.0, "count": 0, "finite": True, "finished": []}
        met = np.asarray(jnp.stack([jax.device_get(m) for m in finished]))
        return {"loss": float(met[:, 0].mean()), "accuracy": float(met[:, 1].sum() / (len(met) * self.batch_size))
                if self.batch_size else float("nan"), "count": len(met),
                "finite": bool(np.isfinite(met[:, 0]).all()), "finished": list(met)}

    def drain(self, state: dict, key=None) -> tuple[dict, list]:
        """Runs every task left (no new iteration enters; ``key``: the steps' encoder key)."""
        state = self._copy(state)
        state["horizon"] = float("inf")
        return state, self._metrics(self._advance(state, float("inf"), state.get("key") if key is None else key))

    def bytes_per_iteration(self, params) -> dict:
        """Bytes of one iteration's values that go from one processor to another, by value name
        (each value once to every other processor that reads it; spikes bit-packed, the rest as
        they are: float32 activations and gradients, the weights an iteration uses), from their
        shapes (:func:`jax.eval_shape`). Between processes they go over TCP, between devices of
        one process as ``device_put``. Not counted: the 8 bytes of metrics per iteration."""
        f32 = lambda shape: jax.ShapeDtypeStruct(tuple(shape), jnp.float32)
        nbytes = lambda tree: sum(math.prod(a.shape) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(tree))
        proc, out_bytes = self.processor, {}
        for l, n in enumerate(self.names):
            last = l == self.model.num_layers - 1
            y = jax.ShapeDtypeStruct((self.batch_size,), jnp.int32) if last else None
            out, vjp = self._f[l].eval_shape(params[n], f32(self._spike_shape(l - 1)), y)
            dcur, dneuron = self._bl.eval_shape(vjp, f32(()) if last else f32(out.shape))
            sizes = {"x": nbytes(f32(self._spike_shape(l - 1))), "p": nbytes(params[n]), "vjp": nbytes(vjp),
                     "dcur": nbytes(dcur), "dneuron": nbytes(dneuron)}
            if not last:
                sizes["spk"] = nbytes(out)
            if l > 0:
                sizes["g"] = nbytes(f32(self._spike_shape(l - 1)))
            for name, size in sizes.items():
                key = (name, l - 1 if name == "g" else l, 0)
                packed = self._packed(key)
                if packed is not None:
                    size = -(-math.prod(packed) // 8)
                kind, pl, _ = self._producer(key)
                readers = {proc[(k, rl)] for k, rl, _ in self._consumers(key)} - {proc[(kind, pl)]}
                out_bytes[name] = out_bytes.get(name, 0) + size * len(readers)
        return out_bytes

    # ----- checkpoints -------------------------------------------------------------------------
    def _in_flight(self, state: dict) -> dict:
        """``kept`` with the values other processes have sent to this one for its tasks not run
        yet (made by tasks that started before the last horizon) received into it: at a step
        boundary those are the only values in flight."""
        kept = dict(state["kept"])
        if self.transport is None:
            return kept
        horizon, fed, first = state.get("horizon", float("-inf")), state["fed"], state["done_tasks_from"]
        for i in range(first, fed + max(self.delays) + 2):
            for name in _VALUES:
                for l in range(self.model.num_layers):
                    if (name == "met") != (l == self.model.num_layers - 1) and name in ("met", "spk"):
                        continue  # the output layer makes the metrics, every other layer spikes
                    key = (name, l, i)
                    kind, pl, pi = self._producer(key)
                    if (kind, pl) not in self.process or not 0 <= pi < fed or key in kept:
                        continue
                    readers = [(k, rl, ri) for k, rl, ri in self._consumers(key)
                               if (k == _END or (k, rl) in self.process) and self._process_of(k, rl) == self.me
                               and ri >= first and (k, rl, ri) not in state["ran"]]
                    src = self._process_of(kind, pl)
                    if readers and src != self.me and self.start[(kind, pl)] + pi * self.period < horizon:
                        kept[key] = self._recv(src, key, state)
        return kept

    def _path(self, directory: str) -> str:
        return os.path.join(directory, f"process_{self.me}.msgpack")

    def save(self, directory: str, state: dict) -> dict:
        """Writes this process's state (newest weights, optimiser states, the values kept for
        iterations in flight, among them those received from other processes and not read yet,
        their batches; the LIF vjps as their arrays) atomically as
        ``directory/process_<i>.msgpack``, keeping the previous file
        (:func:`spikepipe_jax.train.checkpoint.prev_path`). Returns the state to go on with (it
        holds the values received to save them)."""
        state = dict(state, kept=self._in_flight(state))
        host = lambda tree: jax.tree.map(np.asarray, jax.device_get(tree))
        kept = {}
        for k, v in state["kept"].items():
            name = "|".join(str(part) for part in k)
            kept[name] = ({str(j): a for j, a in enumerate(host(jax.tree.leaves(v)))} if k[0] == "vjp" else host(v))
        blob = {"layers": {str(l): {"latest": host(lay["latest"]),
                                    "opt": flax.serialization.to_state_dict(host(lay["opt"])),
                                    "updates": lay["updates"]} for l, lay in enumerate(state["layers"])},
                "kept": kept, "inputs": {str(i): {"x": x, "y": y} for i, (x, y) in state["inputs"].items()},
                "ran": ["|".join(str(part) for part in r) for r in sorted(state["ran"])],
                "fed": state["fed"], "done_tasks_from": state["done_tasks_from"],
                "horizon": np.float64(state.get("horizon", float("-inf"))),
                "key": np.asarray(jax.random.key_data(state["key"])) if "key" in state else np.zeros(0, np.uint32)}
        os.makedirs(directory, exist_ok=True)
        path = self._path(directory)
        if os.path.exists(path):
            os.replace(path, checkpoint.prev_path(path))
        atomic_write_bytes(path, flax.serialization.msgpack_serialize(blob))
        return state

    def _read(self, blob: dict, path: str, template: dict) -> dict:
        """The state from a checkpoint file's contents (read by :func:`checkpoint.load_msgpack`)."""
        try:
            layers = []
            for l, tmpl in enumerate(template["layers"]):
                d, dev = blob["layers"][str(l)], self.home[l]
                layers.append({"latest": jax.device_put(flax.serialization.from_state_dict(tmpl["latest"], d["latest"]),
                                                        dev),
                               "opt": jax.device_put(flax.serialization.from_state_dict(tmpl["opt"], d["opt"]), dev),
                               "updates": int(d["updates"])})
            kept = {}
            for name, v in blob["kept"].items():
                parts = name.split("|")
                k = (parts[0],) + tuple(int(q) for q in parts[1:])
                if k[0] == "vjp":  # its structure traced once per layer (_treedef's cache)
                    treedef = self._treedef(k, {"layers": layers})
                    v = jax.tree.unflatten(treedef, [jnp.asarray(v[str(j)]) for j in range(len(v))])
                elif isinstance(v, dict):  # a parameter dict (weights, neuron-parameter gradients)
                    v = jax.tree.map(jnp.asarray, v)
                else:
                    v = jnp.asarray(v)
                kept[k] = v
            ran = set()
            for r in blob["ran"]:
                kind, l, i = r.split("|")
                ran.add((kind, int(l), int(i)))
            state = {"layers": layers, "kept": kept,
                     "inputs": {int(i): (e["x"], e["y"]) for i, e in blob["inputs"].items()},
                     "ran": ran, "fed": int(blob["fed"]), "done_tasks_from": int(blob["done_tasks_from"]),
                     "horizon": float(blob["horizon"])}
            if blob["key"].size:
                state["key"] = jax.random.wrap_key_data(jnp.asarray(blob["key"]))
            return state
        except Exception as e:  # damaged, or from another network / schedule
            raise ValueError(f"checkpoint {path} is corrupt or does not match this config: "
                             f"{type(e).__name__}: {e}") from None

    def _vjp_treedef(self, l: int, p):
        t, b = self.num_steps, self.batch_size
        shape = self.input_shape if l == 0 else tuple(self.model.infos[l - 1].out_shape)
        x = jax.ShapeDtypeStruct((t, b) + tuple(shape), jnp.float32)
        y = jax.ShapeDtypeStruct((b,), jnp.int32) if l == self.model.num_layers - 1 else None
        return jax.tree.structure(self._f[l].eval_shape(p, x, y)[1])

    def restore_latest(self, directory: str, template: dict, *, warn: Callable[[str], None]):
        """This process's newest readable checkpoint in ``directory`` (the previous one if the
        newest is damaged, saying so: :func:`spikepipe_jax.train.checkpoint.read_latest`);
        ``None`` if there is none. With several processes every one resumes from the same
        iteration (:func:`spikepipe_jax.train.checkpoint.read_common_latest`)."""
        return checkpoint.read_common_latest(self._path(directory), lambda blob: int(blob["fed"]),
                                             lambda blob, p: self._read(blob, p, template), warn=warn)

    def params(self, state: dict) -> dict:
        """The network's newest parameters as host arrays, in every process (each layer from
        ``W_l``'s process; a collective over all processes when there are several)."""
        local = {n: jax.device_get(lay["latest"]) for n, lay in zip(self.names, state["layers"])}
        if jax.process_count() == 1:
            return local
        from jax.experimental import multihost_utils
        gathered = multihost_utils.process_allgather(local, tiled=False)  # leading [processes] axis
        return {n: jax.tree.map(lambda a, p=self.process[("W", l)]: np.asarray(a[p]), gathered[n])
                for l, n in enumerate(self.names)}

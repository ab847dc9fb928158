r"""PipeDream 1F1B and GPipe executed asynchronously: one program per stage and action, point-to-point messages.

The tick-synchronous executor (:mod:`spikepipe_jax.train.executor`) runs every stage inside one
SPMD program, so each tick lasts as long as its slowest stage and a step of 1F1B costs
``max(F_0, B_1) + max(B_0, F_1)``; its stages' residuals also pass through one shared byte ring.
Here each stage is its own set of jitted programs on its own devices (``stage_devices``):

* ``F``: ``jax.vjp`` of :func:`spikepipe_jax.snn.apply_stage` on the stage's parameters (only its
  own layers); the vjp's residuals (the weights it used among them: PipeDream's weight stashing)
  stay the vjp's own arrays, kept per mini-batch until its backward;
* ``B``: the kept vjp applied to the gradient from the next stage (the loss's cotangent 1 on the
  last stage), then the stage's optimiser update, in one program.

Every stage runs the same per-stage order as the tick table of
:func:`spikepipe_jax.train.executor.tick_table` (``F`` of mini-batch ``m`` at tick ``2m + s``,
``B`` at ``2m + 2S - 1 - s``, an update after each ``B``), so it applies the same updates
between a forward and its update, i.e. the delays ``schedule.delays_for("1f1b", stage map)``, and
the run equals the single-device simulator ``pipeline.simulate="stash"`` with those delays (and
the tick-synchronous executor) to float rounding. But a stage waits only for the messages it
needs, not for a barrier after every tick, so a step costs ``max_s(F_s + B_s)`` once the pipeline
is full (:func:`predicted_step_time`).

GPipe (``plan.mode == "gpipe"``, M micro-batches): stage 0 encodes the whole batch once, as the
unpipelined step does (the same draws), and splits it into M micro-batches (on each data device
the m-th block of its rows); every stage runs the forwards of micro-batches ``0 .. M-1``, then
their backwards in reverse (:func:`gpipe_actions`), each adding its weight gradient to the
stage's sum, then one update with the mean. So a step equals ``pipeline.execute="none"`` to float
rounding, and nothing is in flight between steps (no drain, a checkpoint holds only parameters
and optimiser states).

Messages: a forward sends its output spikes (exact 0/1, bit-packed: 8 to a byte, as the cost
model's 1-bit spikes) to the next stage, a backward its input
gradient (``float32``) to the previous one together with three scalars, ``[loss, correct,
finite]`` of that mini-batch (the last stage starts them; each stage folds in whether its weight
gradient was finite), so the first stage learns each mini-batch's metrics when its backward ends
and no extra message or barrier is needed. Between stages of one process a message is a
``jax.device_put`` onto the receiving stage's devices; between processes it is sent over TCP
(:class:`spikepipe_jax.train.transport.SocketTransport`). Each process runs the actions of its
own stages in tick order (a deterministic order; it cannot deadlock, since an action at tick
``g`` needs only actions at ticks ``< g``).

Layout: stage ``s`` has the devices ``devices[s * data:(s + 1) * data]`` (consecutive devices,
e.g. one host's GPUs), a ``("data",)`` mesh of them, its parameters replicated there and every
batch split over them (XLA averages the weight gradient over them). A stage's devices may belong
to several processes (e.g. 4 hosts, 2 stages: each stage on two hosts); its programs are then
SPMD programs over those processes, which all run the stage's actions in the same (tick) order.
A message is sent part by part: the rows of the batch on a stage's device ``k`` go to device
``k`` of the neighbouring stage (a ``device_put`` inside a process, TCP between processes), so
no process gathers a whole batch. Process 0 must hold a device of the first stage (it reports
the metrics and writes the workdir).

State (:class:`AsyncState`): per local stage its parameters, optimiser state, the kept vjps of
its mini-batches in flight, the messages that arrived for its next action, and (last stage) the
labels of the mini-batches in flight. :meth:`AsyncExecutor.save` / :meth:`AsyncExecutor.restore`
write it per process (msgpack, atomically, the previous one kept): at a step boundary the only
messages in flight are those the next tick needs, which ``save`` waits for and stores, so a run
resumed from a checkpoint continues exactly.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, NamedTuple, Optional, Sequence

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from spikepipe_jax import snn
from spikepipe_jax.io import atomic_write_bytes
from spikepipe_jax.train import checkpoint, losses
from spikepipe_jax.train import stages as stages_lib

CHECKPOINT_DIR = "checkpoint_async"  # in the run's workdir: one file per process


class StageState(NamedTuple):
    """One stage's part of the state (host dicts of device arrays)."""
    params: Any    # the stage's layers only
    opt_state: Any
    stash: dict    # mini-batch -> (vjp, met): kept for its backward; met = [loss, correct, finite] (last stage)
    inbox: dict    # message key -> array: arrived for this stage, not yet used
    labels: dict   # mini-batch -> labels (the last stage: batches whose forward has not run)


class AsyncState(NamedTuple):
    step: int     # mini-batches fed (training steps taken)
    tick: int     # ticks run (2 per step; the drain runs 2S - 2 more)
    stages: dict  # stage index -> StageState, this process's stages only


def stage_actions(num_stages: int, stage: int, tick: int, num_ticks: int, fed: int) -> list[tuple[int, str, int]]:
    """Stage ``stage``'s ``(tick, "F" | "B", mini-batch)`` in ticks ``tick .. tick + num_ticks - 1``
    with ``fed`` mini-batches entered: ``F`` of ``m`` at tick ``2m + s``, ``B`` at
    ``2m + 2S - 1 - s`` (the tick table of :func:`spikepipe_jax.train.executor.tick_table`)."""
    out = []
    for g in range(tick, tick + num_ticks):
        if (g - stage) % 2 == 0:
            m, kind = (g - stage) // 2, "F"
        else:
            m, kind = (g + stage - 2 * num_stages + 1) // 2, "B"
        if 0 <= m < fed:
            out.append((g, kind, m))
    return out


def gpipe_actions(num_stages: int, stage: int, microbatches: int) -> list[tuple[int, str, int]]:
    """Stage ``stage``'s ``(tick, "F" | "B", micro-batch)`` in one GPipe step: the forwards of
    micro-batches ``0 .. M-1`` at ticks ``m + s``, then their backwards in reverse at ticks
    ``(M + S - 1) + (M - 1 - m) + (S - 1 - s)`` (a tick order in which every action comes after
    those it needs); the update follows the last backward."""
    s_count, m_count = num_stages, microbatches
    fwd = [(m + stage, "F", m) for m in range(m_count)]
    bwd = [(m_count + s_count - 1 + (m_count - 1 - m) + (s_count - 1 - stage), "B", m)
           for m in reversed(range(m_count))]
    return fwd + bwd


def predicted_step_time(forward_s: Sequence[float], backward_s: Sequence[float], *, steps: int = 0,
                        microbatches: int = 0) -> float:
    """One training step from per-stage action times (``F``: the stage's ``jax.vjp``; ``B``:
    applying it, with the update; measured alone on one device, on the batch one action takes):
    the project's timeline simulator (:func:`spikepipe_jax.schedule.timeline.simulate`) runs
    every stage's op order as this executor runs it, each op starting when its stage is free and
    its message has arrived (transfers not counted).

    1F1B (``microbatches`` 0): over ``steps`` mini-batches, the spacing of the first stage's
    backward ends over the last quarter of them (the fill excluded); this comes to the slowest
    stage's ``F + B``. GPipe (``microbatches`` M): nothing is in flight between steps, so a step
    is the span of one step's order (:func:`gpipe_actions`), ``M`` forwards and backwards per
    stage with the fill and the drain."""
    from spikepipe_jax.schedule import timeline

    n_st = len(forward_s)
    if microbatches:
        order = [[(kind, m, s) for _, kind, m in gpipe_actions(n_st, s, microbatches)] for s in range(n_st)]
    else:
        n = steps or 32 * n_st + 32
        order = [[(kind, m, s) for _, kind, m in stage_actions(n_st, s, 0, 2 * n + 2 * n_st, n)]
                 for s in range(n_st)]

    def deps(op):
        kind, m, s = op
        if kind == "F":
            return [(("F", m, s - 1), 0.0)] if s > 0 else []
        return [(("F", m, s), 0.0)] + ([(("B", m, s + 1), 0.0)] if s < n_st - 1 else [])

    dur = lambda op: forward_s[op[2]] if op[0] == "F" else backward_s[op[2]]
    times = timeline.simulate(n_st, timeline.fixed_order(order), deps, dur)
    if microbatches:
        return max(end for _, end in times.values())
    ends = [times[("B", m, 0)][1] for m in range(n)]
    k = n // 4  # the last quarter: past the fill
    return (ends[-1] - ends[-1 - k]) / k


def _met_key(m: int, s: int) -> str:
    return f"met/{m}/{s}"


class AsyncExecutor:
    """PipeDream 1F1B over stages with one program per stage and action (module docstring).

    The interface is the tick-synchronous executor's (``init``, ``step``, ``drain``, ``params``),
    so the training loop drives either; batches are host arrays (every process gets the same
    global batch) and ``params`` returns host arrays, the same in every process.
    """

    def __init__(self, model: snn.ModelDef, plan, tx: optax.GradientTransformation, *,
                 loss_name: str, num_classes: int, encode_fn: Callable, binary_input: bool,
                 batch_size: int, num_steps: int, input_shape: Sequence[int],
                 devices: Optional[Sequence[Any]] = None, transport_factory: Optional[Callable] = None,
                 compiler_options: Optional[dict] = None):
        if plan.mode not in ("1f1b", "gpipe"):
            raise ValueError(f"the asynchronous executor runs pipeline.execute='1f1b' or 'gpipe', got {plan.mode!r}")
        self.model = model._replace(native="off")  # as the tick-synchronous executor and the simulator
        self.plan, self.tx = plan, tx
        self.loss_name, self.num_classes = loss_name, num_classes
        self.encode_fn, self.binary_input = encode_fn, binary_input
        self.batch_size, self.num_steps = batch_size, num_steps
        self.input_shape = tuple(int(s) for s in input_shape)
        self.names = [info.name for info in model.infos]
        self.stage_of = stages_lib.stage_map(plan.stages)
        s_count = self.num_stages = plan.num_stages
        devices = list(jax.devices() if devices is None else devices)
        if len(devices) != plan.data * s_count:
            raise ValueError(f"the plan needs {plan.data * s_count} devices ({plan.data} data x {s_count} "
                             f"stages), got {len(devices)}")
        self.stage_devices = [devices[s * plan.data:(s + 1) * plan.data] for s in range(s_count)]
        # a stage's devices may belong to several processes (its programs then run SPMD over them)
        self.procs_of = [sorted({d.process_index for d in devs}) for devs in self.stage_devices]
        if 0 not in self.procs_of[0]:
            raise ValueError(f"the first stage runs on process(es) {self.procs_of[0]}; process 0 must hold "
                             f"one of its devices (it reports the metrics)")
        self.me = jax.process_index()
        self.local = [s for s in range(s_count) if self.me in self.procs_of[s]]
        # per stage: the positions k (on its "data" axis) of the devices that are this process's
        self.local_k = [[k for k, d in enumerate(devs) if d.process_index == self.me] for devs in self.stage_devices]
        self.position = [{d.id: k for k, d in enumerate(devs)} for devs in self.stage_devices]
        self.meshes = [Mesh(np.array(d), ("data",)) for d in self.stage_devices]
        self.rep = [NamedSharding(m, P()) for m in self.meshes]
        self.batch_spec = [NamedSharding(m, P("data")) for m in self.meshes]      # [B, ...]
        self.time_batch = [NamedSharding(m, P(None, "data")) for m in self.meshes]  # [T, B, ...]
        opts = compiler_options or {}
        self._fwd = {s: jax.jit(self._forward_fn(s), compiler_options=opts) for s in self.local}
        # no donation: a kept vjp may hold the very arrays of the parameters it was taken at
        if plan.mode == "gpipe":
            if 0 in self.local:
                self._encode = jax.jit(self._encode_fn(), compiler_options=opts)
            self._accumulate = {s: jax.jit(self._accumulate_fn(s), compiler_options=opts,
                                           out_shardings=(self.rep[s], self.rep[s] if s == 0 else self.time_batch[s],
                                                          self.rep[s]))
                                for s in self.local}
            self._update = {s: jax.jit(self._update_fn(s), compiler_options=opts) for s in self.local}
        self._bwd = {s: jax.jit(self._backward_fn(s), compiler_options=opts,
                                out_shardings=(self.rep[s], self.rep[s],
                                               self.rep[s] if s == 0 else self.time_batch[s], self.rep[s]))
                     for s in self.local}
        # a message's part k goes from device k of one stage to device k of its neighbour
        peers = {self.stage_devices[s + d][k].process_index for s in self.local for d in (-1, 1)
                 if 0 <= s + d < s_count for k in self.local_k[s]} - {self.me}
        self.transport = None
        if peers:
            if transport_factory is None:
                raise ValueError("stages on other processes need a transport (jax.distributed run)")
            self.transport = transport_factory(peers)

    # ----- the programs ----------------------------------------------------------------------
    def _stage_fn(self, s: int):
        stage, last = self.plan.stages[s], s == self.num_stages - 1

        def fn(w, x, y):
            out = snn.apply_stage(w, self.model, x, stage)
            if last:
                return losses.compute_loss(self.loss_name, out, y, self.num_classes), out.logits
            return out
        return fn

    def _forward_fn(self, s: int):
        """``F``: ``(w, x, y[, key, step]) -> (spikes | met, vjp)``."""
        fn, first, last = self._stage_fn(s), s == 0, s == self.num_stages - 1

        def forward(w, x, y, key=None, step=None):
            if first:
                if key is None:  # GPipe: x is the encoded batch's micro-batches [M, T, B / M, ...]; step: which
                    x = jax.lax.dynamic_index_in_dim(x, step, keepdims=False)
                else:
                    x = self.encode_fn(x, jax.random.fold_in(key, step))
                if self.binary_input:  # as the tick-synchronous executor keeps it: exact 0/1 in a byte
                    x = x.astype(jnp.uint8)
                x = x.astype(jnp.float32)
                out, vjp, *aux = jax.vjp(lambda w_: fn(w_, x, y), w, has_aux=last)
            else:
                out, vjp, *aux = jax.vjp(lambda w_, x_: fn(w_, x_, y), w, self._unpack(x, s), has_aux=last)
            if last:
                correct = jnp.sum(jnp.argmax(aux[0], -1) == y).astype(jnp.float32)
                return jnp.stack([out, correct, jnp.ones((), jnp.float32)]), vjp
            t, b = out.shape[:2]  # spikes are exact 0/1: 8 to a byte
            packed = jnp.packbits(out.reshape(t, b, -1).astype(jnp.uint8), axis=-1)
            return jax.lax.with_sharding_constraint(packed, self.time_batch[s]), vjp  # as _send splits it
        return forward

    def _in_shape(self, s: int) -> tuple[int, ...]:
        """Per-sample shape of what stage ``s > 0`` reads (the previous stage's spikes)."""
        return tuple(self.model.infos[self.plan.stages[s][0] - 1].out_shape)

    def _unpack(self, packed: jax.Array, s: int) -> jax.Array:
        shape = self._in_shape(s)
        t, b = packed.shape[:2]
        bits = jnp.unpackbits(packed, axis=-1, count=math.prod(shape))
        return bits.reshape((t, b) + shape).astype(jnp.float32)

    def bytes_per_step(self) -> int:
        """Bytes a full pipeline sends per training step: at every stage boundary the spikes once
        (1 bit each, 8 to a byte per time step and sample) and the gradient once (``float32``),
        plus the three metric scalars."""
        t, b = self.num_steps, self.batch_size
        return sum(t * b * (-(-math.prod(self._in_shape(s)) // 8)) + 4 * t * b * math.prod(self._in_shape(s)) + 12
                   for s in range(1, self.num_stages))

    # GPipe: the batch encoded once (as the unpipelined step encodes it), split into M
    # micro-batches; a backward adds the micro-batch's weight gradient to the stage's sum; one
    # update per step with the mean
    def _encode_fn(self):
        """``(x [B, ...], key, step) -> [M, T, B / M, ...]``: micro-batch ``m`` is, on each data
        device, the ``m``-th block of its rows (the tick-synchronous executor's split), so no
        row leaves its device."""
        d, m = self.plan.data, self.plan.microbatches

        def encode(x, key, step):
            xt = self.encode_fn(x, jax.random.fold_in(key, step))  # [T, B, ...]
            if self.binary_input:
                xt = xt.astype(jnp.uint8)
            t, rest = xt.shape[0], xt.shape[2:]
            xm = jnp.moveaxis(xt.reshape((t, d, m, -1) + rest), 2, 0).reshape((m, t, -1) + rest)
            return jax.lax.with_sharding_constraint(xm, NamedSharding(self.meshes[0], P(None, None, "data")))
        return encode

    def _micro_labels(self, y: np.ndarray) -> np.ndarray:
        """``[B]`` -> ``[M, B / M]`` as :meth:`_encode_fn` splits the rows."""
        d, m = self.plan.data, self.plan.microbatches
        return np.asarray(y).reshape(d, m, -1).transpose(1, 0, 2).reshape(m, -1)

    def _apply_vjp(self, s: int, vjp, ct, met):
        """A kept vjp applied to the gradient from the next stage (the loss's cotangent 1 on the
        last stage): ``(dw, dx, met)``, ``met`` with this stage's "weight gradient finite" folded in."""
        grads = vjp(jnp.ones((), jnp.float32) if s == self.num_stages - 1 else ct)
        finite = jnp.isfinite(sum(jnp.sum(g * 0) for g in jax.tree.leaves(grads[0]))).astype(jnp.float32)
        dx = jnp.zeros((0,), jnp.float32) if s == 0 else grads[1]
        return grads[0], dx, met.at[2].set(jnp.minimum(met[2], finite))

    def _apply_update(self, w, opt, g):
        upd, opt = self.tx.update(g, opt, w)
        return optax.apply_updates(w, upd), opt

    def _accumulate_fn(self, s: int):
        """GPipe's ``B``: ``(acc, vjp, ct, met) -> (acc + dw, dx, met)`` (``acc`` None: the first)."""
        def accumulate(acc, vjp, ct, met):
            dw, dx, met = self._apply_vjp(s, vjp, ct, met)
            return (dw if acc is None else jax.tree.map(jnp.add, acc, dw)), dx, met
        return accumulate

    def _update_fn(self, s: int):
        """GPipe's update, once per step: ``(w, opt, acc) -> (w, opt)`` with the mean gradient."""
        m = self.plan.microbatches
        return lambda w, opt, acc: self._apply_update(w, opt, jax.tree.map(lambda g: g / m, acc))

    def _backward_fn(self, s: int):
        """1F1B's ``B`` and the update: ``(w, opt, vjp, ct, met) -> (w, opt, dx, met)``."""
        def backward(w, opt, vjp, ct, met):
            dw, dx, met = self._apply_vjp(s, vjp, ct, met)
            w, opt = self._apply_update(w, opt, dw)
            return w, opt, dx, met
        return backward

    # ----- state -------------------------------------------------------------------------------
    def _stage_params(self, params, s: int):
        a, b = self.plan.stages[s]
        return {n: params[n] for n in self.names[a:b]}

    def init(self, params) -> AsyncState:
        """The initial state from the network's parameters (this process's stages)."""
        stages = {}
        for s in self.local:
            w = jax.device_put(self._stage_params(params, s), self.rep[s])
            stages[s] = StageState(w, jax.device_put(self.tx.init(w), self.rep[s]), {}, {}, {})
        return AsyncState(0, 0, stages)

    def place(self, state: AsyncState) -> AsyncState:
        return state

    # ----- running -----------------------------------------------------------------------------
    def _actions(self, tick: int, num_ticks: int, fed: int):
        """This process's ``(tick, stage, "F" | "B", mini-batch)`` in tick order (GPipe: the
        step's, ``m`` the micro-batch)."""
        if self.plan.mode == "gpipe":
            return sorted((g, s, kind, m) for s in self.local
                          for g, kind, m in gpipe_actions(self.num_stages, s, self.plan.microbatches))
        acts = [(g, s, kind, m) for s in self.local
                for g, kind, m in stage_actions(self.num_stages, s, tick, num_ticks, fed)]
        return sorted(acts)

    def _send(self, stages: dict, src: int, dst: int, key: str, value: jax.Array) -> None:
        """Sends ``value`` (on stage ``src``'s devices: batch split over them, or replicated) to
        stage ``dst``: the part on ``src``'s device ``k`` goes to ``dst``'s device ``k`` (the same
        rows of the batch), a ``device_put`` if that device is this process's, else over TCP."""
        for shard in value.addressable_shards:
            k = self.position[src][shard.device.id]
            dev = self.stage_devices[dst][k]
            if dev.process_index == self.me:
                stages[dst].inbox[f"{key}@{k}"] = jax.device_put(shard.data, dev)
            else:
                self.transport.send(dev.process_index, f"{key}@{k}", np.asarray(shard.data))

    def _take(self, stages: dict, s: int, src: int, key: str) -> jax.Array:
        """The message ``key`` from stage ``src`` as one array on stage ``s``'s devices (its parts
        on this process's devices; the others' parts are theirs)."""
        inbox, parts = stages[s].inbox, []
        for k in self.local_k[s]:
            name = f"{key}@{k}"
            part = inbox.pop(name) if name in inbox else self.transport.recv(
                self.stage_devices[src][k].process_index, name)
            parts.append(jax.device_put(part, self.stage_devices[s][k]))
        if key.startswith("met"):  # replicated
            return jax.make_array_from_single_device_arrays(parts[0].shape, self.rep[s], parts)
        t, b, *rest = parts[0].shape  # [T, B / data, ...] per device
        shape = (t, b * len(self.stage_devices[s]), *rest)
        return jax.make_array_from_single_device_arrays(shape, self.time_batch[s], parts)

    def _run(self, state: AsyncState, num_ticks: int, fed: int, x=None, y=None, key=None):
        if self.plan.mode == "gpipe":
            return self._run_gpipe(state, x, y, key)
        stages = {s: StageState(st.params, st.opt_state, dict(st.stash), dict(st.inbox), dict(st.labels))
                  for s, st in state.stages.items()}
        if y is not None and self.num_stages - 1 in stages:  # the last stage keeps the labels
            stages[self.num_stages - 1].labels[state.step] = y
        s_count, done = self.num_stages, []
        for _, s, kind, m in self._actions(state.tick, num_ticks, fed):
            st = stages[s]
            if kind == "F":
                y = None
                if s == s_count - 1:
                    y = jax.device_put(st.labels.pop(m), self.batch_spec[s])
                if s == 0:
                    xs = jax.device_put(x, self.batch_spec[0])
                    out, vjp = self._fwd[s](st.params, xs, y, key, jnp.int32(m))
                else:
                    out, vjp = self._fwd[s](st.params, self._take(stages, s, s - 1, f"spk/{m}/{s}"), y)
                if s == s_count - 1:
                    st.stash[m] = (vjp, out)
                else:
                    st.stash[m] = (vjp, None)
                    self._send(stages, s, s + 1, f"spk/{m}/{s + 1}", out)
            else:
                vjp, met = st.stash.pop(m)
                ct = None
                if s < s_count - 1:
                    ct = self._take(stages, s, s + 1, f"grad/{m}/{s}")
                    met = self._take(stages, s, s + 1, _met_key(m, s))
                w, opt, dx, met = self._bwd[s](st.params, st.opt_state, vjp, ct, met)
                st = stages[s] = st._replace(params=w, opt_state=opt)
                if s > 0:
                    self._send(stages, s, s - 1, f"grad/{m}/{s - 1}", dx)
                    self._send(stages, s, s - 1, _met_key(m, s - 1), met)
                else:
                    done.append(met)
        return stages, done

    def _run_gpipe(self, state: AsyncState, x, y, key):
        """One GPipe step: every local stage's forwards and backwards of the M micro-batches, in
        the order of :func:`gpipe_actions`, then its update. Nothing stays in flight."""
        stages = {s: StageState(st.params, st.opt_state, {}, dict(st.inbox), {}) for s, st in state.stages.items()}
        s_count, last, done, acc = self.num_stages, self.num_stages - 1, [], {}
        if 0 in stages:
            xm = self._encode(jax.device_put(x, self.batch_spec[0]), key, jnp.int32(state.step))
        ym = self._micro_labels(y) if last in stages else None
        for _, s, kind, m in self._actions(0, 0, 0):
            st = stages[s]
            if kind == "F":
                ys = jax.device_put(ym[m], self.batch_spec[s]) if s == last else None
                if s == 0:
                    out, vjp = self._fwd[s](st.params, xm, ys, None, jnp.int32(m))
                else:
                    out, vjp = self._fwd[s](st.params, self._take(stages, s, s - 1, f"spk/{m}/{s}"), ys)
                st.stash[m] = (vjp, out if s == last else None)
                if s < last:
                    self._send(stages, s, s + 1, f"spk/{m}/{s + 1}", out)
                continue
            vjp, met = st.stash.pop(m)
            ct = None
            if s < last:
                ct = self._take(stages, s, s + 1, f"grad/{m}/{s}")
                met = self._take(stages, s, s + 1, _met_key(m, s))
            acc[s], dx, met = self._accumulate[s](acc.get(s), vjp, ct, met)
            if s > 0:
                self._send(stages, s, s - 1, f"grad/{m}/{s - 1}", dx)
                self._send(stages, s, s - 1, _met_key(m, s - 1), met)
            else:
                done.append(met)
            if m == 0:  # the stage's last backward of the step: the update
                w, opt = self._update[s](st.params, st.opt_state, acc.pop(s))
                stages[s] = st._replace(params=w, opt_state=opt)
        return stages, done

    def _metrics(self, done: list) -> dict:
        """The first stage's process: loss / accuracy of the mini-batches whose backward ended;
        other processes report none (``count`` 0)."""
        if not done:
            return {"loss": 0.0, "accuracy": 0.0, "count": 0, "finite": True}
        met = np.stack([np.asarray(d) for d in done])  # replicated: every process of the stage has them
        per = self.batch_size // self.plan.microbatches  # samples per entry (GPipe: a micro-batch's)
        return {"loss": float(met[:, 0].mean()), "accuracy": float(met[:, 1].sum() / (len(done) * per)),
                "count": len(done) // self.plan.microbatches, "finite": bool(met[:, 2].min() > 0)}

    def step(self, state: AsyncState, x, y, key):
        """One training step: mini-batch ``state.step`` enters (host ``x`` ``[B, ...]``, ``y``
        ``[B]``) and every local stage runs its actions of two ticks. Metrics: those of the
        mini-batches whose backward reached the first stage in this step (``count``)."""
        n = state.step
        stages, done = self._run(state, 2, n + 1, x=np.asarray(x), y=np.asarray(y), key=key)
        ticks = 2 if self.plan.mode == "1f1b" else 2 * (self.plan.microbatches + self.num_stages - 1)
        return AsyncState(n + 1, state.tick + ticks, stages), self._metrics(done)

    def drain(self, state: AsyncState):
        """Finishes the mini-batches in flight (``2S - 2`` ticks, nothing new enters)."""
        if self.num_stages == 1 or self.plan.mode == "gpipe":  # GPipe: nothing in flight after a step
            return state, None
        n = 2 * self.num_stages - 2
        stages, done = self._run(state, n, state.step)
        return AsyncState(state.step, state.tick + n, stages), self._metrics(done)

    def params(self, state: AsyncState):
        """The whole network's parameters as host arrays, in every process (each layer from the
        process that owns it; a collective over all processes when there are several)."""
        local = {n: jax.device_get(st.params[n]) for st in state.stages.values() for n in st.params}
        if jax.process_count() == 1:
            return {n: local[n] for n in self.names}
        from jax.experimental import multihost_utils
        shapes = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), jax.eval_shape(
            lambda: snn.init_params(jax.random.key(0), self.model)))
        full = {n: local.get(n, shapes[n]) for n in self.names}
        gathered = multihost_utils.process_allgather(full, tiled=False)  # leading [processes] axis
        return {n: jax.tree.map(lambda a, p=self.procs_of[self.stage_of[i]][0]: np.asarray(a[p]), gathered[n])
                for i, n in enumerate(self.names)}

    # ----- checkpoints -------------------------------------------------------------------------
    def _next_messages(self, state: AsyncState) -> dict:
        """Waits for the messages this process's stages need at the next tick (sent by a
        neighbour in the step just finished) and moves them into the inboxes."""
        stages = {s: st._replace(inbox=dict(st.inbox)) for s, st in state.stages.items()}
        if self.plan.mode == "gpipe":  # nothing in flight between steps
            return stages
        # (the first stage's next forward, of a batch not fed yet, needs no message; after the
        # drain nothing is left)
        for g, s, kind, m in self._actions(state.tick, 1, state.step):
            if kind == "F" and s > 0:
                keys = [(s - 1, f"spk/{m}/{s}")]
            elif kind == "B" and s < self.num_stages - 1:
                keys = [(s + 1, f"grad/{m}/{s}"), (s + 1, _met_key(m, s))]
            else:
                keys = []
            for src, key in keys:
                for k in self.local_k[s]:
                    name = f"{key}@{k}"
                    if name not in stages[s].inbox:
                        stages[s].inbox[name] = self.transport.recv(self.stage_devices[src][k].process_index, name)
        return stages

    def _path(self, directory: str) -> str:
        return os.path.join(directory, f"process_{self.me}.msgpack")

    def save(self, directory: str, state: AsyncState) -> AsyncState:
        """Writes this process's state (after moving the next tick's messages into it; the
        returned state holds them, the same training state)."""
        stages = self._next_messages(state)
        host = lambda tree: jax.tree.map(np.asarray, jax.device_get(tree))
        blob = {"step": state.step, "tick": state.tick, "stages": {}}
        for s, st in stages.items():
            blob["stages"][str(s)] = {
                "params": host(st.params), "opt_state": flax.serialization.to_state_dict(host(st.opt_state)),
                "stash": {str(m): {"leaves": {str(i): self._host_leaf(s, a) for i, a in enumerate(jax.tree.leaves(v))},
                                   "met": np.zeros(3, np.float32) if met is None else host(met)}
                          for m, (v, met) in st.stash.items()},
                "inbox": {k: host(v) for k, v in st.inbox.items()},
                "labels": {str(m): np.asarray(v) for m, v in st.labels.items()}}
        os.makedirs(directory, exist_ok=True)
        path = self._path(directory)
        if os.path.exists(path):
            os.replace(path, checkpoint.prev_path(path))
        atomic_write_bytes(path, flax.serialization.msgpack_serialize(blob))
        return AsyncState(state.step, state.tick, stages)

    def exists(self, directory: str) -> bool:
        return checkpoint.exists(self._path(directory))

    def _read(self, blob: dict, path: str, template: AsyncState) -> AsyncState:
        """The state from a checkpoint file's contents (read by :func:`checkpoint.load_msgpack`)."""
        try:
            stages = {}
            for s, tmpl in template.stages.items():
                d = blob["stages"][str(s)]
                params = jax.device_put(flax.serialization.from_state_dict(tmpl.params, d["params"]), self.rep[s])
                opt = jax.device_put(flax.serialization.from_state_dict(tmpl.opt_state, d["opt_state"]), self.rep[s])
                stash = {}
                treedef = self._vjp_treedef(s, params) if d["stash"] else None  # one trace per stage
                for m, e in d["stash"].items():
                    leaves = [e["leaves"][str(i)] for i in range(len(e["leaves"]))]
                    vjp = jax.tree.unflatten(treedef, [self._device_leaf(s, a) for a in leaves])
                    met = jax.device_put(e["met"], self.rep[s]) if s == self.num_stages - 1 else None
                    stash[int(m)] = (vjp, met)
                whole = [k for k in d["inbox"] if "@" not in k]
                if whole:  # one array per message: written before messages went part by part
                    raise ValueError(f"its messages {whole[:2]} are whole arrays (an earlier version's format)")
                stages[s] = StageState(params, opt, stash, dict(d["inbox"]),
                                       {int(m): v for m, v in d["labels"].items()})
            return AsyncState(int(blob["step"]), int(blob["tick"]), stages)
        except Exception as e:  # damaged or from another network / optimiser / stage split
            raise ValueError(f"checkpoint {path} is corrupt or does not match this config: "
                             f"{type(e).__name__}: {e}") from None

    def _host_leaf(self, s: int, a: jax.Array):
        """A kept vjp's array on the host: whole where this process has all of it (or it is
        replicated), else this process's parts ``{"shape", "axis", "parts": {k: part}}``."""
        if not isinstance(a, jax.Array) or a.is_fully_addressable or a.is_fully_replicated:
            return np.asarray(jax.device_get(a))
        part0 = a.addressable_shards[0].data
        axis = next(i for i, (n, m) in enumerate(zip(a.shape, part0.shape)) if n != m)
        return {"shape": np.asarray(a.shape, np.int64), "axis": axis,
                "parts": {str(self.position[s][sh.device.id]): np.asarray(sh.data) for sh in a.addressable_shards}}

    def _device_leaf(self, s: int, a) -> jax.Array:
        if isinstance(a, dict):  # this process's parts of an array split over processes
            sharding = NamedSharding(self.meshes[s], P(*([None] * int(a["axis"])), "data"))
            parts = [jax.device_put(a["parts"][str(k)], self.stage_devices[s][k]) for k in self.local_k[s]]
            return jax.make_array_from_single_device_arrays(tuple(int(n) for n in a["shape"]), sharding, parts)
        return jax.device_put(a, self._leaf_sharding(s, a))

    def _leaf_sharding(self, s: int, a) -> NamedSharding:
        """Residuals with the batch axis (1: time-major activations) split over the stage's data
        devices where it divides, else replicated (the weights)."""
        b = self.batch_size
        if a.ndim >= 2 and a.shape[1] == b and len(self.stage_devices[s]) > 1:
            return self.time_batch[s]
        return self.rep[s]

    def _vjp_treedef(self, s: int, params):
        t, b = self.num_steps, self.batch_size
        y = jax.ShapeDtypeStruct((b,), jnp.int32)
        if s == 0:
            x = jax.ShapeDtypeStruct((b,) + self.input_shape, jnp.float32)
            out = self._fwd[s].eval_shape(params, x, y, jax.random.key(0), jnp.int32(0))
        else:
            shape = (t, b, -(-math.prod(self._in_shape(s)) // 8))
            out = self._fwd[s].eval_shape(params, jax.ShapeDtypeStruct(shape, jnp.uint8), y)
        return jax.tree.structure(out[1])

    def restore_latest(self, directory: str, template: AsyncState, *,
                       warn: Callable[[str], None]) -> Optional[tuple[AsyncState, str]]:
        """This process's newest readable checkpoint (the previous one if the newest is damaged,
        saying so: :func:`spikepipe_jax.train.checkpoint.read_latest`); ``None`` if there is none.
        With several processes every one resumes from the same step
        (:func:`spikepipe_jax.train.checkpoint.read_common_latest`)."""
        return checkpoint.read_common_latest(self._path(directory), lambda blob: int(blob["step"]),
                                             lambda blob, p: self._read(blob, p, template), warn=warn)

r"""Inter-layer pipelining executed on a device mesh: GPipe and PipeDream 1F1B over stages, tick-synchronously.

``scripts.train`` runs ``pipeline.execute="gpipe"`` here; ``"1f1b"`` runs in
:mod:`spikepipe_jax.train.async_executor` (the same per-stage order and delays, but no barrier
after every tick, so faster); this module's 1F1B stays as the tick-synchronous variant it is
tested against (``tests/executor_cases.py``) and benchmarked beside (``benchmarks.pipeline
--modes=1f1b_ticks``). :func:`make_plan` validates both.

The network's weight layers are split into ``S`` contiguous *stages*
(:func:`spikepipe_jax.snn.apply_stage`); stage ``s`` runs on the devices with index ``s`` on the
``"stage"`` axis of a ``("data", "stage")`` mesh, the ``"data"`` axis splits every batch
(data parallelism, gradients averaged over it). One jitted SPMD program (``jax.shard_map``)
runs a fixed number of *ticks*; in each tick every device does one action of its stage, chosen
by ``lax.switch`` from a static table of ``(stage, action)`` branches (a device runs only its
branch; bubbles are an idle branch, never a masked computation, so no NaN can leak into a
gradient), then the stages exchange their messages with two ``ppermute``\ s along the stage
axis: spikes forward (``uint8``, exact 0/1) and gradients backward (``float32``).

Actions of stage ``s`` on micro-/mini-batch ``m``:

* ``F``: ``jax.vjp`` of the stage on its input (the encoded batch for ``s = 0``, the spikes that
  arrived from ``s - 1`` otherwise; the last stage's output is the loss), send the output spikes
  on, and keep the vjp's *residuals* (every array its backward needs, the weights it used
  included: that is PipeDream's weight stashing) as bytes in a ring buffer;
* ``B``: rebuild the vjp from the kept residuals and apply it to the gradient that arrived from
  ``s + 1`` (for the last stage, 1 for the loss): no forward recomputation; send the input
  gradient back; the weight gradient is averaged over ``"data"``.

**gpipe** (``M`` micro-batches per batch, Huang et al. 2019): ticks ``0 .. M+S-2`` are forward
ticks (stage ``s`` does ``F`` of micro-batch ``t - s``), ticks ``M+S-1 .. 2(M+S-1)-1`` backward
ticks in reverse micro-batch order; then the gradients of all stages are summed over the stage
axis and every device applies the same synchronous update. The batch is encoded once, as in
the unpipelined step, and split into micro-batches afterwards, so the result equals
``pipeline.execute="none"`` up to float summation order.

**1f1b** (PipeDream's asynchronous one-forward-one-backward with weight stashing, Narayanan et
al. 2019; one mini-batch enters per training step): stage ``s`` does ``F`` in ticks where
``t - s`` is even and ``B`` where it is odd, so ``F(m, s)`` runs at tick ``2m + s`` and ``B(m,
s)`` at ``2m + 2S - 1 - s``, and applies its optimiser update right after each ``B``. Between the
forward and the update of one mini-batch, stage ``s`` applies ``S - 1 - s`` other updates:
exactly the delays ``schedule.delays_for("1f1b", stage map)`` gives, and the backward uses the
stashed weights of the forward, so the run equals the single-device simulator
``pipeline.simulate="stash"`` with those per-layer delays. One training step runs two ticks.
At the end of training :meth:`Executor.drain` runs the ``2S - 2`` ticks that finish the
mini-batches still in flight (no new ones enter); the simulator's final weights are those.

State layout: every device keeps a full copy of the parameters and optimiser state (leading
``[S]`` axis, sharded over ``"stage"``); stage ``s``'s copy is authoritative for its own layers
(the only ones it computes with or updates meaningfully), and :meth:`Executor.params`
assembles the network from them. This trades memory (``S`` times the parameters) for one code
path for any stage split. In flight: a ring of ``S`` (1F1B) or ``M`` (GPipe) residual buffers
(32-bit words, as wide as the largest stage's residuals, plus a scratch entry) and of encoded inputs and labels.

Several processes (``jax.distributed``, :func:`spikepipe_jax.runtime.initialize_distributed`):
the mesh spans every process's devices and nothing here changes; the training loop feeds each
process the same global batch and gathers the state for checkpoints.

SpikePipe's own placements (F/B/W of one layer on different devices) run in
:mod:`spikepipe_jax.train.task_executor` (``pipeline.execute="spikepipe"``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from spikepipe_jax import snn
from spikepipe_jax.train import losses
from spikepipe_jax.train import stages as stages_lib

MODES = ("none", "gpipe", "1f1b", "spikepipe")
EXECUTED = ("gpipe", "1f1b")  # by this module's Executor (1f1b: also async_executor; spikepipe: task_executor)


class ExecState(NamedTuple):
    """The executor's training state (a pytree; checkpointed whole with orbax-checkpoint,
    ``train.checkpoint.ShardedCheckpoints``, so resume is exact).

    Leaves of ``params``, ``opt_state``, ``res``, ``x0``, ``ys``, ``fbuf`` and ``bbuf`` have a
    leading ``[S]`` axis (one entry per stage, sharded over ``"stage"``).
    """
    params: Any      # full parameter copy per stage
    opt_state: Any   # optimiser state per stage
    step: jax.Array  # int32: mini-batches fed (training steps taken)
    tick: jax.Array  # int32: ticks run (1F1B: 2 * step until the drain)
    res: jax.Array   # [S, R + 1, D, words] uint32: each in-flight forward's residuals (entry R: scratch)
    x0: jax.Array    # [S, R, T, B, *input] encoded network input of in-flight batches (stage 0 reads it)
    ys: jax.Array    # [S, R, B] labels of in-flight batches (the last stage reads them)
    fbuf: jax.Array  # [S, T, B, F] uint8 spikes that arrived from the previous stage
    bbuf: jax.Array  # [S, T, B, F] float32 gradient that arrived from the next stage


@dataclasses.dataclass(frozen=True)
class Plan:
    """Static description of a pipelined run."""
    mode: str
    stages: tuple[tuple[int, int], ...]
    data: int          # devices on the "data" axis
    microbatches: int  # GPipe's M (1 for 1F1B)
    processors: int = 0  # spikepipe: the schedule's processors (one device each)

    @property
    def num_stages(self) -> int:
        return len(self.stages)


def make_plan(config, num_devices: int) -> Plan:
    """Validates ``config.pipeline.execute/stages/microbatches`` against the network and the
    devices; the stages come from :func:`spikepipe_jax.train.stages.config_stages` (balanced by
    the cost model), the ones the simulator's delays are derived for.

    Raises:
      ValueError: naming the bad value (unknown mode, ``stages`` not in ``[0, L]`` or not
        dividing the devices, ``microbatches < 1`` or not dividing the per-replica batch,
        ``microbatches != 1`` with 1F1B, delays / mitigation / simulation set together with an
        executed pipeline).
    """
    p = config.pipeline
    mode = p.get("execute", "none")
    if mode not in MODES:
        raise ValueError(f"unknown pipeline.execute {mode!r}; expected one of {MODES}")
    micro = p.get("microbatches", 1)
    if isinstance(micro, bool) or not isinstance(micro, int) or micro < 1:
        raise ValueError(f"pipeline.microbatches must be a positive integer, got {micro!r}")
    for field, off in (("delays", "none"), ("mitigation", "none"), ("simulate", "none")):
        if p.get(field, off) != off:
            raise ValueError(f"pipeline.execute={mode!r} runs the pipeline itself (its delays are the "
                             f"schedule's); set pipeline.{field}={off!r}, got {p.get(field)!r}")
    if mode == "spikepipe":  # one processor of the schedule per device (train/task_executor.py)
        procs = p.get("stages", 0) or num_devices
        if isinstance(procs, bool) or not isinstance(procs, int) or procs < 1:
            raise ValueError(f"pipeline.stages must be a non-negative integer, got {p.get('stages')!r}")
        if procs != num_devices:
            raise ValueError(f"pipeline.execute='spikepipe' places the schedule's processors one per device: "
                             f"pipeline.stages={procs} needs {procs} devices, got {num_devices}")
        if micro != 1:
            raise ValueError(f"pipeline.microbatches={micro}: spikepipe feeds whole mini-batches; set it to 1")
        budget = p.get("comm_budget", 0.0)
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) \
                or budget < 0:
            raise ValueError(f"pipeline.comm_budget must be a number >= 0 (a multiple of 1F1B's bytes; 0: no "
                             f"limit), got {budget!r}")
        layers = len(config.model.layers)
        return Plan(mode=mode, stages=tuple((l, l + 1) for l in range(layers)), data=1, microbatches=1,
                    processors=procs)
    stages = stages_lib.config_stages(config)  # validates pipeline.stages
    num_stages = len(stages)
    if num_devices % num_stages:
        raise ValueError(f"pipeline.stages={num_stages} does not divide the {num_devices} devices "
                         f"(the devices left over are data-parallel replicas of the pipeline)")
    if mode == "1f1b" and micro != 1:
        raise ValueError(f"pipeline.microbatches={micro}: 1f1b (PipeDream, asynchronous) feeds whole "
                         f"mini-batches; set it to 1 (micro-batches are GPipe's)")
    data = num_devices // num_stages
    batch = config.train.batch_size
    if batch % (data * micro):
        raise ValueError(f"train.batch_size={batch} must be divisible by {data} data-parallel replica(s) x "
                         f"pipeline.microbatches={micro}")
    return Plan(mode=mode, stages=stages, data=data, microbatches=micro)


def tick_table(plan: Plan) -> list[list[tuple[str, int]]]:
    """The actions of one training step in steady state: per tick, per stage, ``("F", i)``,
    ``("B", i)`` or ``("idle", -1)`` (``i``: micro-batch; 1F1B: 0). 1F1B: the two ticks of a step
    (stage ``s`` does F when ``t - s`` is even); GPipe: all ``2(M + S - 1)`` ticks."""
    s_count, m = plan.num_stages, plan.microbatches
    if plan.mode == "1f1b":
        return [[("F", 0) if (t - s) % 2 == 0 else ("B", 0) for s in range(s_count)] for t in range(2)]
    span = m + s_count - 1
    rows = []
    for g in range(2 * span):
        row = []
        for s in range(s_count):
            i = g - s if g < span else m - 1 - (g - span - (s_count - 1 - s))
            row.append((("F" if g < span else "B"), i) if 0 <= i < m else ("idle", -1))
        rows.append(row)
    return rows


def predicted_step_time(plan: Plan, forward_s: Sequence[float], backward_s: Sequence[float]) -> float:
    """One training step's time from per-stage action times (measured alone on one device, at the
    batch of one tick; F: the stage's ``jax.vjp``, B: applying it): each tick of
    :func:`tick_table` lasts as long as its slowest device (the exchange at its end is a barrier)."""
    dur = {"F": lambda s: forward_s[s], "B": lambda s: backward_s[s], "idle": lambda s: 0.0}
    return sum(max(dur[a](s) for s, (a, _) in enumerate(row)) for row in tick_table(plan))


def make_mesh(plan: Plan, devices: Optional[Sequence[Any]] = None) -> Mesh:
    """A ``("data", "stage")`` mesh; consecutive devices form one pipeline."""
    devices = list(jax.devices() if devices is None else devices)
    need = plan.data * plan.num_stages
    if len(devices) != need:
        raise ValueError(f"the plan needs {need} devices ({plan.data} data x {plan.num_stages} stages), "
                         f"got {len(devices)}")
    return Mesh(np.array(devices).reshape(plan.data, plan.num_stages), ("data", "stage"))


def _pack(spk: jax.Array, width: int) -> jax.Array:
    """``[T, B, *shape]`` spikes -> ``[T, B, width]`` uint8 (zero padded)."""
    t, b = spk.shape[:2]
    flat = spk.reshape(t, b, -1).astype(jnp.uint8)
    return jnp.pad(flat, ((0, 0), (0, 0), (0, width - flat.shape[2])))


def _unpack(buf: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    t, b = buf.shape[:2]
    n = math.prod(shape)
    return buf[:, :, :n].reshape((t, b) + tuple(shape)).astype(dtype)


def _pad_grad(g: jax.Array, width: int) -> jax.Array:
    t, b = g.shape[:2]
    flat = g.reshape(t, b, -1).astype(jnp.float32)
    return jnp.pad(flat, ((0, 0), (0, 0), (0, width - flat.shape[2])))


class Executor:
    """Builds and runs the pipelined train step of a model on a mesh (module docstring)."""

    def __init__(self, model: snn.ModelDef, plan: Plan, tx: optax.GradientTransformation, *,
                 loss_name: str, num_classes: int, encode_fn: Callable, binary_input: bool,
                 batch_size: int, num_steps: int, input_shape: Sequence[int], mesh: Mesh,
                 compiler_options: Optional[dict] = None):
        if plan.mode not in EXECUTED:
            raise ValueError(f"no executor for pipeline.execute={plan.mode!r}")
        self.model = model._replace(native="off")  # custom calls stay out of the SPMD program
        self.plan, self.tx, self.mesh = plan, tx, mesh
        self.loss_name, self.num_classes = loss_name, num_classes
        self.encode_fn, self.binary_input = encode_fn, binary_input
        self.batch_size, self.num_steps = batch_size, num_steps
        self.input_shape = tuple(int(s) for s in input_shape)
        s_count = plan.num_stages
        self.names = [info.name for info in model.infos]
        self.stage_of = stages_lib.stage_map(plan.stages)
        widths = [math.prod(snn.stage_out_shape(model, st)) for st in plan.stages[:-1]]
        self.width = max(widths, default=1)
        self.ring = s_count if plan.mode == "1f1b" else plan.microbatches
        self.local_batch = batch_size // plan.data // plan.microbatches  # samples per device and tick
        self.ticks_per_step = 2 if plan.mode == "1f1b" else 2 * (plan.microbatches + s_count - 1)
        self.x0_dtype = jnp.uint8 if binary_input else jnp.float32
        self.stage_spec = NamedSharding(mesh, P("stage"))
        self.replicated = NamedSharding(mesh, P())
        opts = compiler_options or {}
        self._step = jax.jit(self._train_step, donate_argnums=(0,), compiler_options=opts)
        self._drain = jax.jit(self._drain_ticks, donate_argnums=(0,), compiler_options=opts)
        self._params = jax.jit(self._assemble, out_shardings=self.replicated)
        self._layout_cache = None
        self.res_words = 0

    def bytes_per_step(self) -> int:
        """Bytes the ``ppermute`` calls move in one training step: every tick, every stage boundary,
        both directions (``uint8`` spikes forward, ``float32`` gradients back, padded to the widest
        boundary; idle directions send zeros), for every data-parallel replica."""
        per_tick = self.num_steps * (self.batch_size // self.plan.microbatches) * self.width * (1 + 4)
        return self.ticks_per_step * (self.plan.num_stages - 1) * per_tick

    def useful_bytes_per_batch(self) -> int:
        """:func:`boundary_bytes` of this executor's stages and batch."""
        return boundary_bytes(self.model, self.plan.stages, self.batch_size, self.num_steps)

    # ----- residuals: what a stage's forward keeps for its backward --------------------------
    def _stage_vjp(self, s: int):
        """``f(w, x, y) -> (out, vjp, aux)``: ``jax.vjp`` of stage ``s`` (w.r.t. its weights, and its
        input past the first stage). The last stage's output is the loss (``aux``: the logits)."""
        stage, model, last, first = self.plan.stages[s], self.model, s == self.plan.num_stages - 1, s == 0

        def fn(w, x, y):
            out = snn.apply_stage(w, model, x, stage)
            if last:
                return losses.compute_loss(self.loss_name, out, y, self.num_classes), out.logits
            return out

        def f(w, x, y):
            if first:
                res = jax.vjp(lambda w_: fn(w_, x, y), w, has_aux=last)
            else:
                res = jax.vjp(lambda w_, x_: fn(w_, x_, y), w, x, has_aux=last)
            return res if last else res + (None,)
        return f

    def _input_shape(self, s: int) -> tuple[int, ...]:
        """Per-device stage input ``[T, b, ...]`` (float32)."""
        per = (tuple(self.input_shape) if s == 0
               else tuple(self.model.infos[self.plan.stages[s][0] - 1].out_shape))
        return (self.num_steps, self.local_batch) + per

    def _layouts(self, params) -> list:
        """Per stage: the residuals' treedef and ``(shape, dtype, offset, words)`` of each leaf in
        its ring entry of 32-bit words (from an abstract trace of :meth:`_stage_vjp`)."""
        if self._layout_cache is None:
            shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
            y = jax.ShapeDtypeStruct((self.local_batch,), jnp.int32)
            out = []
            for s in range(self.plan.num_stages):
                x = jax.ShapeDtypeStruct(self._input_shape(s), jnp.float32)
                vjp = jax.eval_shape(self._stage_vjp(s), shapes, x, y)[1]
                leaves, treedef = jax.tree.flatten(vjp)
                fields, offset = [], 0
                for leaf in leaves:
                    n = _words(leaf.shape, leaf.dtype)
                    fields.append((tuple(leaf.shape), jnp.dtype(leaf.dtype), offset, n))
                    offset += n
                out.append((treedef, fields, offset))
            self._layout_cache = out
        return self._layout_cache

    @staticmethod
    def _pack_residuals(leaves, words: int) -> jax.Array:
        """The leaves as one ``[words]`` uint32 vector: 4-byte leaves bit for bit (no data
        movement but the one copy of the concatenation), narrower ones four elements to a word."""
        parts = [_to_words(a) for a in leaves]
        used = sum(p.shape[0] for p in parts)
        if used < words:
            parts.append(jnp.zeros((words - used,), jnp.uint32))
        return jnp.concatenate(parts) if parts else jnp.zeros((0,), jnp.uint32)

    @staticmethod
    def _unpack_residuals(buf: jax.Array, fields) -> list:
        return [_from_words(buf[offset:offset + n], shape, dtype) for shape, dtype, offset, n in fields]

    # ----- state -------------------------------------------------------------------------------
    def init(self, params) -> ExecState:
        """The initial state from unstacked parameters (placed on the mesh)."""
        s, r, t = self.plan.num_stages, self.ring, self.num_steps
        b = self.batch_size // self.plan.microbatches  # global batch of one ring entry
        self.res_words = max(total for _, _, total in self._layouts(params))
        stack = lambda tree: jax.tree.map(lambda a: jnp.broadcast_to(a, (s,) + a.shape), tree)
        state = ExecState(
            params=stack(params), opt_state=stack(self.tx.init(params)),
            step=jnp.zeros((), jnp.int32), tick=jnp.zeros((), jnp.int32),
            res=jnp.zeros((s, r + 1, self.plan.data, self.res_words), jnp.uint32),
            x0=jnp.zeros((s, r, t, b) + self.input_shape, self.x0_dtype),
            ys=jnp.zeros((s, r, b), jnp.int32),
            fbuf=jnp.zeros((s, t, b, self.width), jnp.uint8),
            bbuf=jnp.zeros((s, t, b, self.width), jnp.float32))
        if jax.process_count() > 1:
            state = jax.device_get(state)  # host values, the same in every process, onto the global mesh
        return self.place(state)

    def shardings(self, state: ExecState) -> ExecState:
        """Where each leaf lives: the stage axis first, the batch axis over ``"data"``."""
        st = self.stage_spec
        batch = lambda *lead: NamedSharding(self.mesh, P("stage", *lead, "data"))
        return ExecState(
            params=jax.tree.map(lambda _: st, state.params),
            opt_state=jax.tree.map(lambda _: st, state.opt_state),
            step=self.replicated, tick=self.replicated, res=batch(None), x0=batch(None, None),
            ys=batch(None), fbuf=batch(None), bbuf=batch(None))

    def place(self, state: ExecState) -> ExecState:
        return jax.device_put(state, self.shardings(state))

    def _specs(self, state: ExecState) -> ExecState:
        return jax.tree.map(lambda sh: sh.spec, self.shardings(state),
                            is_leaf=lambda x: isinstance(x, NamedSharding))

    def params(self, state: ExecState):
        """The network's parameters: each layer from the stage that owns it (replicated)."""
        return self._params(state.params)

    def _assemble(self, stacked):
        return {n: jax.tree.map(lambda a, s=s: a[s], stacked[n]) for n, s in zip(self.names, self.stage_of)}

    # ----- the SPMD program ------------------------------------------------------------------
    def _branches(self, params):
        """``[F_0 .. F_{S-1}, B_0 .. B_{S-1}, idle]``; each maps the tick's operands to
        ``(fsend, bsend, dw, loss, correct, residuals)``."""
        s_count = self.plan.num_stages
        layouts = self._layouts(params)
        zero = jnp.zeros((), jnp.float32)

        def outputs(ops, fsend=None, bsend=None, dw=None, loss=zero, correct=zero, res=None):
            return (jnp.zeros_like(ops["fbuf"]) if fsend is None else fsend,
                    jnp.zeros_like(ops["bbuf"]) if bsend is None else bsend,
                    jax.tree.map(jnp.zeros_like, ops["params"]) if dw is None else dw,
                    loss, correct, jnp.zeros((self.res_words,), jnp.uint32) if res is None else res)

        def idle(ops):
            return outputs(ops)

        def forward(s):
            last = s == s_count - 1

            def branch(ops):
                if s == 0:
                    x = ops["f_x0"].astype(jnp.float32)
                else:
                    x = _unpack(ops["fbuf"], self._input_shape(s)[2:])
                out, vjp, logits = self._stage_vjp(s)(ops["params"], x, ops["y"])
                res = self._pack_residuals(jax.tree.leaves(vjp), self.res_words)
                if last:
                    correct = jnp.sum(jnp.argmax(logits, -1) == ops["y"]).astype(jnp.float32)
                    return outputs(ops, loss=out, correct=correct, res=res)
                return outputs(ops, fsend=_pack(out, self.width), res=res)
            return branch

        def backward(s):
            last = s == s_count - 1
            treedef, fields, _ = layouts[s]

            def branch(ops):
                vjp = jax.tree.unflatten(treedef, self._unpack_residuals(ops["res"], fields))
                if last:
                    ct = jnp.ones((), jnp.float32)
                else:
                    ct = _unpack(ops["bbuf"], snn.stage_out_shape(self.model, self.plan.stages[s]))
                grads = vjp(ct)
                dw, dx = grads[0], (grads[1] if s > 0 else None)
                return outputs(ops, bsend=None if dx is None else _pad_grad(dx, self.width), dw=dw)
            return branch

        return [forward(s) for s in range(s_count)] + [backward(s) for s in range(s_count)] + [idle]

    def _exchange(self, fsend, bsend):
        """Spikes one stage on, gradients one stage back (no wrap-around)."""
        n = self.plan.num_stages
        if n == 1:
            return jnp.zeros_like(fsend), jnp.zeros_like(bsend)
        fwd = jax.lax.ppermute(fsend, "stage", [(i, i + 1) for i in range(n - 1)])
        bwd = jax.lax.ppermute(bsend, "stage", [(i + 1, i) for i in range(n - 1)])
        return fwd, bwd

    def _local(self, state: ExecState) -> dict:
        """Per-device view inside shard_map: the leading [1] stage axis (and [1] data axis) dropped."""
        sq = lambda tree: jax.tree.map(lambda a: a[0], tree)
        return dict(params=sq(state.params), opt=sq(state.opt_state), res=state.res[0, :, 0],
                    x0=state.x0[0], ys=state.ys[0], fbuf=state.fbuf[0], bbuf=state.bbuf[0])

    def _global(self, loc: dict, step, tick) -> ExecState:
        ex = lambda tree: jax.tree.map(lambda a: a[None], tree)
        return ExecState(params=ex(loc["params"]), opt_state=ex(loc["opt"]), step=step, tick=tick,
                         res=loc["res"][None, :, None], x0=loc["x0"][None], ys=loc["ys"][None],
                         fbuf=loc["fbuf"][None], bbuf=loc["bbuf"][None])

    def _tick(self, loc: dict, branch_index, f_slot, b_slot):
        """One tick on one device: its branch (a forward keeps its residuals in the ring at
        ``f_slot``; a backward reads them from ``b_slot``), then the exchange. Returns the new local
        state (parameters untouched), the weight gradient (averaged over "data") and the metrics."""
        ops = dict(params=loc["params"], f_x0=loc["x0"][f_slot], y=loc["ys"][f_slot],
                   fbuf=loc["fbuf"], bbuf=loc["bbuf"], res=loc["res"][b_slot])
        fsend, bsend, dw, loss, correct, res = jax.lax.switch(branch_index, self._branches(loc["params"]), ops)
        # a forward's residuals go to ring entry f_slot; other actions write their (zero) output
        # to the spare last entry, which nothing reads (cheaper than selecting the old entry)
        is_f = branch_index < self.plan.num_stages
        ring = loc["res"].at[jnp.where(is_f, f_slot, self.ring)].set(res)
        fbuf, bbuf = self._exchange(fsend, bsend)
        dw = jax.lax.pmean(dw, "data")
        return dict(loc, res=ring, fbuf=fbuf, bbuf=bbuf), dw, loss, correct

    def _metrics(self, loss, correct, count, dw_finite):
        """Scalars on every device: the last stage's loss / accuracy of the batches it finished."""
        loss = jax.lax.pmean(jax.lax.psum(loss, "stage"), "data")
        correct = jax.lax.psum(jax.lax.psum(correct, "stage"), "data")
        count = jax.lax.psum(count, "stage").astype(jnp.float32)
        finite = jax.lax.pmin(jax.lax.pmin(dw_finite.astype(jnp.int32), "stage"), "data") > 0
        n = jnp.maximum(count, 1.0)
        return {"loss": loss / n, "accuracy": correct / (n * self.batch_size), "count": count,
                "finite": finite}

    # --- the tick loops (lax.scan over ticks: each branch is traced once) ----------------------
    def _update(self, params, opt, grads):
        upd, opt = self.tx.update(grads, opt, params)
        return optax.apply_updates(params, upd), opt

    def _ticks_1f1b(self, loc, tick, num_ticks: int, fed):
        """``num_ticks`` 1F1B ticks from ``tick`` with ``fed`` mini-batches available: stage ``s``
        does F of ``m = (g - s) / 2`` when ``g - s`` is even and B of ``m = (g + s - 2S + 1) / 2``
        when it is odd (valid when ``0 <= m < fed``), and updates after each B."""
        s_count, r = self.plan.num_stages, self.ring
        s = jax.lax.axis_index("stage")

        def body(carry, g):
            loc, loss_sum, correct_sum, count, finite = carry
            odd = (g - s) % 2 == 1
            m_f = (g - s) // 2
            m_b = (g + s - 2 * s_count + 1) // 2
            f_ok = jnp.logical_and(~odd, jnp.logical_and(m_f >= 0, m_f < fed))
            b_ok = jnp.logical_and(odd, jnp.logical_and(m_b >= 0, m_b < fed))
            idx = jnp.where(f_ok, s, jnp.where(b_ok, s_count + s, 2 * s_count))
            loc, dw, loss, correct = self._tick(loc, idx, jnp.maximum(m_f, 0) % r, jnp.maximum(m_b, 0) % r)
            params, opt = jax.lax.cond(b_ok, lambda a: self._update(*a), lambda a: (a[0], a[1]),
                                       (loc["params"], loc["opt"], dw))
            loc = dict(loc, params=params, opt=opt)
            done = jnp.logical_and(f_ok, s == s_count - 1)  # the last stage's forward gives the loss
            return (loc, loss_sum + jnp.where(done, loss, 0.0), correct_sum + jnp.where(done, correct, 0.0),
                    count + done.astype(jnp.int32),
                    jnp.logical_and(finite, jnp.logical_or(~b_ok, _all_finite(dw)))), None

        zero = jnp.zeros((), jnp.float32)
        init = (loc, zero, zero, jnp.zeros((), jnp.int32), jnp.array(True))
        (loc, loss_sum, correct_sum, count, finite), _ = jax.lax.scan(
            body, init, tick + jnp.arange(num_ticks, dtype=jnp.int32))
        return loc, self._metrics(loss_sum, correct_sum, count, finite)

    def _ticks_gpipe(self, loc):
        """GPipe: forward ticks ``0 .. M+S-2`` (F of micro-batch ``g - s``), backward ticks after
        them in reverse micro-batch order; gradients accumulated, then one synchronous update."""
        s_count, m = self.plan.num_stages, self.plan.microbatches
        s = jax.lax.axis_index("stage")
        span = m + s_count - 1

        def body(carry, g):
            loc, gacc, loss_sum, correct_sum = carry
            fwd = g < span
            i = jnp.where(fwd, g - s, m - 1 - (g - span - (s_count - 1 - s)))
            ok = jnp.logical_and(i >= 0, i < m)
            idx = jnp.where(ok, jnp.where(fwd, s, s_count + s), 2 * s_count)
            slot = jnp.clip(i, 0, m - 1)
            loc, dw, loss, correct = self._tick(loc, idx, slot, slot)
            done = jnp.logical_and(jnp.logical_and(ok, fwd), s == s_count - 1)
            return (loc, jax.tree.map(jnp.add, gacc, dw), loss_sum + jnp.where(done, loss, 0.0),
                    correct_sum + jnp.where(done, correct, 0.0)), None

        zero = jnp.zeros((), jnp.float32)
        init = (loc, jax.tree.map(jnp.zeros_like, loc["params"]), zero, zero)
        (loc, gacc, loss_sum, correct_sum), _ = jax.lax.scan(body, init, jnp.arange(2 * span, dtype=jnp.int32))
        # one synchronous update: the stages' gradients summed (each holds its own layers'),
        # averaged over the micro-batches; every device applies the same update
        grads = jax.tree.map(lambda a: jax.lax.psum(a, "stage") / m, gacc)
        params, opt = self._update(loc["params"], loc["opt"], grads)
        loc = dict(loc, params=params, opt=opt)
        count = jnp.where(s == s_count - 1, 1, 0).astype(jnp.int32)
        return loc, self._metrics(loss_sum / m, correct_sum, count, _all_finite(grads))

    # --- the jitted steps -------------------------------------------------------------------
    def _train_step(self, state: ExecState, x, y, key):
        xt = self.encode_fn(x, jax.random.fold_in(key, state.step)).astype(self.x0_dtype)  # [T, B, ...]
        mode = self.plan.mode

        def body(st: ExecState, xt, y):
            loc = self._local(st)
            if mode == "1f1b":
                slot = st.step % self.ring
                loc = dict(loc, x0=loc["x0"].at[slot].set(xt), ys=loc["ys"].at[slot].set(y))
                loc, met = self._ticks_1f1b(loc, st.tick, 2, st.step + 1)
            else:
                m, t = self.plan.microbatches, xt.shape[0]
                xm = jnp.moveaxis(xt.reshape((t, m, -1) + xt.shape[2:]), 1, 0)  # [M, T, b, ...]
                loc = dict(loc, x0=xm, ys=y.reshape(m, -1))
                loc, met = self._ticks_gpipe(loc)
            return self._global(loc, st.step + 1, st.tick + self.ticks_per_step), met

        specs = self._specs(state)
        run = jax.shard_map(body, mesh=self.mesh, in_specs=(specs, P(None, "data"), P("data")),
                            out_specs=(specs, P()), check_vma=False)
        return run(state, xt, y)

    def _drain_ticks(self, state: ExecState):
        specs = self._specs(state)
        n = 2 * self.plan.num_stages - 2

        def body(st: ExecState):
            loc, met = self._ticks_1f1b(self._local(st), st.tick, n, st.step)
            return self._global(loc, st.step, st.tick + n), met

        run = jax.shard_map(body, mesh=self.mesh, in_specs=(specs,), out_specs=(specs, P()), check_vma=False)
        return run(state)

    def step(self, state: ExecState, x, y, key):
        """One training step: a new batch enters (``x`` ``[B, ...]``, ``y`` ``[B]``).
        Metrics: ``loss`` / ``accuracy`` of the batches the last stage finished in this step
        (``count`` of them: 0 while a 1F1B pipeline fills), ``finite``."""
        return self._step(state, x, y, key)

    def drain(self, state: ExecState):
        """1F1B: finish the batches in flight (no new ones); GPipe: nothing to do."""
        if self.plan.mode != "1f1b" or self.plan.num_stages == 1:
            return state, None
        return self._drain(state)


def boundary_bytes(model: snn.ModelDef, stages: Sequence[tuple[int, int]], batch_size: int,
                   num_steps: int) -> int:
    """What one batch has to send across the stage boundaries: each boundary's spikes once at 1
    bit and its gradient once at 32 bits. These are the cost model's default widths
    (``config.hardware.spike_bits`` / ``float_bits``), and the total equals
    ``schedule.comm.bytes_communicated`` of the training graph with each layer's tasks on its
    stage's processor (``tests/test_executor.py``)."""
    total = 0
    for st in stages[:-1]:
        n = num_steps * batch_size * math.prod(snn.stage_out_shape(model, st))
        total += math.ceil(n / 8) + 4 * n
    return total


def _words(shape, dtype) -> int:
    """32-bit words a leaf takes in a residual ring entry."""
    n = math.prod(shape) * jnp.dtype(dtype).itemsize
    return -(-n // 4)


def _to_words(a: jax.Array) -> jax.Array:
    """A leaf as flat uint32 words: bit for bit when its item size is a multiple of 4 bytes,
    else its bytes four to a word (zero padded)."""
    if a.dtype == jnp.bool_:
        a = a.astype(jnp.uint8)
    if a.dtype.itemsize % 4 == 0:
        return jax.lax.bitcast_convert_type(a, jnp.uint32).reshape(-1)
    flat = jax.lax.bitcast_convert_type(a, jnp.uint8).reshape(-1)
    flat = jnp.pad(flat, (0, -flat.shape[0] % 4))
    return jax.lax.bitcast_convert_type(flat.reshape(-1, 4), jnp.uint32)


def _from_words(w: jax.Array, shape, dtype) -> jax.Array:
    """Inverse of :func:`_to_words` for a leaf of ``shape`` and ``dtype``."""
    dtype, shape = jnp.dtype(dtype), tuple(shape)
    if dtype.itemsize % 4 == 0:
        per = dtype.itemsize // 4
        return jax.lax.bitcast_convert_type(w.reshape(shape + ((per,) if per > 1 else ())), dtype)
    raw = jax.lax.bitcast_convert_type(w, jnp.uint8).reshape(-1)[:math.prod(shape) * dtype.itemsize]
    if dtype == jnp.bool_:
        return raw.reshape(shape).astype(jnp.bool_)
    size = dtype.itemsize
    return jax.lax.bitcast_convert_type(raw.reshape(shape + ((size,) if size > 1 else ())), dtype)


def _all_finite(tree) -> jax.Array:
    return jnp.isfinite(sum(jnp.sum(g * 0) for g in jax.tree.leaves(tree)))

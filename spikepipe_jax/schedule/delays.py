r"""Gradient delays implied by a pipelined schedule, found by walking its timeline.

The gradient delay :math:`d_l` of layer l is the number of weight versions between the forward
pass that used a weight and the update that applies the gradient computed from that pass.  If
the forward of iteration i reads version :math:`v_i` (the weights after :math:`v_i` updates,
i.e. the updates whose end is at or before the forward's start), its gradient is applied by
update i (making version i+1), and the updates :math:`v_i, \dots, i-1` come in between:

.. math:: d_l = i - v_i = \#\{k < i : \text{end}(W_l^{(k)}) > \text{start}(F_l^{(i)})\}

in steady state.  The training code then trains with ``delayed_gradients(d)``: the gradient of
iteration i is computed at the weights of i - d_l (weight stashing: the backward uses the version
its forward used).

:func:`delays_for` derives :math:`d_l` this way from

* ``"none"``: synchronous training (GPipe and every schedule that flushes): all zero;
* ``"1f1b"``: a simulation of PipeDream's asynchronous one-forward-one-backward pipeline
  (Narayanan et al., SOSP 2019) with S stages (one per layer, or a layer -> stage map); closed
  form :math:`d_l = S - 1 - \sigma(l)`;
* ``"fully_pipelined"``: a simulation of the clocked LayerPipe pipeline in which every stage
  boundary holds a one-period register in both the forward and the backward direction, so the
  forward and the backward of a stage work on different iterations in the same period; closed
  form, LayerPipe2's retiming rule (Unnikrishnan & Parhi, 2025), :math:`d_l = 2\,S(l)` with
  :math:`S(l) = S - 1 - \sigma(l)` the stages after layer l's (1F1B is the same rule counted in
  half-steps: there a stage does one forward half-step and one backward half-step per period);
* a :class:`~spikepipe_jax.schedule.validate.Schedule` (or its JSON with the graph): its periodic
  timeline (earliest start of layer l's forward tasks, latest end of its update, plus the
  transfer of the new weights when they are on another processor);
* a list of ints: returned as is (validated).

This module is pure Python.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from spikepipe_jax.schedule import timeline
from spikepipe_jax.schedule.graph import TaskGraph
from spikepipe_jax.schedule.retiming import stage_map
from spikepipe_jax.schedule.validate import Schedule, schedule_from_json

KINDS = ("none", "1f1b", "fully_pipelined")


def delays_from_timeline(forward_start: Sequence[Sequence[float]],
                         update_end: Sequence[Sequence[float]], *, iteration: int | None = None) -> list[int]:
    """Walks a timeline: for each layer, the weight versions between a forward and its update.

    Args:
      forward_start: ``forward_start[l][i]``, start of layer l's forward for iteration i.
      update_end: ``update_end[l][k]``, time at which the update of iteration k is applied.
      iteration: the iteration i to measure (default: the middle one, in steady state).

    Returns:
      ``d_l = i - #{k : update_end[l][k] <= forward_start[l][i]}`` per layer.

    Raises:
      ValueError: if the lists are empty or of different lengths, or an update of iteration
        >= i is applied before the forward of i starts (a schedule that uses a future gradient).
    """
    if len(forward_start) != len(update_end) or not forward_start:
        raise ValueError("forward_start and update_end need one list per layer, same number of layers")
    out = []
    for l, (fs, ue) in enumerate(zip(forward_start, update_end)):
        n = min(len(fs), len(ue))
        if n == 0:
            raise ValueError(f"layer {l}: empty timeline")
        i = n // 2 if iteration is None else iteration
        if not 0 <= i < n:
            raise ValueError(f"iteration {i} outside the timeline of {n} iterations")
        versions = sum(1 for k in range(len(ue)) if ue[k] <= fs[i])
        if any(ue[k] <= fs[i] for k in range(i, len(ue))):
            raise ValueError(f"layer {l}: the update of an iteration >= {i} ends before forward {i} starts")
        out.append(i - versions)
    return out


def _run(order, deps, dur) -> tuple[dict, dict]:
    """Per-stage op sequences through ``timeline.simulate``; ``(start, end)`` dicts."""
    times = timeline.simulate(len(order), timeline.fixed_order(order), lambda op: deps.get(op, ()),
                              dur.__getitem__)
    return {op: t[0] for op, t in times.items()}, {op: t[1] for op, t in times.items()}


def one_f_one_b_timeline(stages: Sequence[int], num_iterations: int, *, forward_time: float = 1.0,
                         backward_time: float = 1.0) -> tuple[list[list[float]], list[list[float]]]:
    """Simulated PipeDream 1F1B: per-layer forward starts and update ends.

    Stage s first admits ``S - s`` forwards, then alternates one backward (which ends with the
    weight update of its layers) and one forward; ops wait for their stage and their inputs.
    """
    nst = stages[-1] + 1
    n = num_iterations
    order, deps, dur = [], {}, {}
    for s in range(nst):
        warm = min(nst - s, n)
        ops = [("F", s, j) for j in range(warm)]
        for j in range(n):
            ops.append(("B", s, j))
            if warm + j < n:
                ops.append(("F", s, warm + j))
        order.append(ops)
        for j in range(n):
            dur[("F", s, j)], dur[("B", s, j)] = forward_time, backward_time
            deps[("F", s, j)] = [(("F", s - 1, j), 0.0)] if s > 0 else []
            up = ("B", s + 1, j) if s + 1 < nst else ("F", s, j)
            deps[("B", s, j)] = [(up, 0.0), (("F", s, j), 0.0)]
    start, end = _run(order, deps, dur)
    fs = [[start[("F", stages[l], j)] for j in range(n)] for l in range(len(stages))]
    ue = [[end[("B", stages[l], j)] for j in range(n)] for l in range(len(stages))]
    return fs, ue


def fully_pipelined_timeline(stages: Sequence[int], num_iterations: int,
                             ) -> tuple[list[list[float]], list[list[float]]]:
    """Simulated clocked LayerPipe pipeline: per-layer forward starts and update ends.

    One iteration enters per period (length 1).  Data crossing a stage boundary waits in a
    register until the next period, in both directions; within its stage the last layer's
    backward follows its forward in the same period.  Each stage does, per period, its forward
    (first half) and one backward with the weight update (second half).
    """
    nst = stages[-1] + 1
    n = num_iterations
    order, deps, dur = [], {}, {}
    for s in range(nst):
        # per period: one forward, then one backward; the stage's op order interleaves them as
        # the registers deliver them (forward of j at period j + s, backward of j at period
        # j + 2(S-1) - s), which the dependencies below enforce; the order here is only the
        # sequence on the stage.
        fwd = [("F", s, j) for j in range(n)]
        bwd = [("B", s, j) for j in range(n)]
        lag_b = 2 * (nst - 1 - s)
        ops = []
        fi = bi = 0
        while fi < n or bi < n:
            if fi < n and (bi >= n or fi <= bi + lag_b):
                ops.append(fwd[fi])
                fi += 1
            else:
                ops.append(bwd[bi])
                bi += 1
        order.append(ops)
        for j in range(n):
            dur[("F", s, j)], dur[("B", s, j)] = 0.5, 0.5
            # one new iteration per period: the forward of j enters at period j
            deps[("F", s, j)] = [(("F", s - 1, j), 0.5)] if s > 0 else [(("F", s, j - 1), 0.5)] if j else []
            if s + 1 < nst:
                deps[("B", s, j)] = [(("B", s + 1, j), 0.5), (("F", s, j), 0.0)]
            else:
                deps[("B", s, j)] = [(("F", s, j), 0.0)]
    start, end = _run(order, deps, dur)
    fs = [[start[("F", stages[l], j)] for j in range(n)] for l in range(len(stages))]
    ue = [[end[("B", stages[l], j)] for j in range(n)] for l in range(len(stages))]
    return fs, ue


def schedule_timeline(schedule: Schedule, num_iterations: int | None = None,
                      ) -> tuple[list[list[float]], list[list[float]]]:
    """Per-layer forward starts and update ends of a periodic schedule, unrolled.

    Layer l's forward of iteration i starts at the earliest start of its F tasks (pieces,
    micro-batches); its update is applied at the latest end of its update tasks (``U`` if the
    graph has them, else ``W``), plus the transfer of the new weights to a forward task on
    another processor.
    """
    g: TaskGraph = schedule.graph
    ii = schedule.period
    pl = {p.task: p for p in schedule.placements}
    layers = g.num_layers
    kinds_present = {t.kind for t in g.tasks}
    upd_kind = "U" if "U" in kinds_present else "W"
    f0: list[float | None] = [None] * layers
    u0: list[float | None] = [None] * layers
    for t in g.tasks:
        if t.layer < 0:
            continue
        p = pl[t.name]
        begin = p.iteration_offset * ii + p.start
        if t.kind == "F":
            f0[t.layer] = begin if f0[t.layer] is None else min(f0[t.layer], begin)
        elif t.kind == upd_kind:
            fin = begin + t.duration
            u0[t.layer] = fin if u0[t.layer] is None else max(u0[t.layer], fin)
    for e in g.edges:  # the new weights reach a forward task on another processor
        s, d = g.task(e.src), g.task(e.dst)
        if s.kind == upd_kind and d.kind == "F" and s.layer == d.layer >= 0 \
                and pl[e.src].processor != pl[e.dst].processor:
            p = pl[e.src]
            fin = p.iteration_offset * ii + p.start + s.duration + schedule.comm.transfer_cycles(e.bytes)
            u0[s.layer] = max(u0[s.layer], fin)
    if any(x is None for x in f0) or any(x is None for x in u0):
        raise ValueError("schedule's graph lacks an F or update task for some layer")
    span = max(u0) - min(f0)
    n = num_iterations or 2 * (math.ceil(span / ii) + 2) + 1
    fs = [[f0[l] + i * ii for i in range(n)] for l in range(layers)]
    ue = [[u0[l] + i * ii for i in range(n)] for l in range(layers)]
    return fs, ue


def delays_for(pipelining: Any, num_layers: int | None = None,
               stages: Sequence[int] | None = None) -> list[int]:
    """Gradient delay per weight layer for a pipelining (see the module docstring).

    Args:
      pipelining: ``"none"``, ``"1f1b"``, ``"fully_pipelined"``, a ``Schedule``, a schedule dict
        (``schedules.json`` method entry with its ``graph``), or a list of ints.
      num_layers: L (needed for the strings).
      stages: optional layer -> stage list for ``"1f1b"`` / ``"fully_pipelined"`` (default: one
        stage per layer): non-decreasing from 0 in steps of 0 or 1.

    Returns:
      ``[d_0, ..., d_{L-1}]``.

    Raises:
      ValueError: unknown kind, missing or bad ``num_layers``/``stages``, negative delays, a
        schedule without F/W tasks per layer.
    """
    if isinstance(pipelining, Schedule):
        return delays_from_timeline(*schedule_timeline(pipelining))
    if isinstance(pipelining, Mapping):
        return delays_from_timeline(*schedule_timeline(schedule_from_json(pipelining)))
    if isinstance(pipelining, str):
        if pipelining not in KINDS:
            raise ValueError(f"unknown pipelining {pipelining!r}; expected one of {KINDS}, a "
                             "schedule or a list of ints")
        if num_layers is None:
            raise ValueError(f"delays_for({pipelining!r}) needs num_layers")
        smap = stage_map(num_layers, stages)
        if pipelining == "none":
            return [0] * num_layers
        n = 4 * (smap[-1] + 1) + 8
        if pipelining == "1f1b":
            return delays_from_timeline(*one_f_one_b_timeline(smap, n))
        return delays_from_timeline(*fully_pipelined_timeline(smap, n))
    if isinstance(pipelining, Sequence):
        d = list(pipelining)
        if any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in d):
            raise ValueError(f"delays must be non-negative integers, got {d}")
        if num_layers is not None and len(d) != num_layers:
            raise ValueError(f"expected {num_layers} delays, got {len(d)}")
        return d
    raise ValueError(f"cannot derive delays from {type(pipelining).__name__}")


__all__ = ["delays_for", "delays_from_timeline", "one_f_one_b_timeline",
           "fully_pipelined_timeline", "schedule_timeline", "KINDS"]

r"""Standard pipelining baselines on the same task graph and costs.

All three assign contiguous groups of layers ("stages") to processors, one stage per processor,
and run a stage's tasks on its processor:

* :func:`gpipe_schedule` (Huang et al., NeurIPS 2019): synchronous.  The mini-batch is split into
  m micro-batches; every stage runs the forwards of all micro-batches, then their backwards
  (each with its weight gradient), then the weights are updated (flush).  Period = makespan of
  one mini-batch.  The partition minimises the largest stage time (F+B+W) by dynamic
  programming; the number of stages S <= min(P, L) and m in {1, 2, 4, ..., 32} are chosen to
  minimise the period.
* :func:`pipedream_schedule` (PipeDream 1F1B, Narayanan et al., SOSP 2019): asynchronous, no
  flush, weight stashing; each stage does one forward and one whole backward (B and W together)
  per mini-batch in steady state, so stage s trains with gradient delay S-1-s.  The partition is
  PipeDream's dynamic program without replication (``partition.pipedream_partition``).  The periodic schedule is made by the
  modulo list scheduler with every task fixed to its stage's processor, from the largest stage
  load upward.
* :func:`zb_h1_schedule` (zero bubble, Qi et al., ICLR 2024, schedule ZB-H1): synchronous with
  micro-batches like GPipe, but the backward is split into B (activation gradient, on the
  critical path) and W (weight gradient, deferred to fill bubbles), LayerPipe's split.  Each
  stage greedily runs B first, then F while fewer than S-s micro-batches are between their F
  and B (1F1B's in-flight limit, as ZB-H1), then W.  Period = makespan; with uniform stages and
  m >= S this reproduces ZB-H1's :math:`m(t_F + t_B + t_W) + (S-1)(t_F + t_B - t_W)`.

Micro-batch costs: ``micro_graph_fn(m)`` gives the training graph for a micro-batch of B/m
samples (the study calls the cost model at that batch); by default every duration and byte
count is divided by m (rounded up), i.e. perfectly linear in the batch.

Synchronous schedules are returned on the micro-batch graph (tasks ``"F0@3"``: task F0 of
micro-batch 3) with one zero-time update task ``U<l>`` per layer: all ``W_l@j -> U_l`` and
``U_l -> F_l@k``, ``U_l -> B_l@k`` at distance 1.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

from spikepipe_jax.schedule import timeline
from spikepipe_jax.schedule.comm import CommModel
from spikepipe_jax.schedule.graph import Edge, Task, TaskGraph
from spikepipe_jax.schedule.partition import (layer_costs, partition_min_max, pipedream_partition,
                                              require_training_graph)
from spikepipe_jax.schedule.period_search import modulo_schedule
from spikepipe_jax.schedule.retiming import with_update_distances
from spikepipe_jax.schedule.validate import Schedule, normalize

MICRO_BATCHES = (1, 2, 4, 8, 16, 32)


def linear_micro_graph(g: TaskGraph, m: int) -> TaskGraph:
    """The graph for a micro-batch of B/m samples, every number divided by m (rounded up)."""
    def div(x: int) -> int:
        return -(-x // m)
    tasks = tuple(dataclasses.replace(t, duration=div(t.duration), bytes_out=div(t.bytes_out),
                                      bytes_in=div(t.bytes_in), bytes_weights=div(t.bytes_weights))
                  for t in g.tasks)
    edges = tuple(dataclasses.replace(e, bytes=e.bytes if e.src == e.dst else div(e.bytes))
                  for e in g.edges)
    return TaskGraph(tasks, edges)


def micro_batch_graph(g: TaskGraph, m: int) -> TaskGraph:
    """m copies ``"<task>@<j>"`` of a (micro-batch) training graph plus update tasks ``U<l>``."""
    tasks = []
    for j in range(m):
        for t in g.tasks:
            tasks.append(dataclasses.replace(t, name=f"{t.name}@{j}"))
    layers = g.num_layers
    for l in range(layers):
        tasks.append(Task(name=f"U{l}", duration=0, layer=l, kind="U"))
    edges = []
    for e in g.edges:
        s = g.task(e.src)
        if s.kind == "W" and e.distance >= 1:
            if e.src == e.dst:
                continue
            edges.extend(Edge(f"U{s.layer}", f"{e.dst}@{k}", 1, e.bytes, e.tag) for k in range(m))
        else:
            edges.extend(Edge(f"{e.src}@{j}", f"{e.dst}@{j}", e.distance, e.bytes, e.tag) for j in range(m))
    for t in g.tasks:
        if t.kind == "W":
            edges.extend(Edge(f"{t.name}@{j}", f"U{t.layer}", 0, 0) for j in range(m))
    for l in range(layers):
        edges.append(Edge(f"U{l}", f"U{l}", 1, 0))
    return TaskGraph(tuple(tasks), tuple(edges))


@dataclasses.dataclass(frozen=True)
class _Stages:
    """Stage-level view of a (micro-batch) graph for a partition."""

    part: list[int]
    f: list[int]
    b: list[int]
    w: list[int]
    f_lag: list[int]  # transfer time into stage s's forward from stage s-1
    b_lag: list[int]  # transfer time into stage s's backward from stage s+1


def _stages(g: TaskGraph, part: Sequence[int], comm: CommModel) -> _Stages:
    nst = part[-1] + 1
    f, b, w = [0] * nst, [0] * nst, [0] * nst
    for t in g.tasks:
        s = part[t.layer]
        if t.kind == "F":
            f[s] += t.duration
        elif t.kind == "B":
            b[s] += t.duration
        elif t.kind == "W":
            w[s] += t.duration
    f_lag, b_lag = [0] * nst, [0] * nst
    for e in g.edges:
        su, sv = g.task(e.src), g.task(e.dst)
        if e.distance or su.layer < 0 or sv.layer < 0:
            continue
        ps, pd = part[su.layer], part[sv.layer]
        if ps == pd:
            continue
        tr = comm.transfer_cycles(e.bytes)
        if pd == ps + 1:
            f_lag[pd] = max(f_lag[pd], tr)
        elif pd == ps - 1:
            b_lag[pd] = max(b_lag[pd], tr)
    return _Stages(list(part), f, b, w, f_lag, b_lag)


def _macro_sim(st: _Stages, m: int, policy: str) -> dict[tuple[str, int, int], tuple[int, int]]:
    """Stage-level timeline ``(kind, stage, micro-batch) -> (start, end)`` (``timeline.simulate``).

    ``"gpipe"``: each stage runs all forwards, then the backwards (each with its weight gradient)
    in reverse micro-batch order.  ``"zbh1"``: each stage greedily runs its next B, else its next F
    while fewer than S-s micro-batches are between their F and B, else its next W.
    """
    nst = len(st.f)
    dur = {"F": st.f, "B": st.b, "W": st.w}

    def deps(op):
        kind, s, j = op
        if kind == "F":
            return [(("F", s - 1, j), st.f_lag[s])] if s > 0 else []
        if kind == "B":
            own = (("F", s, j), 0)
            return [own] if s == nst - 1 else [own, (("B", s + 1, j), st.b_lag[s])]
        return [(("B", s, j), 0)]

    if policy == "gpipe":
        next_ops = timeline.fixed_order(
            [[("F", s, j) for j in range(m)] +
             [op for j in reversed(range(m)) for op in (("B", s, j), ("W", s, j))] for s in range(nst)])
    else:
        done = {k: [0] * nst for k in "FBW"}  # ops of each kind run so far, in micro-batch order

        def next_ops(s, times):
            for kind, cnt in done.items():
                while cnt[s] < m and (kind, s, cnt[s]) in times:
                    cnt[s] += 1
            out = []
            for kind, prio in (("B", 0), ("F", 1), ("W", 2)):
                j = done[kind][s]
                if j >= m or (kind == "F" and done["F"][s] - done["B"][s] >= nst - s):
                    continue
                out.append(((prio, j), (kind, s, j)))
            return out

    return timeline.simulate(nst, next_ops, deps, lambda op: dur[op[0]][op[1]])


def _expand(g_micro1: TaskGraph, part: Sequence[int], m: int, processors: int, comm: CommModel,
            times: Mapping[tuple[str, int, int], tuple[int, int]], method: str) -> Schedule:
    """Expands a stage-level simulation into placements on the micro-batch graph."""
    gm = micro_batch_graph(g_micro1, m)
    by_kind: dict[tuple[str, int], list] = {}
    for t in g_micro1.tasks:
        by_kind.setdefault((t.kind, part[t.layer]), []).append(t)
    start: dict[str, int] = {}
    for (kind, s, j), (t0, _) in times.items():
        tasks = sorted(by_kind.get((kind, s), []), key=lambda t: t.layer, reverse=(kind == "B"))
        x = t0
        for t in tasks:
            start[f"{t.name}@{j}"] = x
            x += t.duration
    layers = g_micro1.num_layers
    for l in range(layers):
        start[f"U{l}"] = max(times[("W", part[l], j)][1] for j in range(m))
    makespan = max(max(e for _, e in times.values()), max(start[f"U{l}"] for l in range(layers)))
    proc = {t.name: part[t.layer] for t in gm.tasks}
    return normalize(gm, processors, max(1, makespan), proc, start, method=method, comm=comm,
                     info={"stages": list(part), "micro_batches": m})


def _best_sync(g: TaskGraph, processors: int, comm: CommModel, policy: str, method: str,
               micro_batches: Sequence[int] | None,
               micro_graph_fn: Callable[[int], TaskGraph | None] | None) -> Schedule:
    num_layers = require_training_graph(g, processors)
    best = None
    for m in (micro_batches or MICRO_BATCHES):
        gm1 = micro_graph_fn(m) if micro_graph_fn is not None else linear_micro_graph(g, m)
        if gm1 is None:
            continue
        costs = layer_costs(gm1)
        for stages in range(1, min(processors, num_layers) + 1):
            part = partition_min_max(costs, stages)
            times = _macro_sim(_stages(gm1, part, comm), m, policy)
            span = max(e for _, e in times.values())
            if best is None or (span, m, stages) < best[0]:
                best = ((span, m, stages), gm1, part, m, times)
    if best is None:
        raise ValueError("no micro-batch count available")
    _, gm1, part, m, times = best
    return _expand(gm1, part, m, processors, comm, times, method)


def gpipe_schedule(g: TaskGraph, processors: int, *, comm: CommModel = CommModel(),
                   micro_batches: Sequence[int] | None = None,
                   micro_graph_fn: Callable[[int], TaskGraph | None] | None = None) -> Schedule:
    """GPipe (module docstring); best over stage counts and micro-batch counts."""
    return _best_sync(g, processors, comm, "gpipe", "gpipe", micro_batches, micro_graph_fn)


def zb_h1_schedule(g: TaskGraph, processors: int, *, comm: CommModel = CommModel(),
                   micro_batches: Sequence[int] | None = None,
                   micro_graph_fn: Callable[[int], TaskGraph | None] | None = None) -> Schedule:
    """Zero-bubble ZB-H1 with the B/W split (module docstring); best over S and m."""
    return _best_sync(g, processors, comm, "zbh1", "zb_h1", micro_batches, micro_graph_fn)


def pipedream_schedule(g: TaskGraph, processors: int, *, comm: CommModel = CommModel()) -> Schedule:
    """PipeDream 1F1B, asynchronous with delays S-1-s (module docstring)."""
    require_training_graph(g, processors)
    part = pipedream_partition(g, processors, comm)
    nst = part[-1] + 1
    delays = [nst - 1 - part[l] for l in range(g.num_layers)]
    g1 = with_update_distances(g, delays)
    fixed = {t.name: part[t.layer] for t in g1.tasks}
    s = modulo_schedule(g1, processors, comm=comm, fixed=fixed, method="pipedream_1f1b",
                        phases=("list",))
    info = dict(s.info)
    info.update(stages=part, graph_delays=delays)
    return dataclasses.replace(s, info=info)


__all__ = ["gpipe_schedule", "pipedream_schedule", "zb_h1_schedule", "micro_batch_graph",
           "linear_micro_graph", "MICRO_BATCHES"]


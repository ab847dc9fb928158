r"""The SpikePipe scheduler: processor policies and task splitting over the period search.

:func:`spikepipe_schedule` (the method called ``spikepipe`` in the study) runs this with three
processor policies and keeps the smallest period, preferring the fewest bytes moved among
periods within 1 % of it: free placement (above), the standard pipeline's contiguous layer
stages (so it is never slower than that placement on the same graph), and layer affinity (a
layer's tasks kept together where the period allows).  Splitting (with ``split_fn``): if the
period is above the resource bound because single tasks are too long, tasks longer than the
target are split into pieces (by output channels, ``graph.graph_from_tasks(split=...)``, which
adds the communication of broadcasting inputs and gathering outputs; with ``split_batch``, also
whole layers by samples, which adds the weights' broadcast and the partial weight-gradient sums;
with ``split_reduction``, F and BG GEMMs over their reduction channels, which adds the partial
sums of their outputs) and scheduled again.

**Communication budget** (``comm_budget``, bytes per iteration): the candidates also include
the period / bytes trade-off walk of ``tradeoff.py`` (co-locating the tasks that share large
float tensors, moving whole layers where single tasks would ship membranes or deltas), each
scheduled with its processors fixed, and the shortest period among the candidates within the
budget wins (splitting is tried too while the best is over the budget or above the resource
bound).  ``comm_bounds.py`` bounds what any schedule can reach under a budget.

**Communication time limit** (``comm_time_budget_pct``): among the candidates within the byte
budget, only those whose communication time overhead (:func:`comm_time_overhead_pct`: the
period with the finite link over the period of the same placement with ideal links, minus 1)
is at most that percentage compete; if none is, the one with the smallest overhead wins (as the
fewest bytes do when none is within the byte budget).  Overheads are computed lazily, in order
of period, so only candidates shorter than the first compliant one (and its ties within the
tolerance) cost an extra fixed-placement schedule.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping, Sequence

from spikepipe_jax.schedule.bounds import lower_bound
from spikepipe_jax.schedule.comm import CommModel
from spikepipe_jax.schedule.graph import TaskGraph
from spikepipe_jax.schedule.partition import layer_costs, partition_min_max, pipedream_partition
from spikepipe_jax.schedule.period_search import modulo_schedule
from spikepipe_jax.schedule.tradeoff import tradeoff_assignments
from spikepipe_jax.schedule.validate import Schedule


def split_plan(g: TaskGraph, processors: int, target: int) -> dict[str, int]:
    """``{task: pieces}`` for the splittable tasks longer than ``target`` cycles."""
    out = {}
    for t in g.tasks:
        if t.split_extent > 1 and t.duration > target > 0:
            out[t.name] = min(processors, t.split_extent, math.ceil(t.duration / target))
    return {k: v for k, v in out.items() if v > 1}


def batch_split_plan(g: TaskGraph, processors: int, target: int, batch: int) -> dict[str, tuple[int, str]]:
    """``{task: (pieces, "batch")}``: every task of each layer that has a task longer than
    ``target`` cycles, split by samples into as many pieces as the longest needs (at most P and
    B), so the layer's activations stay on matching pieces (data parallelism inside the layer;
    ``training_graph.graph_from_tasks``)."""
    if batch < 2 or target <= 0:
        return {}
    longest: dict[int, int] = {}
    for t in g.tasks:
        if t.layer >= 0 and not t.origin and t.kind in ("F", "B", "BL", "BG", "W"):
            longest[t.layer] = max(longest.get(t.layer, 0), t.duration)
    out = {}
    for t in g.tasks:
        d = longest.get(t.layer, 0)
        if t.layer >= 0 and not t.origin and d > target:
            k = min(processors, batch, math.ceil(d / target))
            if k > 1:
                out[t.name] = (k, "batch")
    return out


def reduction_split_plan(g: TaskGraph, processors: int, target: int) -> dict[str, tuple[int, str]]:
    """``{task: (pieces, "reduction")}``: the F and BG tasks (layers >= 1) longer than ``target``
    cycles, split over the channels their GEMM reduces over (``graph_from_tasks``; at most P
    pieces and as many as those channels).  Needs the graph's tasks unsplit (``split_extent``
    of the layer below for F: read from its own F task)."""
    if target <= 0:
        return {}
    channels = {t.layer: t.split_extent for t in g.tasks if t.kind == "F" and not t.origin}
    out = {}
    for t in g.tasks:
        if t.origin or t.layer < 1 or t.kind not in ("F", "BG") or t.duration <= target:
            continue
        ext = channels.get(t.layer - 1 if t.kind == "F" else t.layer, 0)
        k = min(processors, ext, math.ceil(t.duration / target))
        if k > 1:
            out[t.name] = (k, "reduction")
    return out


def spikepipe_schedule(g: TaskGraph, processors: int, *, comm: CommModel = CommModel(),
                       split_fn: Callable[[Mapping[str, int]], TaskGraph] | None = None,
                       split_targets: Sequence[float] = (1.0, 0.5),
                       unsplit: Schedule | None = None, comm_tolerance: float = 0.01,
                       comm_budget: float | None = None, split_batch: int = 0,
                       split_reduction: bool = False,
                       comm_time_budget_pct: float | None = None) -> Schedule:
    """The proposed scheduler: :func:`modulo_schedule` under three processor policies, plus
    task splitting when it pays (module docstring).

    Args:
      g: task graph (for training: built with the pipelined delays, e.g. LayerPipe2's).
      processors: P.
      comm: link model.
      split_fn: ``split -> graph`` rebuilding ``g`` with tasks split into pieces (e.g.
        ``functools.partial(graph_from_tasks, tasks, delays=..., split_backward=True)``); None:
        no splitting (JSON graphs).
      split_targets: piece-size targets tried, as fractions of the resource bound.
      split_batch: samples per iteration B; if >= 2, ``split_fn`` also gets batch splits
        (:func:`batch_split_plan`: ``{task: (pieces, "batch")}``) next to the output-column
        splits, at the same targets.
      split_reduction: ``split_fn`` also gets reduction splits (:func:`reduction_split_plan`).
      unsplit: the schedule of ``g`` without splits, if already computed.
      comm_tolerance: among candidate schedules (free placement, layer affinity, or the
        standard pipeline's contiguous stages, each with or without splits) whose periods are
        within this fraction of the smallest, the one that moves the fewest bytes wins.
      comm_budget: bytes per iteration the schedule may move between processors (None: no
        budget).  The candidates then also include the assignments of
        ``tradeoff.tradeoff_assignments`` (scheduled with their processors fixed), and only those
        within the budget compete; if none is, the one moving the fewest bytes is returned with
        ``info["within_budget"] = False``.
      comm_time_budget_pct: the most communication time overhead, in percent, a schedule may
        have to compete (after the byte budget; module docstring); None: no limit.  If no
        candidate meets it, the one with the smallest overhead is returned with
        ``info["within_time_budget"] = False``.

    Returns:
      the best valid schedule; ``info["split"]`` gives the pieces per split task; with a budget,
      ``info["candidates"]`` lists ``[period, bytes, split tasks]`` of every candidate evaluated
      (the trade-off the budget selects from) and ``info["within_budget"]``.
    """
    points: list[list[int]] = list(unsplit.info.get("candidates", [])) if unsplit is not None else []

    def both(graph: TaskGraph, **info) -> Schedule:
        lb = lower_bound(graph, processors)
        cands = [modulo_schedule(graph, processors, comm=comm, lower_bound=lb)]
        part = stage_assignment(graph, processors)
        if part is not None:  # the standard pipeline's placement is one of the candidates
            cands.append(modulo_schedule(graph, processors, comm=comm, fixed=part, phases=("list",),
                                         lower_bound=lb))
        if any(e.bytes for e in graph.edges):
            cands.append(modulo_schedule(graph, processors, comm=comm, phases=("affinity",),
                                         lower_bound=lb))
            if comm_budget is not None:
                starts = None
                if all(t.layer >= 0 for t in graph.tasks):  # PipeDream's stages: a cheap start
                    pd = pipedream_partition(graph, processors, comm)
                    stages = [pd[t.layer] for t in graph.tasks]
                    starts = [[0] * len(graph.tasks), stages]
                    if part is not None:
                        starts.append([part[t.name] for t in graph.tasks])
                cands += [modulo_schedule(graph, processors, comm=comm, fixed=a, phases=("list",),
                                          lower_bound=lb)
                          for a in tradeoff_assignments(graph, processors, starts=starts)]
        if comm_budget is not None:
            pieces = len(info.get("split", {}))
            points.extend([s.period, s.bytes_communicated, pieces] for s in cands)
        return _with_info(pick(cands), **info)

    def pick(cands: Sequence[Schedule]) -> Schedule:
        return _pick(cands, comm_tolerance, comm_budget, comm_time_budget_pct)

    def done(s: Schedule) -> Schedule:
        if comm_time_budget_pct is not None:
            s = _with_info(s, comm_time_budget_pct=comm_time_budget_pct,
                           within_time_budget=comm_time_overhead_pct(s) <= comm_time_budget_pct)
        if comm_budget is None:
            return s
        return _with_info(s, comm_budget=comm_budget, within_budget=s.bytes_communicated <= comm_budget,
                          candidates=sorted(points))

    best = _with_info(unsplit, split={}) if unsplit is not None else both(g, split={})
    if split_fn is None:
        return done(best)
    res = math.ceil(g.total_duration / processors)
    if (best.period <= res * 1.01 and (comm_budget is None or best.bytes_communicated <= comm_budget)
            and (comm_time_budget_pct is None or comm_time_overhead_pct(best) <= comm_time_budget_pct)):
        return done(best)
    seen = set()
    for frac in split_targets:
        target = max(1, int(res * frac))
        plans = [split_plan(g, processors, target), batch_split_plan(g, processors, target, split_batch)]
        if split_reduction:
            plans.append(reduction_split_plan(g, processors, target))
        for plan in plans:
            key = tuple(sorted(plan.items()))
            if not plan or key in seen:
                continue
            seen.add(key)
            best = pick([best, both(split_fn(plan), split=plan)])
    return done(best)


def stage_assignment(g: TaskGraph, processors: int) -> dict[str, int] | None:
    """Every task on the processor of its layer's stage, for the contiguous layer partition
    that minimises the largest stage load (as standard pipelining); None without layers."""
    if any(t.layer < 0 for t in g.tasks) or not g.tasks:
        return None
    costs = layer_costs(g)
    part = partition_min_max(costs, min(processors, len(costs)))
    return {t.name: part[t.layer] for t in g.tasks}


def comm_time_overhead_pct(s: Schedule) -> float:
    """The schedule's period with its links over the period of the same placement with ideal links
    (no transfer time), minus 1, in percent.  The ideal period is that of ``modulo_schedule`` with
    the processors fixed and ``CommModel()`` (capped by the schedule's own period, which ideal
    links also allow).  Kept in ``s.info["comm_time_overhead_pct"]`` once computed."""
    if s.comm.link_bytes_per_cycle <= 0 and s.comm.link_latency_cycles == 0:
        return 0.0
    cached = s.info.get("comm_time_overhead_pct")
    if cached is not None:
        return cached
    ideal = modulo_schedule(s.graph, s.processors, comm=CommModel(), fixed=s.processor_of,
                            phases=("list",), prefer_fewer_bytes=False).period
    out = round(100.0 * (s.period / min(ideal, s.period) - 1.0), 4)
    if isinstance(s.info, dict):
        s.info["comm_time_overhead_pct"] = out
    return out


def _within_time(cands: Sequence[Schedule], tol: float, limit: float) -> list[Schedule]:
    """The candidates with overhead <= ``limit`` whose periods are within ``tol`` of the shortest
    such; the overheads computed in order of period and only as far as needed (empty: none)."""
    out: list[Schedule] = []
    for s in sorted(cands, key=lambda s: (s.period, s.bytes_communicated)):
        if out and s.period > out[0].period * (1 + tol):
            break
        if comm_time_overhead_pct(s) <= limit:
            out.append(s)
    return out


def _pick(cands: Sequence[Schedule], tol: float, budget: float | None = None,
          time_limit: float | None = None) -> Schedule:
    """Smallest period; among periods within ``tol`` of it, fewest bytes communicated.  With a
    budget, only the candidates within it (if none is, the one moving the fewest bytes); with a
    time limit, of those only the ones whose communication time overhead is within it (if none
    is, the one with the smallest overhead)."""
    if budget is not None:
        ok = [s for s in cands if s.bytes_communicated <= budget]
        if not ok:
            return min(cands, key=lambda s: (s.bytes_communicated, s.period))
        cands = ok
    if time_limit is not None:
        fast = _within_time(cands, tol, time_limit)
        if not fast:
            return min(cands, key=lambda s: (comm_time_overhead_pct(s), s.period, s.bytes_communicated))
        return min(fast, key=lambda s: (s.bytes_communicated, s.period))
    top = min(s.period for s in cands)
    ok = [s for s in cands if s.period <= top * (1 + tol)]
    return min(ok, key=lambda s: (s.bytes_communicated, s.period))


def _with_info(s: Schedule, **kw) -> Schedule:
    info = dict(s.info)
    info.update(kw)
    return dataclasses.replace(s, info=info)


__all__ = ["batch_split_plan", "comm_time_overhead_pct", "reduction_split_plan", "spikepipe_schedule", "split_plan",
           "stage_assignment"]

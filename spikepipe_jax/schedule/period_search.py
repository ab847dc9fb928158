r"""The modulo scheduler's period search: the smallest period a placement phase reaches.

Problem.  Given a task graph with iteration distances (``graph.py``) and P identical processors
linked as in ``comm.CommModel``, find the smallest integer period II and, for every task, a
processor, a start in ``[0, II)`` and an iteration offset, such that the schedule is valid
(``validate.py``).  The offsets are a retiming: they pipeline the graph.  Unlike standard
pipelining, tasks are not tied to a stage: F, B (or its LIF / GEMM parts) and W of one layer may
go to different processors, and long GEMM tasks may be split by output columns.

Algorithm (modulo list scheduling; Rau, "Iterative modulo scheduling", MICRO 1994, with the
processor choice of HEFT, Topcuoglu, Hariri & Wu, IEEE TPDS 2002, and HLFET priorities,
Adam, Chandy & Dickson, CACM 1974):

1. Lower bound :math:`II_{min}` = max(iteration bound, resource bound, longest task)
   (``bounds.py``).
2. Tasks are grouped into the strongly connected components of the graph (all edges).  Edges
   between components form a DAG and can always be met by choosing iteration offsets; only
   edges inside a component (the loops) can bound a task from above.
3. For a candidate II, priorities are Rau's heights
   :math:`h(v) = t_v + \max(0, \max_{v \to s} h(s) - d_{vs}\,II)` (longest path to the end of
   the iteration, loop-carried edges discounted by II), i.e. HLFET's static levels generalised
   to loops; components are taken in topological order, tasks inside one by decreasing height.
4. **List phase.** For each task and candidate processor p (those of its placed neighbours and
   the least loaded ones) the window is :math:`[E_p, \min(L_p, E_p + II - 1)]` with
   :math:`E_p = \max_{u \to v}(t_u + t^{dur}_u + c_{uv}(p) - d\,II)` over placed predecessors and
   :math:`L_p = \min_{v \to s}(t_s + d\,II - t^{dur}_v - c_{vs}(p))` over placed successors;
   the task takes the earliest start in the window whose slot is free in p's modulo reservation
   table, on the processor with the earliest finish (HEFT), ties to fewer bytes moved.  If no
   window slot is free, Rau's iterative repair applies: the task takes the earliest free slot
   after its predecessors (or is forced in) and the successors or overlapped tasks it now
   conflicts with are unscheduled and queued again, within a budget of 4 placements per task.
5. **Hybrid phase** (after Gasperoni & Schwiegelshohn, "Generating close to optimum loop
   schedules on parallel processors", Parallel Processing Letters 1994, and Wang, Eisenbeis,
   Jourdan & Su's decomposed software pipelining, 1994): the tasks on loops are list scheduled
   as in 4; every other task is bin-packed (best fit decreasing) into the free gaps of the
   processors' reservation tables, and the integer offsets :math:`k_v` solve the difference
   constraints :math:`k_v - k_u \ge \lceil (p_u + t_u + c_{uv} - p_v) / II \rceil - d_{uv}` by
   longest paths (between components they always have a solution).  Near-perfect packing when
   loops are few; when over 90 % of the tasks are on loops (training graphs) only the list phase
   is used.
6. **Retimed phase** (after Leiserson & Saxe's retiming, Algorithmica 1991, applied as in
   decomposed software pipelining): iteration offsets :math:`r_v = \lfloor a_v / c \rfloor` from
   the longest-path potentials :math:`a` at :math:`c = \lceil T_\infty \rceil` make every
   retimed distance :math:`d + r_v - r_u` non-negative and leave the retimed distance-0 edges a
   DAG with paths under :math:`c + \max t`; that DAG is list scheduled once, in a topological
   order (largest height first), each task at its earliest start free modulo II on any processor
   (``phases.retimed_phase``; no repair).  When the loops are short against II (loop-dense
   graphs far above their iteration bound) this packs near the resource bound where the
   iterative list phase stalls; ``retimed_hybrid`` places only the loop tasks this way and
   packs the rest as in 5.
7. II is searched upward from :math:`II_{min}` (growing steps, then bisection to 0.25 %); the
   sequential schedule on one processor with II = sum of durations always exists.  By default
   the retimed phases are searched first (one pass each, cheap); the list / hybrid phases are
   then searched as well on graphs of up to ``FULL_SEARCH_TASKS`` tasks, and on larger ones
   only if the retimed period is more than ``GOOD_ENOUGH`` (1 %) above the lower bound and they
   succeed one period below it (a failing list phase costs up to 4 placements per task); the
   smaller period wins, the list / hybrid one on a tie.
8. At the period found, when edges carry bytes: the list phase is run again choosing
   processors by bytes moved first (except on graphs over ``FULL_SEARCH_TASKS`` tasks whose
   period came from a retimed phase), and a local search moves single tasks next to their
   neighbours while every constraint still holds; whichever moves fewer bytes is kept.

The processor policies and task splitting on top of this are in ``policies.py``.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Callable, Mapping, Sequence

from spikepipe_jax.schedule.bounds import check_processors, max_cycle_ratio, period_bounds
from spikepipe_jax.schedule.comm import CommModel, bytes_communicated
from spikepipe_jax.schedule.comm_search import affinity_assign, reduce_comm
from spikepipe_jax.schedule.graph import TaskGraph
from spikepipe_jax.schedule.indexed import IndexedGraph
from spikepipe_jax.schedule.phases import frame_retiming, hybrid_phase, list_phase, retimed_phase, sequential
from spikepipe_jax.schedule.validate import Schedule, normalize


FULL_SEARCH_TASKS = 256  # graphs up to this size search the list / hybrid phases in full
GOOD_ENOUGH = 0.01  # on larger graphs, a retimed period this close to the lower bound is kept


def search_period(lb: int, ub: int, attempt: Callable[[int], object | None], rel_tol: float = 2.5e-3):
    """Smallest ii in [lb, ub] found feasible by ``attempt`` (growing steps, then bisection)."""
    res = attempt(lb)
    if res is not None:
        return lb, res
    lo, step = lb, max(1, math.ceil(lb * 0.0025))
    while True:
        ii = min(lo + step, ub)
        res = attempt(ii)
        if res is not None:
            hi, best = ii, res
            break
        if ii >= ub:
            return None
        lo, step = ii, step * 2
    tol = max(1, int(lb * rel_tol))
    while hi - lo > tol:
        mid = (lo + hi) // 2
        res = attempt(mid)
        if res is not None:
            hi, best = mid, res
        else:
            lo = mid
    return hi, best


def modulo_schedule(g: TaskGraph, processors: int, *, comm: CommModel = CommModel(),
                    fixed: Mapping[str, int] | None = None, min_period: int | None = None,
                    method: str = "spikepipe", phases: Sequence[str] | None = None,
                    prefer_fewer_bytes: bool = True, lower_bound: int | None = None) -> Schedule:
    """Smallest-period schedule found by the placement phases (module docstring), no splits.

    Args:
      g: task graph (tasks are not split here).
      processors: P >= 1.
      comm: link model (transfer times between processors).
      fixed: optional ``{task: processor}`` for every task (used by the 1F1B baseline).
      min_period: start the search here instead of the lower bound.
      method: name recorded in the schedule.
      phases: which phases to try at each period, in order (``"list"``, ``"list_comm"``,
        ``"hybrid"``, ``"affinity"``, ``"retimed"``, ``"retimed_hybrid"``); default: the
        retimed phases, then (step 7 of the module docstring) only the list phase when over
        90 % of the tasks are on loops, else the hybrid phase first, then the list phase.
      prefer_fewer_bytes: at the period found, also run the list phase that picks processors by
        bytes moved first (then finish time) and keep whichever moves fewer bytes.
      lower_bound: ``bounds.lower_bound(g, processors)`` if the caller already has it (it is
        computed otherwise).

    Returns:
      a valid :class:`Schedule` (``info["phase"]`` says which phase produced it).

    Raises:
      ValueError: P not a positive integer, or ``fixed`` missing tasks / out of range.
    """
    check_processors(processors)
    prep = IndexedGraph(g, comm)
    fx = None
    if fixed is not None:
        missing = [t.name for t in g.tasks if t.name not in fixed]
        if missing:
            raise ValueError(f"fixed assignment misses tasks {missing[:5]}")
        fx = [int(fixed[t.name]) for t in g.tasks]
        if any(not 0 <= p < processors for p in fx):
            raise ValueError(f"fixed assignment uses a processor outside [0, {processors})")
    if lower_bound is None:
        pb = period_bounds(g, processors)
        lb, tinf = pb["lower_bound"], pb["iteration_bound_exact"]
    else:
        lb, tinf = lower_bound, None
    if fx is not None:
        loads = [0] * processors
        for v, p in enumerate(fx):
            loads[p] += prep.dur[v]
        lb = max(lb, max(loads))
    if min_period is not None:
        lb = max(lb, int(min_period))
    seq_ii, seq_t, seq_p = sequential(prep)
    ub = max(lb, seq_ii + sum(tr for _, _, _, tr in prep.edges))

    loop_share = sum(prep.in_loop) / max(1, prep.n)
    default = phases is None
    if default:
        # the hybrid phase list-schedules only the loop tasks and packs the rest; when nearly
        # every task is on a loop it is the list phase again
        phases = ("list",) if loop_share > 0.9 else ("hybrid", "list")
    heights: dict[int, list[int]] = {}
    retiming: list[list[int]] = []

    def run(ph: str, ii: int):
        if ph in ("retimed", "retimed_hybrid"):
            if not retiming:
                c = max_cycle_ratio(g)[0] if tinf is None else Fraction(tinf)
                retiming.append(frame_retiming(prep, max(1, math.ceil(c))))
            if retiming[0] is None:
                return None
            if ph == "retimed":
                r = retimed_phase(prep, processors, ii, retiming[0], fx)
                return r and r[:2]
            return hybrid_phase(prep, processors, ii, (), fx, retiming=retiming[0])
        if ii not in heights:
            heights.clear()
            heights[ii] = prep.heights(ii)
        h = heights[ii]
        if ph in ("list", "list_comm"):
            r = list_phase(prep, processors, ii, h, fx, comm_first=(ph == "list_comm"))
            return r and r[:2]
        if ph == "hybrid":
            return hybrid_phase(prep, processors, ii, h, fx)
        if ph == "affinity":
            fa = fx if fx is not None else affinity_assign(prep, processors, ii)
            r = None if fa is None else list_phase(prep, processors, ii, h, fa)
            return r and r[:2]
        raise ValueError(f"unknown phase {ph!r}")

    def attempt_with(phs: Sequence[str]):
        def attempt(ii: int):
            for ph in phs:
                r = run(ph, ii)
                if r is not None:
                    return ph, r
            return None
        return attempt

    attempt = attempt_with(phases)
    names = [t.name for t in g.tasks]
    if default:
        # the one-pass retimed phases first (cheap); then the list / hybrid phases, whose
        # failures cost up to 4 placements per task: on small graphs always, on larger ones if
        # the retimed period is not within GOOD_ENOUGH of the bound and they succeed one below it
        fast = ("retimed_hybrid", "retimed") if loop_share <= 0.9 else ("retimed",)
        found = search_period(lb, ub, attempt_with(fast))
        if found is None or (found[0] > lb and (prep.n <= FULL_SEARCH_TASKS or (
                found[0] > lb * (1 + GOOD_ENOUGH) and attempt(found[0] - 1) is not None))):
            slow = search_period(lb, ub, attempt)
            if found is None or (slow is not None and slow[0] <= found[0]):
                found = slow
    else:
        found = search_period(lb, ub, attempt)
    if found is None:
        if fx is not None and len(set(fx)) > 1:
            raise ValueError("no schedule found for the fixed processor assignment")
        ii, (phase, (times, proc)) = seq_ii, ("sequential", (seq_t, seq_p))
    else:
        ii, (phase, (times, proc)) = found
        if prefer_fewer_bytes and fx is None and any(e.bytes for e in g.edges if e.src != e.dst):
            # same period, fewer bytes: the communication-first list phase, then local moves
            def moved(pr):
                return bytes_communicated(g, dict(zip(names, pr)))
            # (not on a large graph whose period only the retimed phases reached: the list
            # phase, which failed below it, costs a whole failing attempt there)
            big_retimed = phase.startswith("retimed") and prep.n > FULL_SEARCH_TASKS
            alt = run("list_comm", ii) if phase != "list_comm" and not big_retimed else None
            if alt is not None and moved(alt[1]) < moved(proc):
                phase, (times, proc) = "list_comm", alt
            times, proc = reduce_comm(prep, processors, ii, list(times), list(proc))
    return normalize(g, processors, ii, dict(zip(names, proc)), dict(zip(names, times)),
                     method=method, comm=comm, info={"phase": phase, "lower_bound": lb})


__all__ = ["modulo_schedule", "search_period"]

r"""The placement phases at one candidate period II (steps 4 to 6 of ``period_search.py``).

:func:`list_phase`: iterative modulo list scheduling (Rau 1994) with HEFT's processor choice;
:func:`hybrid_phase`: loop tasks list scheduled, the others bin-packed into the free gaps with
their iteration offsets solved by longest paths (:func:`solve_offsets`); :func:`retimed_phase`:
one list-scheduling pass over the distance-0 DAG left by a retiming (:func:`frame_retiming`),
also usable for the hybrid phase's loop tasks; :func:`sequential`: the always-feasible schedule on
one processor.
"""

from __future__ import annotations

import bisect
import collections
import heapq
from typing import Sequence

from spikepipe_jax.schedule.graph import relax_longest
from spikepipe_jax.schedule.indexed import IndexedGraph
from spikepipe_jax.schedule.reservation import ModuloTable, free_gaps


def list_phase(prep: IndexedGraph, procs: int, ii: int, h: Sequence[int],
                fixed: Sequence[int] | None = None, k_least: int = 3, k_most: int = 0,
                k_near: int = 12, budget_ratio: int = 4, subset: Sequence[int] | None = None,
                comm_first: bool = False) -> tuple[list[int], list[int]] | None:
    """Iterative modulo list scheduling at period ii; (times, processors) or None.

    Operations are taken by decreasing height; each goes to the earliest slot (over candidate
    processors, earliest finish first) that respects its placed predecessors and successors.  If
    none respects the successors, it takes the earliest free slot after its predecessors and the
    successors it now violates are unscheduled; if no slot is free at all, it is forced in and
    the operations it overlaps are unscheduled (Rau 1994).  Gives up after ``budget_ratio * n``
    placements.
    """
    n, dur, preds, succs = prep.n, prep.dur, prep.preds, prep.succs
    t = [0] * n
    placed = [False] * n
    proc = [-1] * n
    last = [None] * n
    mrt = [ModuloTable(ii) for _ in range(procs)]
    rank, comp = prep.rank, prep.comp
    todo = range(n) if subset is None else subset
    heap = [(comp[v], -h[v], rank[v], v) for v in todo]
    heapq.heapify(heap)
    left = len(heap)
    budget = budget_ratio * left + 10
    lorder = [(0, p) for p in range(procs)]  # (load, processor), sorted

    def add_load(p: int, delta: int) -> None:
        if delta:
            old = mrt[p].load - delta
            del lorder[bisect.bisect_left(lorder, (old, p))]
            bisect.insort(lorder, (mrt[p].load, p))

    def unschedule(u: int) -> None:
        nonlocal left
        placed[u] = False
        mrt[proc[u]].remove(u, dur[u])
        add_load(proc[u], -dur[u])
        left += 1
        heapq.heappush(heap, (comp[u], -h[u], rank[u], u))

    while left:
        if not heap or budget <= 0:
            return None
        v = heapq.heappop(heap)[-1]
        if placed[v]:
            continue
        budget -= 1
        dv = dur[v]
        pin, sin = [], []
        for u, d, tr, b in preds[v]:
            if placed[u]:
                pin.append((t[u] + dur[u] - d * ii, proc[u], tr, b))
        for s, d, tr, b in succs[v]:
            if placed[s]:
                sin.append((t[s] + d * ii - dv, proc[s], tr, b))
        if fixed is not None:
            cands = [fixed[v]]
        else:
            near: dict[int, int] = {}
            for _, q, _, b in pin:
                near[q] = near.get(q, 0) + b + 1
            for _, q, _, b in sin:
                near[q] = near.get(q, 0) + b + 1
            if len(near) > k_near:
                cset = set(heapq.nlargest(k_near, near, key=near.__getitem__))
            else:
                cset = set(near)
            nfit = bisect.bisect_right(lorder, (ii - dv, procs))  # lorder[:nfit] have room
            cset.update(p for _, p in lorder[:min(k_least, nfit)])
            if k_most:
                cset.update(p for _, p in lorder[max(0, nfit - k_most):nfit])
            if not cset:
                cset = {p for _, p in lorder[:max(1, k_least + k_most)]}
            cands = sorted(cset)
        best = loose = None
        los = {}
        for p in cands:
            lo = 0
            moved = 0
            for base, q, tr, b in pin:
                if q != p:
                    base += tr
                    moved += b
                if base > lo:
                    lo = base
            los[p] = lo
            hi = lo + ii - 1
            for base, q, tr, b in sin:
                if q != p:
                    base -= tr
                    moved += b
                if base < hi:
                    hi = base
            start = mrt[p].earliest(lo, hi, dv)
            if start is not None:
                key = (moved, start + dv, mrt[p].load, p) if comm_first else (start + dv, moved, mrt[p].load, p)
                if best is None or key < best[0]:
                    best = (key, p, start)
            elif best is None and hi < lo + ii - 1:  # else the same window failed just now
                start = mrt[p].earliest(lo, lo + ii - 1, dv)
                if start is not None:
                    key = (start + dv, moved, mrt[p].load, p)
                    if loose is None or key < loose[0]:
                        loose = (key, p, start)
        evict: set[int] = set()
        if best is not None:
            _, p, start = best
        elif loose is not None:
            _, p, start = loose
        else:  # forced: the candidate whose overlapped work is smallest
            forced = None
            for p in cands:
                lo = los[p]
                start = lo if last[v] is None or last[v] < lo else last[v] + 1
                hit = mrt[p].conflicts(start, dv)
                cost = sum(dur[u] for u in hit)
                if forced is None or (cost, p) < forced[0]:
                    forced = ((cost, p), p, start, hit)
            _, p, start, evict = forced
        for u in evict:
            unschedule(u)
        t[v], proc[v], placed[v], last[v] = start, p, True, start
        mrt[p].insert(start, dv, v)
        add_load(p, dv)
        left -= 1
        end = start + dv
        for s, d, tr, b in succs[v]:
            if placed[s] and t[s] + d * ii < end + (tr if proc[s] != p else 0):
                unschedule(s)
    return t, proc, mrt


def min_offset(ii: int, pos: Sequence[int], dur: Sequence[int], proc: Sequence[int],
                u: int, v: int, d: int, tr: int) -> int:
    """Least ``k_v - k_u`` for edge u -> v (distance d, transfer tr between processors):
    ``ceil((pos_u + t_u + c_uv - pos_v) / ii) - d``, c_uv = tr unless on one processor."""
    c = tr if proc[u] != proc[v] else 0
    return -((pos[v] - pos[u] - dur[u] - c) // ii) - d  # ceil(x / ii) == -((-x) // ii)


def solve_offsets(prep: IndexedGraph, ii: int, pos: Sequence[int], proc: Sequence[int],
             max_passes: int = 100, init: Sequence[int] | None = None) -> list[int] | None:
    r"""Integer offsets k with k_v - k_u >= ceil((pos_u + t_u + c_uv - pos_v) / ii) - d, or None.

    Bellman-Ford passes in topological order; no convergence within ``max_passes`` passes is
    taken as a positive cycle (this phase is a heuristic: a miss only loses a solution).
    """
    n, dur = prep.n, prep.dur
    cons = [(u, v, min_offset(ii, pos, dur, proc, u, v, d, tr)) for u, v, d, tr in prep.edges]
    order = prep.rank
    cons.sort(key=lambda c: (prep.comp[c[0]], order[c[0]]))
    return relax_longest(n, cons, max_passes, init)


def hybrid_phase(prep: IndexedGraph, procs: int, ii: int, h: Sequence[int],
                  fixed: Sequence[int] | None = None, retiming: Sequence[int] | None = None
                  ) -> tuple[list[int], list[int]] | None:
    """Loop tasks by list scheduling, then the other tasks bin-packed into the free gaps.

    With ``retiming``, the loop tasks are placed by :func:`retimed_phase` instead of
    :func:`list_phase`.

    Tasks outside the graph's loops (singleton strongly connected components) are only bound by
    edges between components, which form a DAG, so any positions are fine for them once their
    offsets are solved (:func:`solve_offsets`): they are packed best-fit-decreasing into the gaps the
    loop tasks leave (each processor's free intervals modulo II).
    """
    n, dur = prep.n, prep.dur
    loop = [v for v in range(n) if prep.in_loop[v]]
    t = [0] * n
    proc = [-1] * n
    if loop:
        if retiming is None:
            r = list_phase(prep, procs, ii, h, fixed, subset=loop)
        else:
            r = retimed_phase(prep, procs, ii, retiming, fixed, subset=loop)
        if r is None:
            return None
        t0, p0, mrt = r
        for v in loop:
            t[v], proc[v] = t0[v], p0[v]
        gaps = free_gaps(mrt, ii)
    else:
        gaps = [(ii, p, 0) for p in range(procs)]
    rest = [v for v in range(n) if not prep.in_loop[v]]
    rest.sort(key=lambda v: (-dur[v], prep.rank[v]))
    gaps.sort()
    sizes = [g[0] for g in gaps]
    for v in rest:
        dv = dur[v]
        if dv == 0:
            proc[v] = fixed[v] if fixed is not None else 0
            t[v] = 0
            continue
        if fixed is None:
            i = bisect.bisect_left(sizes, dv)
            if i == len(sizes):
                return None
        else:
            i = next((j for j in range(bisect.bisect_left(sizes, dv), len(sizes))
                      if gaps[j][1] == fixed[v]), None)
            if i is None:
                return None
        size, p, x = gaps.pop(i)
        sizes.pop(i)
        proc[v], t[v] = p, x
        if size > dv:
            j = bisect.bisect_left(sizes, size - dv)
            gaps.insert(j, (size - dv, p, x + dv))
            sizes.insert(j, size - dv)
    pos = [x % ii for x in t]
    # with a retiming, the loop tasks' own offsets already meet the edges among them: start there
    init = None if retiming is None else [x // ii if prep.in_loop[v] else 0 for v, x in enumerate(t)]
    k = solve_offsets(prep, ii, pos, proc, init=init)
    if k is None:
        return None
    return [pos[v] + k[v] * ii for v in range(n)], proc


def frame_retiming(prep: IndexedGraph, c: int) -> list[int] | None:
    r"""Iteration offsets ``r_v = floor(a_v / c)`` from longest-path potentials at period ``c``.

    ``a`` solves :math:`a_v \ge a_u + t_u - d_{uv} c` (queue-based Bellman-Ford from 0; no
    solution, i.e. None, when ``c`` is below the iteration bound).  Then every retimed distance
    :math:`d_r = d + r_v - r_u` is >= 0 (:math:`a_v/c \ge a_u/c - d` and floor is monotone), and
    on an edge with :math:`d_r = 0` the frame positions :math:`a - r c \in [0, c)` increase by at
    least :math:`t_u`, so the distance-0 edges of the retimed graph form a DAG whose longest path
    is under :math:`c + \max_v t_v`.
    """
    n, dur = prep.n, prep.dur
    out: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for u, v, d, _ in prep.edges:
        out[u].append((v, dur[u] - d * c))
    a = [0] * n
    queue = collections.deque(prep.topo)
    queued = [True] * n
    pops, limit = 0, (n + 1) * max(1, len(prep.edges))
    while queue:
        u = queue.popleft()
        queued[u] = False
        pops += 1
        if pops > limit:
            return None
        au = a[u]
        for v, w in out[u]:
            if au + w > a[v]:
                if v == u:
                    return None
                a[v] = au + w
                if not queued[v]:
                    queued[v] = True
                    queue.append(v)
    return [x // c for x in a]


def retimed_phase(prep: IndexedGraph, procs: int, ii: int, r: Sequence[int],
                  fixed: Sequence[int] | None = None, subset: Sequence[int] | None = None
                  ) -> tuple[list[int], list[int], list[ModuloTable]] | None:
    r"""List scheduling of the retimed graph's distance-0 DAG in frame time; (times, processors).

    With iteration offsets ``r`` (:func:`frame_retiming`), a task's absolute start is
    :math:`T_v = x_v + r_v II` and edge ``u -> v`` holds iff
    :math:`x_v + d_r II \ge x_u + t_u + c_{uv}` with :math:`d_r = d + r_v - r_u \ge 0`.  Tasks are
    taken in a topological order of the :math:`d_r = 0` edges (a ready list, largest Rau height
    at II first, then longest), each at the earliest frame time :math:`x_v` after its placed
    predecessors that is free modulo II on some processor and ends before the bound its placed
    successors set (the earliest finish over all processors with room; ties: fewer bytes moved,
    then the fuller processor, a best fit).  Unlike :func:`list_phase` nothing is ever
    unscheduled: one pass, None as soon as a task finds no slot.  Since the retiming leaves a
    shallow DAG (the longest path under ``c + max t`` for the retiming period ``c``), a period
    near the resource bound is reachable when the loops are short against it.
    """
    n, dur, preds, succs = prep.n, prep.dur, prep.preds, prep.succs
    todo = range(n) if subset is None else subset
    member = [subset is None] * n
    for v in todo:
        member[v] = True
    indeg = [0] * n
    g0: list[list[int]] = [[] for _ in range(n)]
    for v in todo:
        for u, d, _, _ in preds[v]:
            if member[u] and d + r[v] - r[u] == 0:
                indeg[v] += 1
                g0[u].append(v)
    order, deg = [], indeg[:]
    stack = [v for v in todo if deg[v] == 0]
    while stack:
        u = stack.pop()
        order.append(u)
        for v in g0[u]:
            deg[v] -= 1
            if deg[v] == 0:
                stack.append(v)
    if len(order) < len(todo):
        raise ValueError("retiming leaves a cycle of distance-0 edges")
    h = list(dur)
    for v in reversed(order):
        best = 0
        for s, d, _, _ in succs[v]:
            if not member[s]:
                continue
            val = h[s] - (d + r[s] - r[v]) * ii
            if val > best:
                best = val
        h[v] = dur[v] + best
    x: list[int | None] = [None] * n
    proc = [-1] * n
    mrt = [ModuloTable(ii) for _ in range(procs)]
    heap = [(-h[v], -dur[v], v) for v in todo if indeg[v] == 0]
    heapq.heapify(heap)
    fullest = [(0, p) for p in range(procs)]  # (-load, processor), sorted
    last: list[tuple[int, int, int | None] | None] = [None] * procs  # (lo, dur, earliest) per table
    while heap:
        v = heapq.heappop(heap)[2]
        dv, rv = dur[v], r[v]
        lo_other, hi_other = 0, None  # window when no neighbour shares the processor
        near: dict[int, int] = {}  # processor -> bytes exchanged with the neighbours on it
        for u, d, tr, b in preds[v]:
            if x[u] is not None:
                val = x[u] + dur[u] - (d + rv - r[u]) * ii + tr
                if val > lo_other:
                    lo_other = val
                near[proc[u]] = near.get(proc[u], 0) + b
        for s, d, tr, b in succs[v]:
            if x[s] is not None:
                val = x[s] + (d + r[s] - rv) * ii - dv - tr
                if hi_other is None or val < hi_other:
                    hi_other = val
                near[proc[s]] = near.get(proc[s], 0) + b
        best = None
        for p in (sorted(near) if fixed is None else (fixed[v],)):
            m = mrt[p]
            if m.load + dv > ii:
                continue
            if p in near:  # no transfer from / to the neighbours on p
                lo, hi = _same_window(v, p, x, proc, dur, r, preds, succs, ii)
                moved = -near[p]
            else:
                lo, hi, moved = lo_other, hi_other, 0
            top = lo + ii - 1 if hi is None or hi > lo + ii - 1 else hi
            start = m.earliest(lo, top, dv)
            if start is not None:
                key = (start, moved, -m.load, p)
                if best is None or key < best[0]:
                    best = (key, p, start)
        top = lo_other + ii - 1 if hi_other is None or hi_other > lo_other + ii - 1 else hi_other
        if fixed is None and lo_other <= top:
            # The other processors start v at lo_other at best, and among equal starts the
            # fuller one wins: the first of them (fullest first) free at lo_other is their best.
            for load, p in fullest:
                if p not in near and -load + dv <= ii and mrt[p].is_free(lo_other, dv):
                    if best is None or (lo_other, 0, load, p) < best[0]:
                        best = ((lo_other, 0, load, p), p, lo_other)
                    break
            else:
                # Else each one's earliest start over a full turn, by a lower bound first: the
                # last answer on an unchanged table for an earlier (or equal) start and a shorter
                # (or equal) task is one (no slot of that length before it, so none longer).
                order = []
                for load, p in fullest:
                    if p in near or -load + dv > ii:
                        continue
                    bound, c = lo_other, last[p]
                    if c is not None and c[1] <= dv and c[0] <= lo_other:
                        if c[2] is None:
                            continue
                        if c[2] > bound:
                            bound = c[2]
                    order.append((bound, load, p))
                order.sort()
                for bound, load, p in order:
                    if bound > top or (best is not None and bound > best[0][0]):
                        break
                    start = mrt[p].earliest(lo_other, lo_other + ii - 1, dv)
                    last[p] = (lo_other, dv, start)
                    if start is not None and start <= top:
                        key = (start, 0, load, p)
                        if best is None or key < best[0]:
                            best = (key, p, start)
        if best is None:
            return None
        _, p, start = best
        if fixed is None:
            del fullest[bisect.bisect_left(fullest, (-mrt[p].load, p))]
            bisect.insort(fullest, (-mrt[p].load - dv, p))
        mrt[p].insert(start, dv, v)
        last[p] = None
        x[v], proc[v] = start, p
        for w in g0[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                heapq.heappush(heap, (-h[w], -dur[w], w))
    return [0 if x[v] is None else x[v] + r[v] * ii for v in range(n)], proc, mrt


def _same_window(v, p, x, proc, dur, r, preds, succs, ii) -> tuple[int, int | None]:
    """Window [lo, hi] of task v's frame start on processor p (transfers only off p)."""
    lo, hi, rv = 0, None, r[v]
    for u, d, tr, _ in preds[v]:
        if x[u] is not None:
            val = x[u] + dur[u] - (d + rv - r[u]) * ii + (tr if proc[u] != p else 0)
            if val > lo:
                lo = val
    for s, d, tr, _ in succs[v]:
        if x[s] is not None:
            val = x[s] + (d + r[s] - rv) * ii - dur[v] - (tr if proc[s] != p else 0)
            if hi is None or val < hi:
                hi = val
    return lo, hi


def sequential(prep: IndexedGraph) -> tuple[int, list[int], list[int]]:
    """All tasks on processor 0, back-to-back in topological order, II = sum of durations."""
    ii = max(1, sum(prep.dur))
    t = [0] * prep.n
    x = 0
    for v in prep.topo:
        t[v] = x
        x += prep.dur[v]
    return ii, t, [0] * prep.n


__all__ = ["list_phase", "hybrid_phase", "retimed_phase", "frame_retiming", "min_offset", "solve_offsets",
           "sequential"]

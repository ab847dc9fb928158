r"""The placement phases at one candidate period II (steps 4 and 5 of ``period_search.py``).

:func:`list_phase`: iterative modulo list scheduling (Rau 1994) with HEFT's processor choice;
:func:`hybrid_phase`: loop tasks list scheduled, the others bin-packed into the free gaps with
their iteration offsets solved by longest paths (:func:`solve_offsets`); :func:`sequential`: the
always-feasible schedule on one processor.
"""

from __future__ import annotations

import bisect
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
             max_passes: int = 100) -> list[int] | None:
    r"""Integer offsets k with k_v - k_u >= ceil((pos_u + t_u + c_uv - pos_v) / ii) - d, or None.

    Bellman-Ford passes in topological order; no convergence within ``max_passes`` passes is
    taken as a positive cycle (this phase is a heuristic: a miss only loses a solution).
    """
    n, dur = prep.n, prep.dur
    cons = [(u, v, min_offset(ii, pos, dur, proc, u, v, d, tr)) for u, v, d, tr in prep.edges]
    order = prep.rank
    cons.sort(key=lambda c: (prep.comp[c[0]], order[c[0]]))
    return relax_longest(n, cons, max_passes)


def hybrid_phase(prep: IndexedGraph, procs: int, ii: int, h: Sequence[int],
                  fixed: Sequence[int] | None = None) -> tuple[list[int], list[int]] | None:
    """Loop tasks by list scheduling, then the other tasks bin-packed into the free gaps.

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
        r = list_phase(prep, procs, ii, h, fixed, subset=loop)
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
    k = solve_offsets(prep, ii, pos, proc)
    if k is None:
        return None
    return [pos[v] + k[v] * ii for v in range(n)], proc


def sequential(prep: IndexedGraph) -> tuple[int, list[int], list[int]]:
    """All tasks on processor 0, back-to-back in topological order, II = sum of durations."""
    ii = max(1, sum(prep.dur))
    t = [0] * prep.n
    x = 0
    for v in prep.topo:
        t[v] = x
        x += prep.dur[v]
    return ii, t, [0] * prep.n


__all__ = ["list_phase", "hybrid_phase", "min_offset", "solve_offsets", "sequential"]

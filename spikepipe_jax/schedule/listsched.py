r"""The SpikePipe scheduler: periodic list scheduling of training tasks on P processors.

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
6. II is searched upward from :math:`II_{min}` (growing steps, then bisection to 0.25 %); the
   sequential schedule on one processor with II = sum of durations always exists.
7. At the period found, when edges carry bytes: the list phase is run again choosing
   processors by bytes moved first, and a local search moves single tasks next to their
   neighbours while every constraint still holds; whichever moves fewer bytes is kept.

:func:`spikepipe_schedule` (the method called ``spikepipe`` in the study) runs this with three
processor policies and keeps the smallest period, preferring the fewest bytes moved among
periods within 1 % of it: free placement (above), the standard pipeline's contiguous layer
stages (so it is never slower than that placement on the same graph), and layer affinity (a
layer's tasks kept together where the period allows).  Splitting (with ``split_fn``): if the
period is above the resource bound because single tasks are too long, tasks longer than the
target are split into pieces (by output channels, ``graph.graph_from_tasks(split=...)``, which
adds the communication of broadcasting inputs and gathering outputs) and scheduled again.
"""

from __future__ import annotations

import bisect
import heapq
import math
from typing import Callable, Iterable, Mapping, Sequence

import spikepipe_jax.schedule.bounds as _bounds
from spikepipe_jax.schedule.comm import CommModel, bytes_communicated
from spikepipe_jax.schedule.graph import TaskGraph, relax_longest, topological_order
from spikepipe_jax.schedule.validate import Schedule, normalize


class _Prep:
    """Index-based view of a graph for the scheduler (II-independent)."""

    def __init__(self, g: TaskGraph, comm: CommModel):
        self.g = g
        n = self.n = len(g.tasks)
        self.dur = [t.duration for t in g.tasks]
        self.preds: list[list[tuple[int, int, int, int]]] = [[] for _ in range(n)]  # (u, d, tr, bytes)
        self.succs: list[list[tuple[int, int, int, int]]] = [[] for _ in range(n)]
        self.zindeg = [0] * n
        self.zsucc: list[list[int]] = [[] for _ in range(n)]
        self.edges = []
        self.out_tagged: list[list[tuple[int, str, int]]] = [[] for _ in range(n)]
        for e in g.edges:
            u, v = g.index[e.src], g.index[e.dst]
            tr = comm.transfer_cycles(e.bytes) if u != v else 0
            self.edges.append((u, v, e.distance, tr))
            if u == v:
                continue
            self.out_tagged[u].append((v, e.tag, e.bytes))
            self.preds[v].append((u, e.distance, tr, e.bytes))
            self.succs[u].append((v, e.distance, tr, e.bytes))
            if e.distance == 0:
                self.zindeg[v] += 1
                self.zsucc[u].append(v)
        self.rank = [0] * n
        for i, v in enumerate(topological_order(g)):
            self.rank[v] = i
        # Strongly connected components over all edges: edges between components (any
        # distance) never close a loop, so components are scheduled in topological order and
        # only edges inside a component can bound a task from above.
        allsucc: list[list[int]] = [[] for _ in range(n)]
        for u, v, _, _ in self.edges:
            allsucc[u].append(v)
        comps = _bounds._sccs(n, allsucc)  # reverse topological order
        self.comp = [0] * n
        self.in_loop = [False] * n
        for ci, comp in enumerate(reversed(comps)):
            for v in comp:
                self.comp[v] = ci
                self.in_loop[v] = len(comp) > 1
        self.topo = sorted(range(n), key=lambda v: (self.comp[v], self.rank[v]))

    def heights(self, ii: int, max_passes: int = 64) -> list[int]:
        """Rau's HeightR at period ii (longest path to the end, loop edges minus d*ii)."""
        dur, succs = self.dur, self.succs
        h = list(dur)
        order = self.topo[::-1]
        for _ in range(max_passes):
            changed = False
            for v in order:
                best = 0
                for s, d, _, _ in succs[v]:
                    val = h[s] - d * ii
                    if val > best:
                        best = val
                nv = dur[v] + best
                if nv > h[v]:
                    h[v] = nv
                    changed = True
            if not changed:
                break
        return h


class _MRT:
    """Modulo reservation table of one processor.

    Busy intervals are kept sorted by start, each with its owner task, copied at -II, 0, +II,
    +2II so that a query window inside [0, 3 II) sees every wrap-around.
    """

    __slots__ = ("ii", "s", "e", "o", "load")

    def __init__(self, ii: int):
        self.ii = ii
        self.s: list[int] = []
        self.e: list[int] = []
        self.o: list[int] = []
        self.load = 0

    def earliest(self, lo: int, hi: int, dur: int) -> int | None:
        """Earliest t in [lo, hi] with [t, t + dur) free modulo II, or None."""
        if lo > hi:
            return None
        if dur == 0:
            return lo
        ii = self.ii
        if self.load + dur > ii:
            return None
        r = lo % ii
        base = lo - r
        limit = min(hi - base, r + ii - 1)
        x = r
        s, e = self.s, self.e
        while x <= limit:
            j = bisect.bisect_left(s, x + dur) - 1
            if j >= 0 and e[j] > x:
                x = e[j]
                continue
            return base + x
        return None

    def conflicts(self, t: int, dur: int) -> set[int]:
        """Owners of the intervals that [t, t + dur) overlaps modulo II."""
        if dur == 0:
            return set()
        x = t % self.ii
        out = set()
        j = bisect.bisect_left(self.s, x + dur) - 1
        while j >= 0 and self.s[j] > x - self.ii - 1:
            if self.e[j] > x:
                out.add(self.o[j])
            j -= 1
        return out

    def insert(self, t: int, dur: int, owner: int) -> None:
        if dur == 0:
            return
        ii = self.ii
        x = t % ii
        for a in (x - ii, x, x + ii, x + 2 * ii):
            if a + dur <= 0 or a >= 3 * ii:
                continue
            i = bisect.bisect_left(self.s, a)
            self.s.insert(i, a)
            self.e.insert(i, a + dur)
            self.o.insert(i, owner)
        self.load += dur

    def remove(self, owner: int, dur: int) -> None:
        if dur == 0:
            return
        keep = [i for i, o in enumerate(self.o) if o != owner]
        self.s = [self.s[i] for i in keep]
        self.e = [self.e[i] for i in keep]
        self.o = [self.o[i] for i in keep]
        self.load -= dur


def _list_phase(prep: _Prep, procs: int, ii: int, h: Sequence[int],
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
    mrt = [_MRT(ii) for _ in range(procs)]
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


def _affinity_assign(prep: _Prep, procs: int, ii: int) -> list[int] | None:
    """Processor per task that keeps each layer's tasks together where the period allows.

    Clusters are a layer's tasks (for split tasks: piece j of each split task of the layer,
    which share the same channels); tasks without a layer are their own cluster.  Clusters are
    placed largest first on a processor with room (capacity II), preferring the one they
    exchange most bytes with, then the fullest (best fit); a cluster with no room is broken into
    its tasks, placed the same way.  None if some task finds no room.
    """
    g = prep.g
    clusters: dict[tuple, list[int]] = {}
    for v, t in enumerate(g.tasks):
        if t.layer < 0:
            key = ("task", v)
        else:
            key = ("layer", t.layer, t.name.rsplit(".", 1)[1] if t.origin else None)
        clusters.setdefault(key, []).append(v)
    load = [0] * procs
    proc = [-1] * prep.n
    dur = prep.dur

    def place(members: list[int]) -> bool:
        need = sum(dur[v] for v in members)
        aff = [0] * procs
        mset = set(members)
        for v in members:
            for u, _, _, b in prep.preds[v]:
                if u not in mset and proc[u] >= 0:
                    aff[proc[u]] += b
            for w, _, _, b in prep.succs[v]:
                if w not in mset and proc[w] >= 0:
                    aff[proc[w]] += b
        best = None
        for p in range(procs):
            if load[p] + need <= ii:
                key = (aff[p], load[p])
                if best is None or key > best[0]:
                    best = (key, p)
        if best is None:
            return False
        for v in members:
            proc[v] = best[1]
        load[best[1]] += need
        return True

    for members in sorted(clusters.values(), key=lambda m: -sum(dur[v] for v in m)):
        if place(members):
            continue
        for v in sorted(members, key=lambda v: -dur[v]):
            if not place([v]):
                return None
    return proc


def _reduce_comm(prep: _Prep, procs: int, ii: int, t: list[int], proc: list[int],
                 passes: int = 3) -> tuple[list[int], list[int]]:
    """Local search at a fixed period: move single tasks next to their neighbours.

    Each task, heaviest traffic first, is tried on the processors of its neighbours, in the
    earliest slot that keeps every edge (all tasks are placed, so both predecessors and
    successors bound the window) and the reservation tables valid; the move is kept if the
    bytes communicated (``comm.bytes_communicated``, evaluated on the sources it changes) drop.
    """
    n, dur, preds, succs = prep.n, prep.dur, prep.preds, prep.succs
    out_e = prep.out_tagged
    mrt = [_MRT(ii) for _ in range(procs)]
    for v in range(n):
        mrt[proc[v]].insert(t[v], dur[v], v)

    def contrib(u: int) -> int:
        """Bytes sent by task u (multicast per tag and destination processor)."""
        pu = proc[u]
        groups: dict[tuple[str, int], int] = {}
        tot = 0
        for w, tag, b in out_e[u]:
            q = proc[w]
            if q == pu:
                continue
            if tag:
                key = (tag, q)
                if b > groups.get(key, -1):
                    groups[key] = b
            else:
                tot += b
        return tot + sum(groups.values())

    srcs = [sorted({v} | {u for u, *_ in preds[v]}) for v in range(n)]
    weight = [sum(b for *_, b in preds[v]) + sum(b for *_, b in succs[v]) for v in range(n)]
    order = sorted(range(n), key=lambda v: -weight[v])
    for _ in range(passes):
        improved = False
        for v in order:
            cands = {proc[u] for u, *_ in preds[v]} | {proc[s] for s, *_ in succs[v]}
            cands.discard(proc[v])
            if not cands:
                continue
            old_p, old_t = proc[v], t[v]
            before = sum(contrib(u) for u in srcs[v])
            mrt[old_p].remove(v, dur[v])
            done = False
            for p in sorted(cands):
                lo, hi = None, None
                for u, d, tr, _ in preds[v]:
                    x = t[u] + dur[u] - d * ii + (tr if proc[u] != p else 0)
                    lo = x if lo is None or x > lo else lo
                for s_, d, tr, _ in succs[v]:
                    x = t[s_] + d * ii - dur[v] - (tr if proc[s_] != p else 0)
                    hi = x if hi is None or x < hi else hi
                if lo is None:
                    lo = 0 if hi is None else hi - ii + 1
                if hi is None:
                    hi = lo + ii - 1
                start = mrt[p].earliest(lo, min(hi, lo + ii - 1), dur[v])
                if start is None:
                    continue
                proc[v] = p
                if sum(contrib(u) for u in srcs[v]) < before:
                    t[v] = start
                    mrt[p].insert(start, dur[v], v)
                    done = improved = True
                    break
                proc[v] = old_p
            if not done:
                mrt[old_p].insert(old_t, dur[v], v)
        if not improved:
            break
    return t, proc


def _min_offset(ii: int, pos: Sequence[int], dur: Sequence[int], proc: Sequence[int],
                u: int, v: int, d: int, tr: int) -> int:
    """Least ``k_v - k_u`` for edge u -> v (distance d, transfer tr between processors):
    ``ceil((pos_u + t_u + c_uv - pos_v) / ii) - d``, c_uv = tr unless on one processor."""
    c = tr if proc[u] != proc[v] else 0
    return -((pos[v] - pos[u] - dur[u] - c) // ii) - d  # ceil(x / ii) == -((-x) // ii)


def _offsets(prep: _Prep, ii: int, pos: Sequence[int], proc: Sequence[int],
             max_passes: int = 100) -> list[int] | None:
    r"""Integer offsets k with k_v - k_u >= ceil((pos_u + t_u + c_uv - pos_v) / ii) - d, or None.

    Bellman-Ford passes in topological order; no convergence within ``max_passes`` passes is
    taken as a positive cycle (this phase is a heuristic: a miss only loses a solution).
    """
    n, dur = prep.n, prep.dur
    cons = [(u, v, _min_offset(ii, pos, dur, proc, u, v, d, tr)) for u, v, d, tr in prep.edges]
    order = prep.rank
    cons.sort(key=lambda c: (prep.comp[c[0]], order[c[0]]))
    return relax_longest(n, cons, max_passes)


def _hybrid_phase(prep: _Prep, procs: int, ii: int, h: Sequence[int],
                  fixed: Sequence[int] | None = None) -> tuple[list[int], list[int]] | None:
    """Loop tasks by list scheduling, then the other tasks bin-packed into the free gaps.

    Tasks outside the graph's loops (singleton strongly connected components) are only bound by
    edges between components, which form a DAG, so any positions are fine for them once their
    offsets are solved (:func:`_offsets`): they are packed best-fit-decreasing into the gaps the
    loop tasks leave (each processor's free intervals modulo II).
    """
    n, dur = prep.n, prep.dur
    loop = [v for v in range(n) if prep.in_loop[v]]
    t = [0] * n
    proc = [-1] * n
    if loop:
        r = _list_phase(prep, procs, ii, h, fixed, subset=loop)
        if r is None:
            return None
        t0, p0, mrt = r
        for v in loop:
            t[v], proc[v] = t0[v], p0[v]
        gaps = _free_gaps(mrt, ii)
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
    k = _offsets(prep, ii, pos, proc)
    if k is None:
        return None
    return [pos[v] + k[v] * ii for v in range(n)], proc


def _free_gaps(mrt: Sequence[_MRT], ii: int) -> list[tuple[int, int, int]]:
    """Maximal free intervals ``(length, processor, start)`` of each table modulo ii."""
    return _gaps_mod([{(a % ii, a % ii + (b - a)) for a, b in zip(m.s, m.e)} for m in mrt], ii)


def _gaps_mod(busy: Sequence[Iterable[tuple[int, int]]], ii: int) -> list[tuple[int, int, int]]:
    """Maximal free intervals ``(length, processor, start)`` modulo ii, given each processor's
    non-overlapping busy intervals ``[a, b)`` with a in [0, ii) and 0 < b - a <= ii."""
    out = []
    for p, ivs in enumerate(busy):
        ivs = sorted(ivs)
        if not ivs:
            out.append((ii, p, 0))
            continue
        # unroll one turn starting at the first busy interval
        first, x = ivs[0]
        for a, b in ivs[1:] + [(first + ii, first + ii)]:
            if a > x:
                out.append((a - x, p, x % ii))
            x = max(x, b)
    return out


def _sequential(prep: _Prep) -> tuple[int, list[int], list[int]]:
    """All tasks on processor 0, back-to-back in topological order, II = sum of durations."""
    ii = max(1, sum(prep.dur))
    t = [0] * prep.n
    x = 0
    for v in prep.topo:
        t[v] = x
        x += prep.dur[v]
    return ii, t, [0] * prep.n


def _search(lb: int, ub: int, attempt: Callable[[int], object | None], rel_tol: float = 2.5e-3):
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
    """Smallest-period schedule found by the list / hybrid phases (module docstring), no splits.

    Args:
      g: task graph (tasks are not split here).
      processors: P >= 1.
      comm: link model (transfer times between processors).
      fixed: optional ``{task: processor}`` for every task (used by the 1F1B baseline).
      min_period: start the search here instead of the lower bound.
      method: name recorded in the schedule.
      phases: which phases to try at each period, in order (``"list"``, ``"list_comm"``,
        ``"hybrid"``, ``"affinity"``); default: only the list phase when over 90 % of the
        tasks are on loops, else the hybrid phase first, then the list phase.
      prefer_fewer_bytes: at the period found, also run the list phase that picks processors by
        bytes moved first (then finish time) and keep whichever moves fewer bytes.
      lower_bound: ``bounds.lower_bound(g, processors)`` if the caller already has it (it is
        computed otherwise).

    Returns:
      a valid :class:`Schedule` (``info["phase"]`` says which phase produced it).

    Raises:
      ValueError: P not a positive integer, or ``fixed`` missing tasks / out of range.
    """
    _bounds._check_p(processors)
    prep = _Prep(g, comm)
    fx = None
    if fixed is not None:
        missing = [t.name for t in g.tasks if t.name not in fixed]
        if missing:
            raise ValueError(f"fixed assignment misses tasks {missing[:5]}")
        fx = [int(fixed[t.name]) for t in g.tasks]
        if any(not 0 <= p < processors for p in fx):
            raise ValueError(f"fixed assignment uses a processor outside [0, {processors})")
    lb = _bounds.lower_bound(g, processors) if lower_bound is None else lower_bound
    if fx is not None:
        loads = [0] * processors
        for v, p in enumerate(fx):
            loads[p] += prep.dur[v]
        lb = max(lb, max(loads))
    if min_period is not None:
        lb = max(lb, int(min_period))
    seq_ii, seq_t, seq_p = _sequential(prep)
    ub = max(lb, seq_ii + sum(tr for _, _, _, tr in prep.edges))

    if phases is None:
        loop_share = sum(prep.in_loop) / max(1, prep.n)
        # the hybrid phase list-schedules only the loop tasks and packs the rest; when nearly
        # every task is on a loop it is the list phase again
        phases = ("list",) if loop_share > 0.9 else ("hybrid", "list")
    heights: dict[int, list[int]] = {}

    def run(ph: str, ii: int):
        if ii not in heights:
            heights.clear()
            heights[ii] = prep.heights(ii)
        h = heights[ii]
        if ph in ("list", "list_comm"):
            r = _list_phase(prep, processors, ii, h, fx, comm_first=(ph == "list_comm"))
            return r and r[:2]
        if ph == "hybrid":
            return _hybrid_phase(prep, processors, ii, h, fx)
        if ph == "affinity":
            fa = fx if fx is not None else _affinity_assign(prep, processors, ii)
            r = None if fa is None else _list_phase(prep, processors, ii, h, fa)
            return r and r[:2]
        raise ValueError(f"unknown phase {ph!r}")

    def attempt(ii: int):
        for ph in phases:
            r = run(ph, ii)
            if r is not None:
                return ph, r
        return None

    names = [t.name for t in g.tasks]
    found = _search(lb, ub, attempt)
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
            alt = run("list_comm", ii) if phase != "list_comm" else None
            if alt is not None and moved(alt[1]) < moved(proc):
                phase, (times, proc) = "list_comm", alt
            times, proc = _reduce_comm(prep, processors, ii, list(times), list(proc))
    return normalize(g, processors, ii, dict(zip(names, proc)), dict(zip(names, times)),
                     method=method, comm=comm, info={"phase": phase, "lower_bound": lb})


def split_plan(g: TaskGraph, processors: int, target: int) -> dict[str, int]:
    """``{task: pieces}`` for the splittable tasks longer than ``target`` cycles."""
    out = {}
    for t in g.tasks:
        if t.split_extent > 1 and t.duration > target > 0:
            out[t.name] = min(processors, t.split_extent, math.ceil(t.duration / target))
    return {k: v for k, v in out.items() if v > 1}


def spikepipe_schedule(g: TaskGraph, processors: int, *, comm: CommModel = CommModel(),
                       split_fn: Callable[[Mapping[str, int]], TaskGraph] | None = None,
                       split_targets: Sequence[float] = (1.0, 0.5),
                       unsplit: Schedule | None = None, comm_tolerance: float = 0.01) -> Schedule:
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
      unsplit: the schedule of ``g`` without splits, if already computed.
      comm_tolerance: among candidate schedules (free placement, layer affinity, or the
        standard pipeline's contiguous stages, each with or without splits) whose periods are
        within this fraction of the smallest, the one that moves the fewest bytes wins.

    Returns:
      the best valid schedule; ``info["split"]`` gives the pieces per split task.
    """
    def both(graph: TaskGraph, **info) -> Schedule:
        lb = _bounds.lower_bound(graph, processors)
        cands = [modulo_schedule(graph, processors, comm=comm, lower_bound=lb)]
        part = _stage_assignment(graph, processors)
        if part is not None:  # the standard pipeline's placement is one of the candidates
            cands.append(modulo_schedule(graph, processors, comm=comm, fixed=part, phases=("list",),
                                         lower_bound=lb))
        if any(e.bytes for e in graph.edges):
            cands.append(modulo_schedule(graph, processors, comm=comm, phases=("affinity",),
                                         lower_bound=lb))
        return _with_info(_pick(cands, comm_tolerance), **info)

    best = _with_info(unsplit, split={}) if unsplit is not None else both(g, split={})
    if split_fn is None:
        return best
    res = math.ceil(g.total_duration / processors)
    if best.period <= res * 1.01:
        return best
    seen = set()
    for frac in split_targets:
        plan = split_plan(g, processors, max(1, int(res * frac)))
        key = tuple(sorted(plan.items()))
        if not plan or key in seen:
            continue
        seen.add(key)
        best = _pick([best, both(split_fn(plan), split=plan)], comm_tolerance)
    return best


def _stage_assignment(g: TaskGraph, processors: int) -> dict[str, int] | None:
    """Every task on the processor of its layer's stage, for the contiguous layer partition
    that minimises the largest stage load (as standard pipelining); None without layers."""
    from spikepipe_jax.schedule.baselines import _layer_costs, partition_min_max  # (baselines imports us)
    if any(t.layer < 0 for t in g.tasks) or not g.tasks:
        return None
    costs = _layer_costs(g)
    part = partition_min_max(costs, min(processors, len(costs)))
    return {t.name: part[t.layer] for t in g.tasks}


def _pick(cands: Sequence[Schedule], tol: float) -> Schedule:
    """Smallest period; among periods within ``tol`` of it, fewest bytes communicated."""
    top = min(s.period for s in cands)
    ok = [s for s in cands if s.period <= top * (1 + tol)]
    return min(ok, key=lambda s: (s.bytes_communicated, s.period))


def _with_info(s: Schedule, **kw) -> Schedule:
    import dataclasses
    info = dict(s.info)
    info.update(kw)
    return dataclasses.replace(s, info=info)


__all__ = ["modulo_schedule", "spikepipe_schedule", "split_plan"]


r"""Lower bounds on the period of any schedule that moves at most a given number of bytes.

Every processor runs its tasks once per period without overlap, so the period of a valid
schedule is at least its largest processor load; and ``comm.bytes_communicated`` depends only on
the assignment.  So

.. math:: II \ge X^*(\beta) = \min\{\max_p \mathrm{load}_p(a) : \mathrm{bytes}(a) \le \beta\}

over assignments :math:`a` of the (unsplit) tasks to at most P processors, together with the
bounds of ``bounds.py`` (iteration bound, work / P, longest task).

* :func:`exact_front` computes the trade-off exactly, by enumerating the set partitions of the
  tasks (processors are identical), for graphs of up to about 11 tasks (Bell(11) = 678,570).
* :func:`layer_cut_bytes` bounds it for any training graph: layer l's forward task, its
  (LIF-)backward task and its weight-gradient task exchange three tensors (membranes
  :math:`m_l`: F -> B, delta :math:`\delta_l`: B -> W, weights :math:`w_l`: W -> F, each counted
  once by ``bytes_communicated``).  If the three do not fit on one processor (load > X), every
  grouping of them cuts at least two of the three edges, so at least
  :math:`\min(m_l + w_l,\ \delta_l + w_l,\ m_l + \delta_l)` bytes cross, more when single tasks
  or pairs exceed X; tags differ per layer, so the layers' costs add up.  :func:`layer_chain_bytes`
  adds the boundaries between whole layers placed apart (a dynamic program over the chain).

:func:`min_period_for_budget` turns either into the smallest period a budget allows.  Pure Python.
"""

from __future__ import annotations

import math
from typing import Sequence

from spikepipe_jax.schedule.bounds import lower_bound
from spikepipe_jax.schedule.graph import TaskGraph


def _groups(g: TaskGraph):
    groups: dict[tuple, list[tuple[int, int, int]]] = {}
    for k, e in enumerate(g.edges):
        if e.src != e.dst:
            u, v = g.index[e.src], g.index[e.dst]
            groups.setdefault((u, e.tag) if e.tag else ("edge", k), []).append((u, v, e.bytes))
    return list(groups.values())


def exact_front(g: TaskGraph, max_tasks: int = 11) -> list[list[tuple[int, int]]]:
    """``front[k]``: Pareto points ``(largest load, fewest bytes)`` over assignments that use
    exactly k processors (k = 1..n), sorted by load; exhaustive over set partitions.

    Raises:
      ValueError: more than ``max_tasks`` tasks.
    """
    n = len(g.tasks)
    if n > max_tasks:
        raise ValueError(f"exact_front enumerates set partitions: at most {max_tasks} tasks, got {n}")
    dur = [t.duration for t in g.tasks]
    groups = _groups(g)
    best: list[dict[int, int]] = [dict() for _ in range(n + 1)]  # k -> {max load: min bytes}
    blk = [0] * n
    loads: list[int] = []

    def leaf() -> None:
        b = 0
        for es in groups:
            seen: dict[int, int] = {}
            for u, v, x in es:
                q = blk[v]
                if q != blk[u] and x > seen.get(q, -1):
                    seen[q] = x
            b += sum(seen.values())
        k = len(loads)
        mx = max(loads)
        cur = best[k].get(mx)
        if cur is None or b < cur:
            best[k][mx] = b

    def rec(v: int) -> None:
        if v == n:
            leaf()
            return
        k = len(loads)
        for q in range(k + 1):  # restricted growth: a task opens at most one new processor
            if q == k:
                loads.append(0)
            blk[v] = q
            loads[q] += dur[v]
            rec(v + 1)
            loads[q] -= dur[v]
            if q == k:
                loads.pop()

    if n:
        rec(0)
    out: list[list[tuple[int, int]]] = [[] for _ in range(n + 1)]
    for k in range(1, n + 1):
        low = None
        for mx in sorted(best[k]):
            b = best[k][mx]
            if low is None or b < low:
                out[k].append((mx, b))
                low = b
    return out


def _layer_triangles(g: TaskGraph) -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
    """Per layer: durations (F, B or BL, W) and bytes (membranes, delta, weights)."""
    by = {(t.kind, t.layer): t for t in g.tasks if t.layer >= 0 and not t.origin}
    out = []
    for l in range(g.num_layers):
        f, w = by.get(("F", l)), by.get(("W", l))
        b = by.get(("BL", l)) or by.get(("B", l))
        if f is None or w is None or b is None:
            continue
        nb = {"m": 0, "d": 0, "w": 0}
        for e in g.edges:
            pair = (e.src, e.dst)
            if pair == (f.name, b.name):
                nb["m"] = max(nb["m"], e.bytes)
            elif pair == (b.name, w.name):
                nb["d"] = max(nb["d"], e.bytes)
            elif pair == (w.name, f.name):
                nb["w"] = max(nb["w"], e.bytes)
        out.append(((f.duration, b.duration, w.duration), (nb["m"], nb["d"], nb["w"])))
    return out


def _triangle_cost(durs: tuple[int, int, int], nb: tuple[int, int, int], x: float,
                   split_only: bool = False) -> float:
    """Fewest bytes among the groupings of (F, B, W) whose groups each fit in x (with
    ``split_only``, among those that do not keep all three together)."""
    (tf, tb, tw), (m, d, w) = durs, nb
    options = ((tf + tb + tw, 0, 0, 0), (tf, tb + tw, 0, m + w), (tf + tb, tw, 0, d + w),
               (tf + tw, tb, 0, m + d), (tf, tb, tw, m + d + w))
    costs = [c for a, b, e, c in options[1 if split_only else 0:] if max(a, b, e) <= x]
    return min(costs) if costs else math.inf


def layer_cut_bytes(g: TaskGraph, x: float) -> float:
    """Lower bound on the bytes of any assignment whose largest load is at most ``x``."""
    return sum(_triangle_cost(durs, nb, x) for durs, nb in _layer_triangles(g))


def _edge_bytes(g: TaskGraph, src: str | None, dst: str | None) -> int:
    if src is None or dst is None:
        return 0
    return max((e.bytes for e in g.edges if e.src == src and e.dst == dst), default=0)


def _chain(g: TaskGraph):
    """Per layer: cluster load F + B(L) + W and the bytes of a boundary to the next layer when
    both are kept whole on different processors: spikes, plus the input gradient or (BG of the
    next layer on this side) its delta and weights."""
    names = {(t.kind, t.layer): t.name for t in g.tasks if t.layer >= 0 and not t.origin}
    tri = _layer_triangles(g)
    loads = [sum(d) for d, _ in tri]
    bounds = []
    for l in range(len(tri) - 1):
        b_here = names.get(("BL", l)) or names.get(("B", l))
        spikes = _edge_bytes(g, names.get(("F", l)), names.get(("F", l + 1)))
        bg = names.get(("BG", l + 1))
        if bg is None:  # B whole: the gradient leaves B_{l+1}
            cut = _edge_bytes(g, names.get(("B", l + 1)), b_here)
        else:
            cut = min(_edge_bytes(g, bg, b_here),
                      _edge_bytes(g, names.get(("BL", l + 1)), bg) + _edge_bytes(g, names.get(("W", l + 1)), bg))
        bounds.append(spikes + cut)
    return tri, loads, bounds


def layer_chain_bytes(g: TaskGraph, x: float) -> float:
    r"""Lower bound on the bytes of any assignment whose largest load is at most ``x``
    (at least :func:`layer_cut_bytes`).

    Relaxation over the chain of layers: a layer is either kept whole (its F, B(L), W on one
    processor) or cut (its F, B(L), W on two or three processors: at least the cheapest such
    grouping's share of :func:`layer_cut_bytes`).  Consecutive whole layers on one processor
    form a run whose load (F + B(L) + W each; BG and cut layers counted as 0) is at most x; two
    consecutive whole layers on different processors pay their boundary (spikes, plus the input
    gradient or the next layer's delta and weights for its BG task: whichever side BG is on,
    one of the two crosses).  Every whole layer is in a run, so every boundary between whole
    layers is counted; the bytes of a cut layer's triangle, of each boundary and of the
    different layers carry different tags and edges, so the parts add up; a dynamic program
    takes the cheapest choice."""
    tri, loads, bounds = _chain(g)
    n = len(tri)
    if n == 0:
        return 0.0
    inf = math.inf
    best = [[inf, inf] for _ in range(n + 1)]  # [layers done][previous layer whole?]
    best[0][0] = 0.0
    for j in range(n):
        for flag in (0, 1):
            cur = best[j][flag]
            if cur == inf:
                continue
            c = _triangle_cost(*tri[j], x, split_only=True)  # a whole layer is a run
            if c < inf:
                best[j + 1][0] = min(best[j + 1][0], cur + c)
            enter = cur + (bounds[j - 1] if flag and j > 0 else 0)
            run = 0
            for k in range(j, n):
                run += loads[k]
                if run > x:
                    break
                best[k + 1][1] = min(best[k + 1][1], enter)
    return min(best[n])


def min_period_for_budget(g: TaskGraph, processors: int, budget_bytes: float, *,
                          front: Sequence[Sequence[tuple[int, int]]] | None = None) -> tuple[int, str]:
    """``(lower bound on the period of any schedule of g moving <= budget_bytes, how)``.

    ``how`` is ``"exact"`` (``front`` from :func:`exact_front` given) or ``"layer_cut"``; the
    result also includes ``bounds.lower_bound(g, processors)``.
    """
    base = lower_bound(g, processors)
    if front is not None:
        xs = [mx for k in range(1, min(processors, len(front) - 1) + 1) for mx, b in front[k]
              if b <= budget_bytes]
        return max(base, min(xs) if xs else math.inf), "exact"
    tri, loads, _ = _chain(g)
    cands = {base}
    for (tf, tb, tw), _ in tri:
        cands.update((tf, tb, tw, tf + tb, tf + tw, tb + tw, tf + tb + tw))
    for j in range(len(loads)):  # run loads
        for k in range(j + 1, len(loads) + 1):
            cands.add(sum(loads[j:k]))
    for x in sorted(c for c in cands if c >= base):  # the bound is a step function of x
        if layer_chain_bytes(g, x) <= budget_bytes:
            return x, "layer_chain"
    return math.inf, "layer_chain"


__all__ = ["exact_front", "layer_cut_bytes", "layer_chain_bytes", "min_period_for_budget"]

r"""Lower bounds on the iteration period of a task graph on P processors.

* **Iteration bound** (Renfors & Neuvo, 1981; Parhi, *VLSI DSP Systems*, ch. 2):

  .. math:: T_\infty = \max_{\text{cycles } C} \frac{\sum_{v \in C} t_v}{\sum_{e \in C} d_e},

  the time of the slowest loop per delay.  No schedule, on any number of processors, can start
  iterations faster.  Computed exactly (a ``Fraction``) as a maximum cycle ratio with Howard's
  policy iteration (Cochet-Terrasson, Cohen, Gaubert, McGettrick & Quadrat, 1998; Dasdan, ACM
  TODAES 2004, who found it the fastest in practice) on each strongly connected component, in
  exact rational arithmetic, so no loop enumeration.
* **Resource bound** :math:`\sum_v t_v / P`: P processors do all the work once per period.
* **Longest task** :math:`\max_v t_v`: a task runs on one processor within one period (only
  where tasks are not split).

The lower bound on an integer period is the max of the three, rounded up.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from spikepipe_jax.schedule.graph import TaskGraph


def _sccs(n: int, succ: list[list[int]]) -> list[list[int]]:
    """Strongly connected components (iterative Tarjan)."""
    index = [-1] * n
    low = [0] * n
    on = [False] * n
    stack: list[int] = []
    out: list[list[int]] = []
    counter = 0
    for root in range(n):
        if index[root] >= 0:
            continue
        work = [(root, 0)]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on[root] = True
        while work:
            v, i = work[-1]
            if i < len(succ[v]):
                work[-1] = (v, i + 1)
                w = succ[v][i]
                if index[w] < 0:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on[w] = True
                    work.append((w, 0))
                elif on[w]:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    u = work[-1][0]
                    low[u] = min(low[u], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on[w] = False
                        comp.append(w)
                        if w == v:
                            break
                    out.append(comp)
    return out


def _howard(nodes: list[int], out: dict[int, list[tuple[int, int, int]]]) -> tuple[Fraction, list[int]]:
    """Maximum cycle ratio sum(w)/sum(t) of one strongly connected component.

    ``out[v]`` lists ``(w, t, dst)`` edges inside the component; every node has one.  Returns the
    ratio and one critical cycle (node list).
    """
    policy = {v: max(out[v], key=lambda e: e[0]) for v in nodes}
    while True:
        # Value determination: each node follows its policy edge to a cycle.
        eta: dict[int, Fraction] = {}
        x: dict[int, Fraction] = {}
        cyc_of: dict[int, list[int]] = {}
        for start in nodes:
            if start in eta:
                continue
            path, pos = [], {}
            v = start
            while v not in eta and v not in pos:
                pos[v] = len(path)
                path.append(v)
                v = policy[v][2]
            if v in pos:  # found a new cycle path[pos[v]:]
                cyc = path[pos[v]:]
                sw = sum(policy[u][0] for u in cyc)
                st = sum(policy[u][1] for u in cyc)
                if st == 0:
                    raise ValueError("cycle with zero delays")  # prevented by TaskGraph
                r = Fraction(sw, st)
                head = cyc[0]
                eta[head], x[head] = r, Fraction(0)
                cyc_of[head] = cyc
                for u in reversed(cyc[1:]):
                    w, t, d = policy[u]
                    eta[u], x[u] = r, w - r * t + x[d]
                    cyc_of[u] = cyc
                path = path[:pos[v]]
            for u in reversed(path):
                w, t, d = policy[u]
                eta[u], x[u] = eta[d], w - eta[d] * t + x[d]
                cyc_of[u] = cyc_of[d]
        # Policy improvement, first on the ratio, then on the bias.
        changed = False
        for u in nodes:
            best = eta[u]
            for e in out[u]:
                if eta[e[2]] > best:
                    best, policy[u] = eta[e[2]], e
                    changed = True
        if changed:
            continue
        for u in nodes:
            best = x[u]
            for e in out[u]:
                w, t, d = e
                if eta[d] == eta[u]:
                    val = w - eta[u] * t + x[d]
                    if val > best:
                        best, policy[u] = val, e
                        changed = True
        if not changed:
            top = max(nodes, key=lambda v: eta[v])
            return eta[top], cyc_of[top]


def max_cycle_ratio(g: TaskGraph) -> tuple[Fraction, list[str]]:
    """Iteration bound and one critical loop (task names); ``(0, [])`` for an acyclic graph."""
    n = len(g.tasks)
    succ: list[list[int]] = [[] for _ in range(n)]
    edges = []
    for e in g.edges:
        u, v = g.index[e.src], g.index[e.dst]
        succ[u].append(v)
        edges.append((u, v, e.distance))
    comp_of = [0] * n
    comps = _sccs(n, succ)
    for ci, comp in enumerate(comps):
        for v in comp:
            comp_of[v] = ci
    best, best_cyc = Fraction(0), []
    dur = [t.duration for t in g.tasks]
    outs: dict[int, dict[int, list[tuple[int, int, int]]]] = {}
    for u, v, d in edges:
        if comp_of[u] == comp_of[v]:
            outs.setdefault(comp_of[u], {}).setdefault(u, []).append((dur[u], d, v))
    for ci, out in outs.items():
        nodes = comps[ci]
        if len(nodes) == 1 and nodes[0] not in out:
            continue
        r, cyc = _howard(nodes, out)
        if r > best or not best_cyc:
            best, best_cyc = r, cyc
    return best, [g.tasks[v].name for v in best_cyc]


def iteration_bound(g: TaskGraph) -> Fraction:
    r"""Exact iteration bound :math:`T_\infty` (0 if the graph has no loop)."""
    return max_cycle_ratio(g)[0]


def resource_bound(g: TaskGraph, processors: int) -> Fraction:
    """Total work per processor, ``sum(durations) / P``."""
    _check_p(processors)
    return Fraction(g.total_duration, processors)


def _check_p(processors: Any) -> None:
    if isinstance(processors, bool) or not isinstance(processors, int) or processors <= 0:
        raise ValueError(f"processors must be a positive integer, got {processors!r}")


def lower_bound(g: TaskGraph, processors: int, *, splittable: bool = False) -> int:
    """Integer lower bound on the period: ``ceil(max(T_inf, sum/P, longest task))``.

    With ``splittable=True`` the longest-task term is dropped (tasks may be split); the iteration
    bound is then computed with every splittable task shortened to 1/P of its duration (a piece
    can be no shorter), so the result stays a valid bound for schedules of split graphs.
    """
    _check_p(processors)
    parts = [Fraction(g.total_duration, processors)]
    if splittable:
        from spikepipe_jax.schedule.graph import Task, TaskGraph as TG
        tasks = tuple(Task(t.name, (t.duration // processors) if t.split_extent > 1 else t.duration)
                      for t in g.tasks)
        parts.append(iteration_bound(TG(tasks, g.edges)))
        parts.append(Fraction(max((t.duration for t in g.tasks if t.split_extent <= 1), default=0)))
    else:
        parts.append(iteration_bound(g))
        parts.append(Fraction(max((t.duration for t in g.tasks), default=0)))
    return max(1, math.ceil(max(parts)))


def period_bounds(g: TaskGraph, processors: int) -> dict[str, Any]:
    """All bounds as plain data: iteration bound (float and exact string), critical loop,
    resource bound, longest task and the integer lower bound (tasks not split)."""
    _check_p(processors)
    tinf, loop = max_cycle_ratio(g)
    res = Fraction(g.total_duration, processors)
    longest = max((t.duration for t in g.tasks), default=0)
    return {
        "iteration_bound": float(tinf), "iteration_bound_exact": str(tinf), "critical_loop": loop,
        "resource_bound": float(res), "longest_task": longest,
        "lower_bound": max(1, math.ceil(max(tinf, res, Fraction(longest)))),
    }


__all__ = ["iteration_bound", "max_cycle_ratio", "resource_bound", "lower_bound", "period_bounds"]

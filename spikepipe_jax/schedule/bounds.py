r"""Lower bounds on the iteration period of a task graph on P processors.

* **Iteration bound** (Renfors & Neuvo, 1981; Parhi, *VLSI DSP Systems*, ch. 2):

  .. math:: T_\infty = \max_{\text{cycles } C} \frac{\sum_{v \in C} t_v}{\sum_{e \in C} d_e},

  the time of the slowest loop per delay.  No schedule, on any number of processors, can start
  iterations faster.  Computed exactly (a ``Fraction``) as a maximum cycle ratio, without loop
  enumeration, on each strongly connected component: Howard's policy iteration
  (Cochet-Terrasson, Cohen, Gaubert, McGettrick & Quadrat, 1998; Dasdan, ACM TODAES 2004, who
  found it the fastest in practice) in floating point finds a critical cycle, whose ratio is then
  taken exactly and certified by an exact Bellman-Ford test (no cycle has positive weight
  ``b*t_v - a*d_e`` for the ratio a/b); should the test fail, Howard runs again in rational
  arithmetic (and Lawler's parametric search backs that up).
* **Resource bound** :math:`\sum_v t_v / P`: P processors do all the work once per period.
* **Longest task** :math:`\max_v t_v`: a task runs on one processor within one period (only
  where tasks are not split).

The lower bound on an integer period is the max of the three, rounded up.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Optional

from spikepipe_jax.schedule.graph import TaskGraph, sccs


def _howard(nodes: list[int], out: dict[int, list[tuple[int, int, int]]],
            exact: bool = True) -> tuple[Any, list[tuple[int, tuple[int, int, int]]]]:
    """Maximum cycle ratio sum(w)/sum(t) of one strongly connected component (Howard).

    ``out[v]`` lists ``(w, t, dst)`` edges inside the component; every node has one.  Returns
    the ratio (a ``Fraction`` if ``exact``, else a float found with a relative tolerance of 1e-9)
    and one critical cycle as ``[(node, edge)]``.
    """
    tol = 0.0 if exact else 1e-9

    def ratio(a: int, b: int):
        return Fraction(a, b) if exact else a / b

    def gt(a, b) -> bool:
        return a > b + tol * max(1.0, abs(b)) if tol else a > b

    zero = Fraction(0) if exact else 0.0
    policy = {v: max(out[v], key=lambda e: e[0]) for v in nodes}
    x_prev: dict[int, Any] = {}
    for _ in range(20 * len(nodes) + 100):
        # Value determination: each node follows its policy edge to a cycle.
        eta: dict[int, Any] = {}
        x: dict[int, Any] = {}
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
                r = ratio(sw, st)
                # A fixed head per cycle keeping its previous bias: without this the biases of
                # an unchanged cycle can shift between rounds and the policy cycle.
                k = cyc.index(min(cyc))
                cyc = cyc[k:] + cyc[:k]
                head = cyc[0]
                eta[head], x[head] = r, x_prev.get(head, zero)
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
                if gt(eta[e[2]], best):
                    best, policy[u] = eta[e[2]], e
                    changed = True
        if changed:
            x_prev = x
            continue
        for u in nodes:
            best = x[u]
            for e in out[u]:
                w, t, d = e
                if not gt(eta[d], eta[u]) and not gt(eta[u], eta[d]):
                    val = w - eta[u] * t + x[d]
                    if gt(val, best):
                        best, policy[u] = val, e
                        changed = True
        if not changed:
            top = max(nodes, key=lambda v: eta[v])
            return eta[top], [(u, policy[u]) for u in cyc_of[top]]
        x_prev = x
    raise _NoConvergence


class _NoConvergence(Exception):
    pass


def _relax(nodes: list[int], out: dict[int, list[tuple[int, int, int]]], lam: Fraction
           ) -> tuple[Optional[int], dict[int, int]]:
    """Bellman-Ford (longest paths) on the integer weights ``b*w - a*t`` of ``lam = a/b``.

    Returns ``(hit, parent)``: ``hit`` is a node still relaxed in pass ``len(nodes) + 1``, so a
    cycle of positive weight (ratio > lam) leads to it through ``parent``; ``None`` if none.
    """
    a, b = lam.numerator, lam.denominator
    dist = {v: 0 for v in nodes}
    parent: dict[int, int] = {}
    for _ in range(len(nodes) + 1):
        hit = None
        for u in nodes:
            du = dist[u]
            for w, t, d in out[u]:
                val = du + b * w - a * t
                if val > dist[d]:
                    dist[d], parent[d] = val, u
                    hit = d
        if hit is None:
            return None, parent
    return hit, parent


def _component_ratio(nodes: list[int], out: dict[int, list[tuple[int, int, int]]]) -> tuple[Fraction, list[int]]:
    """Exact maximum cycle ratio of a component: fast float Howard, its critical cycle's ratio
    computed exactly, then checked exactly (no cycle above it), else the exact methods."""
    try:
        _, cyc = _howard(nodes, out, exact=False)
        r = Fraction(sum(e[0] for _, e in cyc), sum(e[1] for _, e in cyc))
        if _relax(nodes, out, r)[0] is None:  # no cycle with a ratio above r
            return r, [u for u, _ in cyc]
    except _NoConvergence:
        pass
    try:
        r, cyc = _howard(nodes, out, exact=True)
        return r, [u for u, _ in cyc]
    except _NoConvergence:
        return _parametric(nodes, out)


def _parametric(nodes: list[int], out: dict[int, list[tuple[int, int, int]]]) -> tuple[Fraction, list[int]]:
    """Maximum cycle ratio by repeated positive-cycle search (Lawler's test, exact).

    With the current ratio lam = a/b, Bellman-Ford looks for a cycle of positive weight
    ``b*w - a*t``; each one found has a larger ratio and becomes lam; none: lam is the maximum.
    """
    lam, best_cyc = Fraction(-1), []
    while True:
        a, b = lam.numerator, lam.denominator
        hit, parent = _relax(nodes, out, lam)
        if hit is None:
            return lam, best_cyc
        v = hit
        for _ in range(len(nodes)):
            v = parent[v]
        cyc, u = [v], parent[v]
        while u != v:
            cyc.append(u)
            u = parent[u]
        cyc.reverse()
        sw = st = 0
        for i, u in enumerate(cyc):
            nxt = cyc[(i + 1) % len(cyc)]
            w, t, _ = max((e for e in out[u] if e[2] == nxt), key=lambda e: b * e[0] - a * e[1])
            sw, st = sw + w, st + t
        lam, best_cyc = Fraction(sw, st), cyc


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
    comps = sccs(n, succ)
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
        r, cyc = _component_ratio(nodes, out)
        if r > best or not best_cyc:
            best, best_cyc = r, cyc
    return best, [g.tasks[v].name for v in best_cyc]


def iteration_bound(g: TaskGraph) -> Fraction:
    r"""Exact iteration bound :math:`T_\infty` (0 if the graph has no loop)."""
    return max_cycle_ratio(g)[0]


def resource_bound(g: TaskGraph, processors: int) -> Fraction:
    """Total work per processor, ``sum(durations) / P``."""
    check_processors(processors)
    return Fraction(g.total_duration, processors)


def check_processors(processors: Any) -> None:
    if isinstance(processors, bool) or not isinstance(processors, int) or processors <= 0:
        raise ValueError(f"processors must be a positive integer, got {processors!r}")


def lower_bound(g: TaskGraph, processors: int) -> int:
    """Integer lower bound on the period: ``ceil(max(T_inf, sum/P, longest task))``."""
    return period_bounds(g, processors)["lower_bound"]


def period_bounds(g: TaskGraph, processors: int) -> dict[str, Any]:
    """All bounds as plain data: iteration bound (float and exact string), critical loop,
    resource bound, longest task and the integer lower bound (tasks not split)."""
    check_processors(processors)
    tinf, loop = max_cycle_ratio(g)
    res = Fraction(g.total_duration, processors)
    longest = max((t.duration for t in g.tasks), default=0)
    return {
        "iteration_bound": float(tinf), "iteration_bound_exact": str(tinf), "critical_loop": loop,
        "resource_bound": float(res), "longest_task": longest,
        "lower_bound": max(1, math.ceil(max(tinf, res, Fraction(longest)))),
    }


__all__ = ["iteration_bound", "max_cycle_ratio", "resource_bound", "lower_bound", "period_bounds"]

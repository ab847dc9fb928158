r"""Exact minimum-period schedule for small task graphs (branch and bound), to measure the
list scheduler's gap to the optimum.

For a period II a schedule exists iff there are processors :math:`p_v`, positions
:math:`x_v \in [0, II)` without overlap modulo II on each processor, and integer offsets
:math:`k_v` with, for every edge :math:`u \to v` of distance d,

.. math:: k_v - k_u \ge \left\lceil \frac{x_u + t_u + c_{uv} - x_v}{II} \right\rceil - d,

which holds iff that difference-constraint graph has no positive cycle.  Edges between strongly
connected components never lie on a cycle, so only the positions of tasks on loops matter; the
other tasks only need room: they are bin-packed into the free gaps.  The search:

* II goes up from the lower bound (``bounds.lower_bound``) to the list scheduler's period, which
  is feasible (so the list schedule is optimal if nothing smaller is);
* loop tasks are placed in topological order, on processor 0..(used+1) (processors are
  identical), at every free position (the first at position 0: shifting all times is free), and
  a branch is cut as soon as the constraints among the placed loop tasks have a positive cycle;
* the other tasks are packed, largest first, into the maximal free intervals by exhaustive
  search (left-justified in a gap, which loses nothing since they only need room).

Exponential: meant for graphs of about 10 tasks and periods of a few tens of cycles (scale
durations down); ``node_limit`` stops it.
"""

from __future__ import annotations

from typing import Sequence

from spikepipe_jax.schedule import bounds
from spikepipe_jax.schedule.comm import CommModel
from spikepipe_jax.schedule.graph import TaskGraph, relax_longest
from spikepipe_jax.schedule.indexed import IndexedGraph
from spikepipe_jax.schedule.period_search import modulo_schedule
from spikepipe_jax.schedule.phases import min_offset
from spikepipe_jax.schedule.reservation import gaps_mod
from spikepipe_jax.schedule.validate import Schedule, normalize


class SearchLimit(ValueError):
    """Raised when the exact search exceeds its node budget."""


def _positive_cycle(nodes: Sequence[int], cons: Sequence[tuple[int, int, int]]) -> bool:
    """True if the constraints among ``nodes`` have a positive cycle (longest paths diverge)."""
    return relax_longest(max(nodes) + 1, cons) is None


def _longest(n: int, cons: Sequence[tuple[int, int, int]]) -> list[int]:
    k = relax_longest(n, cons)
    if k is None:
        raise AssertionError("positive cycle in a feasible assignment")
    return k


def exact_schedule(g: TaskGraph, processors: int, *, comm: CommModel = CommModel(),
                   max_tasks: int = 12, node_limit: int = 2_000_000) -> Schedule:
    """Minimum-period schedule by exhaustive search (module docstring); tasks are not split.

    Args:
      g: task graph with at most ``max_tasks`` tasks.
      processors: P.
      comm: link model.
      max_tasks: refuse larger graphs.
      node_limit: maximum search nodes over all periods.

    Returns:
      an optimal valid :class:`Schedule`, ``info["optimal"] = True``, ``info["nodes"]``.

    Raises:
      ValueError: bad P, more than ``max_tasks`` tasks; :class:`SearchLimit` past ``node_limit``.
    """
    bounds.check_processors(processors)
    n = len(g.tasks)
    if n > max_tasks:
        raise ValueError(f"exact search is limited to {max_tasks} tasks, the graph has {n}")
    heur = modulo_schedule(g, processors, comm=comm, method="list")
    lb = heur.info["lower_bound"]  # bounds.lower_bound(g, processors): no fixed / min_period
    # IndexedGraph gives self-loops transfer 0: harmless, both ends are on one processor
    prep = IndexedGraph(g, comm)
    dur, edges, in_loop, rank = prep.dur, prep.edges, prep.in_loop, prep.rank
    loop = sorted((v for v in range(n) if in_loop[v]), key=lambda v: rank[v])
    rest = sorted((v for v in range(n) if not in_loop[v]), key=lambda v: -dur[v])
    loop_edges = [(u, v, d, tr) for u, v, d, tr in edges if in_loop[u] and in_loop[v] and u != v]
    nodes = [0]

    def feasible(ii: int):
        proc = [-1] * n
        pos = [0] * n
        busy: list[list[tuple[int, int]]] = [[] for _ in range(processors)]

        def free(p: int, x: int, d: int) -> bool:
            if d == 0:
                return True
            for a, b in busy[p]:  # intervals [a, b) with b - a <= ii, a in [0, ii)
                for shift in (-ii, 0, ii):
                    if x < b + shift and a + shift < x + d:
                        return False
            return True

        def cons_of(placed: set[int]) -> list[tuple[int, int, int]]:
            return [(u, v, min_offset(ii, pos, dur, proc, u, v, d, tr))
                    for u, v, d, tr in loop_edges if u in placed and v in placed]

        def pack(i: int, gaps: list[tuple[int, int, int]]) -> bool:
            nodes[0] += 1
            if nodes[0] > node_limit:
                raise SearchLimit(f"exact search exceeded {node_limit} nodes")
            if i == len(rest):
                return True
            v = rest[i]
            if dur[v] == 0:
                proc[v], pos[v] = 0, 0
                return pack(i + 1, gaps)
            tried = set()
            for gi, (size, p, x) in enumerate(gaps):
                if size < dur[v] or (size, len(busy[p]) == 0) in tried:
                    continue
                if not busy[p]:
                    tried.add((size, True))  # empty processors are interchangeable
                proc[v], pos[v] = p, x % ii
                gaps[gi] = (size - dur[v], p, x + dur[v])
                if pack(i + 1, gaps):
                    return True
                gaps[gi] = (size, p, x)
            return False

        def place(i: int, placed: set[int], used: int) -> bool:
            nodes[0] += 1
            if nodes[0] > node_limit:
                raise SearchLimit(f"exact search exceeded {node_limit} nodes")
            if i == len(loop):
                return pack(0, gaps_mod(busy, ii))
            v = loop[i]
            d = dur[v]
            for p in range(min(processors, used + 1)):
                xs = [0] if i == 0 else range(ii)
                for x in xs:
                    if not free(p, x, d):
                        continue
                    proc[v], pos[v] = p, x
                    placed.add(v)
                    if d:
                        busy[p].append((x, x + d))
                    if not _positive_cycle(sorted(placed), cons_of(placed)):
                        if place(i + 1, placed, max(used, p + 1)):
                            return True
                    if d:
                        busy[p].pop()
                    placed.discard(v)
            return False

        if not place(0, set(), 0):
            return None
        return list(proc), list(pos)

    for ii in range(lb, heur.period):
        found = feasible(ii)
        if found is not None:
            proc, pos = found
            k = _longest(n, [(u, v, min_offset(ii, pos, dur, proc, u, v, d, tr))
                             for u, v, d, tr in edges])
            names = [t.name for t in g.tasks]
            times = {names[v]: pos[v] + k[v] * ii for v in range(n)}
            return normalize(g, processors, ii, dict(zip(names, proc)), times, method="exact",
                             comm=comm, info={"optimal": True, "nodes": nodes[0], "lower_bound": lb})
    import dataclasses
    info = dict(heur.info)
    info.update(optimal=True, nodes=nodes[0], lower_bound=lb)
    return dataclasses.replace(heur, method="exact", info=info)


__all__ = ["exact_schedule", "SearchLimit"]

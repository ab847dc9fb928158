"""Index-based view of a task graph for the schedulers (independent of the period).

Per task: durations, predecessor / successor lists with distances, transfer cycles and bytes,
the strongly connected component (components in topological order; a task is "on a loop" when
its component has more than one task), a topological rank, and Rau's heights at a period.
"""

from __future__ import annotations

from spikepipe_jax.schedule.comm import CommModel
from spikepipe_jax.schedule.graph import TaskGraph, sccs, topological_order


class IndexedGraph:
    """Index-based view of a graph for the scheduler (II-independent).

    Attributes:
      preds, succs: per task, ``(other task, distance, transfer cycles, bytes)``.
      edges: ``(u, v, distance, transfer cycles)`` for every edge, self loops included.
      comp, in_loop, rank, topo: component index, on-a-loop flag, topological rank, and the
        order (component, rank).
    """

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
        comps = sccs(n, allsucc)  # reverse topological order
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

__all__ = ["IndexedGraph"]

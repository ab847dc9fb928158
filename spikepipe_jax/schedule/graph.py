r"""Task graphs of one training iteration, with iteration distances (delays) on the edges.

A :class:`TaskGraph` is a dataflow graph in the sense of Parhi's *VLSI Digital Signal Processing
Systems* (1999), ch. 2-4: nodes are tasks with an execution time (cycles on one processor), and
an edge ``u -> v`` with ``distance`` :math:`d` says that the instance of ``v`` of iteration
:math:`i` needs the result of ``u`` of iteration :math:`i - d`.  Edges with :math:`d = 0` are
dependencies inside one iteration; :math:`d \ge 1` are loop-carried ("delays").  A cycle whose
distances sum to zero would mean a task waits for itself and is rejected.

The training graph (``training_graph.py``), retiming and delays (``retiming.py``), the JSON form
(``graph_json.py``) and random graphs (``generators.py``) build on this data model.

This module is pure Python (no JAX, no NumPy).
"""

from __future__ import annotations

import dataclasses
import heapq
from typing import Any, Mapping, Sequence

TRAIN_KINDS = ("F", "B", "BL", "BG", "W", "U")


@dataclasses.dataclass(frozen=True)
class Task:
    """One task: ``duration`` cycles on one processor, once per iteration.

    Attributes:
      name: unique name, e.g. ``"F0"``, ``"BL2"``, ``"W1.3"`` (piece 3 of a split ``W1``).
      duration: cycles (integer, >= 0).
      bytes_out: bytes the task produces per iteration.
      layer: weight layer ``l`` (-1 if not a layer task).
      kind: ``"F" | "B" | "BL" | "BG" | "W" | "U"`` for training tasks, ``""`` otherwise.
      bytes_in, bytes_weights: bytes read per iteration (cost model), for totals only.
      origin: for a piece of a split task, the name of the whole task; ``""`` otherwise.
      split_extent: size of the axis (output channels) the task may be split along; 0 = the task
        cannot be split.
    """

    name: str
    duration: int
    bytes_out: int = 0
    layer: int = -1
    kind: str = ""
    bytes_in: int = 0
    bytes_weights: int = 0
    origin: str = ""
    split_extent: int = 0

    @property
    def whole(self) -> str:
        """Name of the unsplit task this task is (a piece of)."""
        return self.origin or self.name


@dataclasses.dataclass(frozen=True)
class Edge:
    """Dependency ``src -> dst``: ``dst`` of iteration i needs ``src`` of iteration i - distance.

    ``bytes`` is the data moved if the two tasks run on different processors; ``tag`` names the
    tensor (edges from one source with the same tag carry the same data, see ``comm.py``).
    """

    src: str
    dst: str
    distance: int = 0
    bytes: int = 0
    tag: str = ""


def is_int(x: Any) -> bool:
    """An ``int`` that is not a ``bool`` (the graph's numbers)."""
    return isinstance(x, int) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class TaskGraph:
    """Validated, immutable task graph (construct with :func:`make_graph` or directly).

    Raises:
      ValueError: duplicate or empty task names, a negative or non-integer duration, distance or
        byte count, an edge naming an unknown task, or a cycle whose distances sum to zero.
    """

    tasks: tuple[Task, ...]
    edges: tuple[Edge, ...]
    index: Mapping[str, int] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "edges", tuple(self.edges))
        index: dict[str, int] = {}
        for t in self.tasks:
            if not isinstance(t, Task):
                raise ValueError(f"tasks must be Task objects, got {type(t).__name__}")
            if not isinstance(t.name, str) or not t.name:
                raise ValueError(f"task name must be a non-empty string, got {t.name!r}")
            if t.name in index:
                raise ValueError(f"duplicate task name {t.name!r}")
            for field in ("duration", "bytes_out", "bytes_in", "bytes_weights", "split_extent"):
                v = getattr(t, field)
                if not is_int(v) or v < 0:
                    raise ValueError(f"task {t.name!r}: {field} must be a non-negative integer, got {v!r}")
            if not is_int(t.layer):
                raise ValueError(f"task {t.name!r}: layer must be an integer, got {t.layer!r}")
            index[t.name] = len(index)
        for e in self.edges:
            if not isinstance(e, Edge):
                raise ValueError(f"edges must be Edge objects, got {type(e).__name__}")
            for end in (e.src, e.dst):
                if end not in index:
                    raise ValueError(f"edge {e.src!r} -> {e.dst!r} names unknown task {end!r}")
            if not is_int(e.distance) or e.distance < 0:
                raise ValueError(f"edge {e.src!r} -> {e.dst!r}: distance must be a non-negative integer, "
                                 f"got {e.distance!r}")
            if not is_int(e.bytes) or e.bytes < 0:
                raise ValueError(f"edge {e.src!r} -> {e.dst!r}: bytes must be a non-negative integer, "
                                 f"got {e.bytes!r}")
        object.__setattr__(self, "index", index)
        cycle = _zero_distance_cycle(self)
        if cycle:
            raise ValueError("cycle with zero delays (every task on it would wait for itself): "
                             + " -> ".join(cycle + [cycle[0]]))

    def __len__(self) -> int:
        return len(self.tasks)

    def task(self, name: str) -> Task:
        return self.tasks[self.index[name]]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    @property
    def total_duration(self) -> int:
        return sum(t.duration for t in self.tasks)

    @property
    def num_layers(self) -> int:
        return 1 + max((t.layer for t in self.tasks), default=-1)


def make_graph(tasks: Sequence[Task], edges: Sequence[Edge]) -> TaskGraph:
    """Validates and builds a :class:`TaskGraph` (see its Raises)."""
    return TaskGraph(tuple(tasks), tuple(edges))


def _zero_distance_adjacency(g: TaskGraph) -> tuple[list[list[int]], list[int]]:
    """Successor lists and in-degrees of the distance-0 edges, by task index."""
    succ: list[list[int]] = [[] for _ in g.tasks]
    indeg = [0] * len(g.tasks)
    for e in g.edges:
        if e.distance == 0:
            u, v = g.index[e.src], g.index[e.dst]
            succ[u].append(v)
            indeg[v] += 1
    return succ, indeg


def _zero_distance_cycle(g: TaskGraph) -> list[str]:
    """A cycle of distance-0 edges as a list of names, or [] (Kahn's algorithm)."""
    n = len(g.tasks)
    succ, indeg = _zero_distance_adjacency(g)
    stack = [v for v in range(n) if indeg[v] == 0]
    seen = 0
    while stack:
        u = stack.pop()
        seen += 1
        for v in succ[u]:
            indeg[v] -= 1
            if indeg[v] == 0:
                stack.append(v)
    if seen == n:
        return []
    # Walk inside the remaining nodes (each has a remaining zero-distance predecessor).
    rem = {v for v in range(n) if indeg[v] > 0}
    pred = {}
    for e in g.edges:
        if e.distance == 0:
            u, v = g.index[e.src], g.index[e.dst]
            if u in rem and v in rem:
                pred.setdefault(v, u)
    v = next(iter(rem))
    order: dict[int, int] = {}
    while v not in order:
        order[v] = len(order)
        v = pred[v]
    cyc = [w for w, k in sorted(order.items(), key=lambda kv: kv[1]) if k >= order[v]]
    return [g.tasks[w].name for w in reversed(cyc)]


def relax_longest(n: int, cons: Sequence[tuple[int, int, int]], max_passes: int | None = None,
                  init: Sequence[int] | None = None) -> list[int] | None:
    """Longest-path potentials ``k`` (from 0, or from ``init``) with ``k[v] >= k[u] + w`` for each
    ``(u, v, w)``.

    Bellman-Ford relaxation over nodes ``0..n-1``; returns None when it has not converged after
    ``min(n + 1, max_passes)`` passes, i.e. (without a pass limit) when there is a positive cycle.
    """
    k = [0] * n if init is None else list(init)
    passes = n + 1 if max_passes is None else min(n + 1, max_passes)
    for _ in range(passes):
        changed = False
        for u, v, w in cons:
            if k[u] + w > k[v]:
                k[v] = k[u] + w
                changed = True
        if not changed:
            return k
    return None


def topological_order(g: TaskGraph) -> list[int]:
    """Task indices in a topological order of the distance-0 edges (stable: by index)."""
    n = len(g.tasks)
    succ, indeg = _zero_distance_adjacency(g)
    heap = [v for v in range(n) if indeg[v] == 0]
    heapq.heapify(heap)
    out = []
    while heap:
        u = heapq.heappop(heap)
        out.append(u)
        for v in succ[u]:
            indeg[v] -= 1
            if indeg[v] == 0:
                heapq.heappush(heap, v)
    return out


def sccs(n: int, succ: list[list[int]]) -> list[list[int]]:
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


__all__ = ["Task", "Edge", "TaskGraph", "make_graph", "is_int", "relax_longest", "topological_order",
           "sccs", "TRAIN_KINDS"]

r"""Task graphs of one training iteration, with iteration distances (delays) on the edges.

A :class:`TaskGraph` is a dataflow graph in the sense of Parhi's *VLSI Digital Signal Processing
Systems* (1999), ch. 2-4: nodes are tasks with an execution time (cycles on one processor), and
an edge ``u -> v`` with ``distance`` :math:`d` says that the instance of ``v`` of iteration
:math:`i` needs the result of ``u`` of iteration :math:`i - d`.  Edges with :math:`d = 0` are
dependencies inside one iteration; :math:`d \ge 1` are loop-carried ("delays").  A cycle whose
distances sum to zero would mean a task waits for itself and is rejected.

Training graph (one iteration = one mini-batch of B samples, T time steps), built by
:func:`graph_from_tasks` from the cost model's task list
(``spikepipe_jax.hardware.mapping.training_tasks``)::

    F_l -> F_{l+1}        spikes of layer l                       d = 0
    F_l -> B_l            membrane potentials of layer l (BPTT)    d = 0  (l = L-1: plus the loss)
    B_{l+1} -> B_l        gradient w.r.t. the spikes of layer l    d = 0
    B_l -> W_l            delta of layer l                         d = 0
    F_{l-1} -> W_l        input spikes of layer l (l >= 1)         d = 0
    W_l -> F_l, W_l -> B_l   updated weights                       d = d_l + 1
    W_l -> W_l            the weights are updated in sequence      d = 1

With ``split_backward=True``, ``B_l`` is split into its LIF-backward part ``BL_l`` (vector unit:
BPTT through the neuron state, producing delta_l) and its GEMM part ``BG_l`` (input gradient
:math:`W_l^\top\delta_l`, sent to layer l-1), LayerPipe's inter-layer split: ``BL_l -> BG_l``,
``BG_l -> BL_{l-1}``, ``BL_l -> W_l``, ``W_l -> BG_l``.  ``B_0`` has no GEMM, so no ``BG_0``.

**Delays and pipelining.** Without pipelining the update loop ``W_l -> F_l`` has distance 1: the
forward pass of iteration i uses the weights updated by iteration i-1.  A gradient delay
:math:`d_l` (the forward of iteration i uses weights that include the updates up to iteration
:math:`i - 1 - d_l` only) adds :math:`d_l` delays to that loop, distance :math:`d_l + 1`.  This is
the only step that changes the algorithm.  *Pipelining* is then a retiming (Leiserson & Saxe,
1991): :math:`d_r(u \to v) = d(u \to v) + r(v) - r(u)`, which moves delays onto the feed-forward
edges (pipeline registers between stages) and leaves the delay count of every loop unchanged;
:func:`retime` does it, and :func:`pipeline_retiming` gives LayerPipe2's retiming (Unnikrishnan &
Parhi, 2025) for a stage assignment.  A modulo schedule with iteration offsets (see
``validate.py``) is itself a retiming: a schedule of the retimed graph with offsets ``o`` is a
schedule of the original graph with offsets ``o + r``.  So the schedulers work on the graph with
the gradient delays on its update loops, and the offsets they choose are the pipelining.

JSON format (:func:`graph_to_json` / :func:`graph_from_json`)::

    {"tasks": [{"name", "duration", "bytes_out", "layer", "kind", ...}],
     "edges": [{"src", "dst", "distance", "bytes", ...}]}

``distance``, ``bytes``, ``bytes_out`` default to 0, ``layer`` to -1 (none), ``kind`` to "".

This module is pure Python (no JAX, no NumPy).
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any, Callable, Mapping, Sequence

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


def _is_int(x: Any) -> bool:
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
                if not _is_int(v) or v < 0:
                    raise ValueError(f"task {t.name!r}: {field} must be a non-negative integer, got {v!r}")
            if not _is_int(t.layer):
                raise ValueError(f"task {t.name!r}: layer must be an integer, got {t.layer!r}")
            index[t.name] = len(index)
        for e in self.edges:
            if not isinstance(e, Edge):
                raise ValueError(f"edges must be Edge objects, got {type(e).__name__}")
            for end in (e.src, e.dst):
                if end not in index:
                    raise ValueError(f"edge {e.src!r} -> {e.dst!r} names unknown task {end!r}")
            if not _is_int(e.distance) or e.distance < 0:
                raise ValueError(f"edge {e.src!r} -> {e.dst!r}: distance must be a non-negative integer, "
                                 f"got {e.distance!r}")
            if not _is_int(e.bytes) or e.bytes < 0:
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


def relax_longest(n: int, cons: Sequence[tuple[int, int, int]], max_passes: int | None = None
                  ) -> list[int] | None:
    """Longest-path potentials ``k`` (from 0) with ``k[v] >= k[u] + w`` for each ``(u, v, w)``.

    Bellman-Ford relaxation over nodes ``0..n-1``; returns None when it has not converged after
    ``min(n + 1, max_passes)`` passes, i.e. (without a pass limit) when there is a positive cycle.
    """
    k = [0] * n
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
    import heapq
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


# ---------------------------------------------------------------------------------------------
# JSON


def graph_to_json(g: TaskGraph) -> dict[str, Any]:
    """Plain-data form ``{"tasks": [...], "edges": [...]}`` (optional fields only when set)."""
    tasks = []
    for t in g.tasks:
        d: dict[str, Any] = {"name": t.name, "duration": t.duration, "bytes_out": t.bytes_out,
                             "layer": t.layer, "kind": t.kind}
        for f in ("bytes_in", "bytes_weights", "origin", "split_extent"):
            v = getattr(t, f)
            if v:
                d[f] = v
        tasks.append(d)
    edges = []
    for e in g.edges:
        d = {"src": e.src, "dst": e.dst, "distance": e.distance, "bytes": e.bytes}
        if e.tag:
            d["tag"] = e.tag
        edges.append(d)
    return {"tasks": tasks, "edges": edges}


def _json_int(obj: Mapping[str, Any], key: str, default: Any, where: str) -> int:
    v = obj.get(key, default)
    if v is None:
        v = default
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not _is_int(v):
        raise ValueError(f"{where}: {key} must be an integer, got {v!r}")
    return v


def graph_from_json(obj: Mapping[str, Any]) -> TaskGraph:
    """Builds a graph from the JSON form (see module docstring).

    Raises:
      ValueError: missing ``tasks``/``name``/``duration``, non-integer or negative numbers, unknown
        tasks in edges, zero-delay cycles.
    """
    if not isinstance(obj, Mapping) or "tasks" not in obj:
        raise ValueError("a task graph must be a JSON object with a 'tasks' list (and 'edges')")
    tasks = []
    for i, t in enumerate(obj["tasks"]):
        where = f"task #{i}"
        if not isinstance(t, Mapping) or "name" not in t:
            raise ValueError(f"{where}: needs a 'name'")
        where = f"task {t['name']!r}"
        if "duration" not in t:
            raise ValueError(f"{where}: needs a 'duration' (cycles)")
        tasks.append(Task(
            name=str(t["name"]), duration=_json_int(t, "duration", None, where),
            bytes_out=_json_int(t, "bytes_out", 0, where), layer=_json_int(t, "layer", -1, where),
            kind=str(t.get("kind") or ""), bytes_in=_json_int(t, "bytes_in", 0, where),
            bytes_weights=_json_int(t, "bytes_weights", 0, where), origin=str(t.get("origin") or ""),
            split_extent=_json_int(t, "split_extent", 0, where)))
    edges = []
    for i, e in enumerate(obj.get("edges") or []):
        where = f"edge #{i}"
        if not isinstance(e, Mapping) or "src" not in e or "dst" not in e:
            raise ValueError(f"{where}: needs 'src' and 'dst'")
        edges.append(Edge(src=str(e["src"]), dst=str(e["dst"]),
                          distance=_json_int(e, "distance", 0, where),
                          bytes=_json_int(e, "bytes", 0, where), tag=str(e.get("tag") or "")))
    return TaskGraph(tuple(tasks), tuple(edges))


# ---------------------------------------------------------------------------------------------
# Retiming


def retime(g: TaskGraph, r: Mapping[str, int]) -> TaskGraph:
    r"""Retimed graph: :math:`d_r(u \to v) = d(u \to v) + r(v) - r(u)` (Leiserson & Saxe, 1991).

    The delay count of every cycle is unchanged.  ``r`` may name whole tasks: a piece of a split
    task takes its origin's value.  Missing tasks get 0.

    Raises:
      ValueError: if an edge would get a negative distance (an illegal retiming).
    """
    def rv(name: str) -> int:
        if name in r:
            return int(r[name])
        return int(r.get(g.task(name).whole, 0))
    edges = []
    for e in g.edges:
        d = e.distance + rv(e.dst) - rv(e.src)
        if d < 0:
            raise ValueError(f"illegal retiming: edge {e.src} -> {e.dst} would get distance {d}")
        edges.append(dataclasses.replace(e, distance=d))
    return TaskGraph(g.tasks, tuple(edges))


def stage_map(num_layers: int, stages: Sequence[int] | None) -> list[int]:
    """Validated layer -> stage list (``None``: one stage per layer); stages contiguous from 0."""
    if not _is_int(num_layers) or num_layers <= 0:
        raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
    if stages is None:
        return list(range(num_layers))
    s = list(stages)
    if len(s) != num_layers:
        raise ValueError(f"stages must have one entry per layer ({num_layers}), got {len(s)}")
    if any(not _is_int(x) for x in s) or s[0] != 0 or any(b - a not in (0, 1) for a, b in zip(s, s[1:])):
        raise ValueError(f"stages must be non-decreasing integers from 0 in steps of 0 or 1, got {s}")
    return s


def layerpipe_delays(num_layers: int, stages: Sequence[int] | None = None) -> list[int]:
    r"""LayerPipe2's delays, :math:`d_l = 2\,S(l)` iterations, :math:`S(l)` = stages after l's."""
    s = stage_map(num_layers, stages)
    last = s[-1]
    return [2 * (last - x) for x in s]


def pipeline_retiming(g: TaskGraph, stages: Sequence[int] | None = None) -> dict[str, int]:
    r"""LayerPipe2 retiming of a training graph for a layer -> stage map (default: per layer).

    :math:`r(F_l) = \sigma(l)`, :math:`r(X_l) = 2(S-1) - \sigma(l)` for the backward tasks
    ``B/BL/BG/W``.  Applied to the graph with delays :func:`layerpipe_delays`, it puts one delay on
    every forward and backward edge that crosses a stage boundary, :math:`2(S-1-\sigma(l))` on the
    activation-stash edges ``F_l -> B_l`` and leaves one delay on each update loop.
    """
    num_layers = g.num_layers
    s = stage_map(num_layers, stages)
    last = s[-1]
    r = {}
    for t in g.tasks:
        if t.layer < 0 or t.kind not in TRAIN_KINDS:
            continue
        r[t.name] = s[t.layer] if t.kind == "F" else 2 * last - s[t.layer]
    return r


# ---------------------------------------------------------------------------------------------
# Training graphs from the cost model


def _piece_bounds(extent: int, pieces: int) -> list[tuple[int, int]]:
    """Balanced split of ``range(extent)`` into ``pieces`` intervals ``(lo, hi)``."""
    base, extra = divmod(extent, pieces)
    out, lo = [], 0
    for j in range(pieces):
        hi = lo + base + (1 if j < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


def _folds(n: int, cols: int, dataflow: str) -> int:
    """Column folds of an n-column GEMM output on an array with ``cols`` columns.

    For ``os`` and ``ws`` the output (resp. weight) columns map to array columns, so time grows
    with ``ceil(n / cols)``; for ``is`` the n dimension streams through the array, time ~ n.
    """
    if dataflow == "is" or cols <= 0:
        return n
    return -(-n // cols)


@dataclasses.dataclass(frozen=True)
class _Logical:
    """An edge of the unsplit training graph with the tensor axes it carries."""

    src: str
    dst: str
    distance: int
    nbytes: int
    tag: str
    axes: tuple[int, ...]  # layer channel axes of the tensor


def _check_tasks(tasks: Sequence[Mapping[str, Any]]) -> tuple[int, dict[tuple[str, int], Mapping]]:
    by: dict[tuple[str, int], Mapping[str, Any]] = {}
    for i, t in enumerate(tasks):
        if not isinstance(t, Mapping):
            raise ValueError(f"task #{i} must be a dict, got {type(t).__name__}")
        kind, layer = t.get("kind"), t.get("layer")
        if kind not in ("F", "B", "W") or not _is_int(layer) or layer < 0:
            raise ValueError(f"task #{i} ({t.get('name')!r}): kind must be F/B/W and layer a "
                             f"non-negative integer, got kind={kind!r} layer={layer!r}")
        if (kind, layer) in by:
            raise ValueError(f"duplicate task {kind}{layer}")
        for key in ("cycles", "bytes_out"):
            v = t.get(key, 0)
            if not _is_int(v) or v < 0:
                raise ValueError(f"task {t.get('name')!r}: {key} must be a non-negative integer, got {v!r}")
        by[(kind, layer)] = t
    num_layers = 1 + max((l for _, l in by), default=-1)
    for l in range(num_layers):
        for k in ("F", "B", "W"):
            if (k, l) not in by:
                raise ValueError(f"task list has no {k}{l} (need F, B, W for every layer 0..{num_layers - 1})")
    if num_layers == 0:
        raise ValueError("task list is empty")
    return num_layers, by


def graph_from_tasks(tasks: Sequence[Mapping[str, Any]], *, delays: Sequence[int] | None = None,
                     split_backward: bool = False, split: Mapping[str, int] | None = None,
                     float_bits: int = 32, spike_bits: int = 1, cols: int = 0,
                     dataflow: str = "ws", retiming: Mapping[str, int] | None = None,
                     gemm_cycles_fn: Callable[[int, int, int], int] | None = None) -> TaskGraph:
    r"""Training task graph from the cost model's task list.

    Args:
      tasks: ``training_tasks(...)`` output: dicts with ``name, layer, kind ("F"|"B"|"W"), cycles,
        gemm_cycles, vector_cycles, gemm ({"m","k","n"} or None), bytes_in, bytes_out,
        bytes_weights`` (missing numbers count as 0).
      delays: gradient delay :math:`d_l` per layer (default all 0): the update edges
        ``W_l -> F_l`` and ``W_l -> B_l`` get distance :math:`d_l + 1`.
      split_backward: split ``B_l`` into ``BL_l`` (LIF backward, ``vector_cycles``) and ``BG_l``
        (input-gradient GEMM, the rest of ``cycles``).
      split: ``{task name: pieces}``: split F, W, BL (and BG) tasks by output channels into that
        many pieces named ``"<name>.<j>"`` (see "Splitting" below).
      float_bits, spike_bits: bits of a float and of a spike, used only where the task bytes do
        not determine an edge's tensor (the last layer's spikes).
      cols, dataflow: array columns and dataflow, for the duration of GEMM pieces (see below).
      retiming: optional retiming applied at the end (see :func:`retime`).
      gemm_cycles_fn: ``(m, k, n) -> cycles`` of one GEMM on the array (e.g. the cost model's
        ``systolic.gemm_cost_exact``), used for the GEMM pieces of split tasks; None: the fold
        approximation below.

    Edge bytes, from the cost model's per-task bytes (``hardware/mapping.py``: ``F_l`` writes its
    spikes, membranes and pool masks; ``B_l`` reads the spike gradient and the saved state and
    writes delta_l and the input gradient; ``W_l`` reads the input spikes and delta_l):

    * spikes of layer l (``F_l -> F_{l+1}``, ``F_l -> W_{l+1}``): ``bytes_in(F_{l+1})``;
    * saved state (``F_l -> B_l``): ``bytes_out(F_l)`` minus the spikes;
    * delta_l (``B_l -> W_l``, ``BL_l -> BG_l``): ``bytes_in(W_l) - bytes_in(F_l)``;
    * input gradient (``B_l -> B_{l-1}``): ``bytes_out(B_l)`` minus delta_l;
    * updated weights (``W_l -> F_l``, ``W_l -> B_l``): ``bytes_weights`` of the consumer.

    The last layer's spikes (used only for the totals) are
    ``(bytes_in(B) - bytes_out(F)) * spike_bits / (float_bits - spike_bits)``, from
    ``bytes_out(F) = s + m + masks`` and ``bytes_in(B) = 2 m + masks`` with
    ``m = s * float_bits / spike_bits``.

    Splitting: a task cut into k pieces (SpikePipe's option for a GEMM longer than the period): pieces
    own a contiguous block of the output channels.  ``F_l``, ``BL_l`` and ``W_l`` split layer l's
    channels, ``BG_l`` splits layer l-1's (its output is the gradient of layer l-1).  A piece
    computes the GEMM ``(m, k, n_j)`` with ``n_j`` its share of the output columns n, costed by
    ``gemm_cycles_fn`` if given, else as the whole GEMM's ``gemm_cycles`` times its share of
    column folds (``ceil(n_j / cols)`` for os/ws, where n maps to the array columns; ``n_j / n``
    for is, where n streams); the vector part of ``cycles`` is shared linearly.  On os/ws arrays
    a GEMM with ``n <= cols`` therefore gains nothing from splitting.
    A piece receives, from each piece of a producer, the part of the tensor it needs: its own
    channels of a tensor split the same way, the whole producer piece's share otherwise (e.g.
    every ``F_l`` piece gets all input spikes), a 2-D block for the weights ``W_l -> BG_l``.

    Returns:
      the validated :class:`TaskGraph`.

    Raises:
      ValueError: missing F/B/W for a layer, bad numbers, delays of the wrong length or negative,
        a split of an unknown or unsplittable task or with pieces < 1.
    """
    num_layers, by = _check_tasks(tasks)
    if delays is None:
        delays = [0] * num_layers
    delays = list(delays)
    if len(delays) != num_layers or any(not _is_int(d) or d < 0 for d in delays):
        raise ValueError(f"delays must be {num_layers} non-negative integers, got {delays}")
    if dataflow not in ("os", "ws", "is"):
        raise ValueError(f"dataflow must be 'os', 'ws' or 'is', got {dataflow!r}")
    if not _is_int(float_bits) or float_bits <= 0 or not _is_int(spike_bits) or spike_bits <= 0:
        raise ValueError(f"float_bits and spike_bits must be positive integers, got {float_bits}, {spike_bits}")

    def num(t: Mapping[str, Any], key: str) -> int:
        v = t.get(key, 0) or 0
        if not _is_int(v) or v < 0:
            raise ValueError(f"task {t.get('name')!r}: {key} must be a non-negative integer, got {v!r}")
        return v

    def gemm_n(t: Mapping[str, Any]) -> int:
        g = t.get("gemm")
        return int(g["n"]) if g else 0

    extent = [max(1, gemm_n(by[("F", l)])) for l in range(num_layers)]  # channels of layer l
    fo = [num(by[("F", l)], "bytes_out") for l in range(num_layers)]
    fi = [num(by[("F", l)], "bytes_in") for l in range(num_layers)]
    spikes = [fi[l + 1] for l in range(num_layers - 1)]
    last_b_in = num(by[("B", num_layers - 1)], "bytes_in")
    if float_bits > spike_bits and last_b_in > fo[-1]:
        spikes.append((last_b_in - fo[-1]) * spike_bits // (float_bits - spike_bits))
    else:
        spikes.append(fo[-1] * spike_bits // (spike_bits + float_bits))
    saved = [max(0, fo[l] - spikes[l]) for l in range(num_layers)]
    delta = [max(0, num(by[("W", l)], "bytes_in") - fi[l]) for l in range(num_layers)]
    grad_in = [max(0, num(by[("B", l)], "bytes_out") - delta[l]) for l in range(num_layers)]
    wts_f = [num(by[("F", l)], "bytes_weights") for l in range(num_layers)]
    wts_b = [num(by[("B", l)], "bytes_weights") for l in range(num_layers)]

    # Whole tasks: name -> (Task fields, gemm cycles, gemm n, split axis layer or None).
    whole: dict[str, dict[str, Any]] = {}

    def add(name, kind, layer, dur, gemm_cycles, n_cols, axis, src):
        gm = src.get("gemm")
        whole[name] = dict(kind=kind, layer=layer, duration=dur, gemm_cycles=min(gemm_cycles, dur),
                           n=n_cols, axis=axis, mk=(int(gm["m"]), int(gm["k"])) if gm else None,
                           bytes_out=num(src, "bytes_out"),
                           bytes_in=num(src, "bytes_in"), bytes_weights=num(src, "bytes_weights"))

    bname: dict[int, tuple[str, str]] = {}  # layer -> (name receiving grad/membranes, name sending grad)
    for l in range(num_layers):
        f, b, w = by[("F", l)], by[("B", l)], by[("W", l)]
        add(f"F{l}", "F", l, num(f, "cycles"), num(f, "gemm_cycles"), gemm_n(f), l, f)
        add(f"W{l}", "W", l, num(w, "cycles"), num(w, "gemm_cycles"), gemm_n(w), l, w)
        if split_backward:
            vec = min(num(b, "vector_cycles"), num(b, "cycles"))
            gem = num(b, "cycles") - vec
            add(f"BL{l}", "BL", l, vec if (gem > 0 and l > 0) else num(b, "cycles"), 0, 0, l, b)
            whole[f"BL{l}"].update(bytes_out=delta[l], bytes_weights=0)
            if l > 0 and gem > 0:
                add(f"BG{l}", "BG", l, gem, gem, gemm_n(b), l - 1, b)
                whole[f"BG{l}"].update(bytes_in=delta[l], bytes_out=grad_in[l])
                bname[l] = (f"BL{l}", f"BG{l}")
            else:
                bname[l] = (f"BL{l}", "")
        else:
            add(f"B{l}", "B", l, num(b, "cycles"), num(b, "gemm_cycles"), gemm_n(b), None, b)
            bname[l] = (f"B{l}", f"B{l}" if l > 0 else "")

    logical: list[_Logical] = []
    for l in range(num_layers):
        recv, send = bname[l]
        dl = delays[l] + 1
        if l + 1 < num_layers:
            logical.append(_Logical(f"F{l}", f"F{l + 1}", 0, spikes[l], f"spikes{l}", (l,)))
            logical.append(_Logical(f"F{l}", f"W{l + 1}", 0, spikes[l], f"spikes{l}", (l,)))
            up_send = bname[l + 1][1]
            if up_send:
                logical.append(_Logical(up_send, recv, 0, grad_in[l + 1], f"grad{l}", (l,)))
        logical.append(_Logical(f"F{l}", recv, 0, saved[l], f"membranes{l}", (l,)))
        logical.append(_Logical(recv, f"W{l}", 0, delta[l], f"delta{l}", (l,)))
        if split_backward and send:
            logical.append(_Logical(recv, send, 0, delta[l], f"delta{l}", (l,)))
        logical.append(_Logical(f"W{l}", f"F{l}", dl, wts_f[l], f"weights{l}", (l - 1, l)))
        if send:
            logical.append(_Logical(f"W{l}", send, dl, wts_b[l], f"weights{l}", (l - 1, l)))
        logical.append(_Logical(f"W{l}", f"W{l}", 1, 0, "", ()))

    split = dict(split or {})
    for name, k in split.items():
        if name not in whole:
            raise ValueError(f"split names unknown task {name!r}; tasks are {sorted(whole)}")
        if not _is_int(k) or k < 1:
            raise ValueError(f"split of {name!r} must be a positive integer, got {k!r}")
        if k > 1 and whole[name]["axis"] is None:
            raise ValueError(f"task {name!r} cannot be split (an unsplit B task mixes two axes; "
                             "use split_backward=True)")

    # Pieces of every whole task: list of (piece name, lo, hi) over its axis extent.
    pieces: dict[str, list[tuple[str, int, int]]] = {}
    out_tasks: list[Task] = []
    for name, w in whole.items():
        k = split.get(name, 1)
        ext = extent[w["axis"]] if w["axis"] is not None and w["axis"] >= 0 else 1
        k = min(k, ext)
        if k <= 1:
            pieces[name] = [(name, 0, ext)]
            out_tasks.append(Task(name=name, duration=w["duration"], bytes_out=w["bytes_out"],
                                  layer=w["layer"], kind=w["kind"], bytes_in=w["bytes_in"],
                                  bytes_weights=w["bytes_weights"],
                                  split_extent=ext if w["axis"] is not None else 0))
            continue
        plist = []
        n_all = max(1, w["n"])
        folds_all = _folds(n_all, cols, dataflow)
        rest = w["duration"] - w["gemm_cycles"]
        for j, (lo, hi) in enumerate(_piece_bounds(ext, k)):
            share = (hi - lo) / ext
            n_j = max(1, round(n_all * share))
            if w["gemm_cycles"] == 0:
                gem = 0
            elif gemm_cycles_fn is not None and w["mk"] is not None:
                gem = int(gemm_cycles_fn(w["mk"][0], w["mk"][1], n_j))
            else:
                gem = -(-w["gemm_cycles"] * _folds(n_j, cols, dataflow) // folds_all)
            dur = min(w["duration"], gem + math.ceil(rest * share))
            pname = f"{name}.{j}"
            plist.append((pname, lo, hi))
            out_tasks.append(Task(name=pname, duration=dur, bytes_out=math.ceil(w["bytes_out"] * share),
                                  layer=w["layer"], kind=w["kind"],
                                  bytes_in=math.ceil(w["bytes_in"] * share),
                                  bytes_weights=math.ceil(w["bytes_weights"] * share), origin=name,
                                  split_extent=hi - lo))
        pieces[name] = plist

    out_edges: list[Edge] = []
    for e in logical:
        sp, dp = pieces[e.src], pieces[e.dst]
        s_axis, d_axis = whole[e.src]["axis"], whole[e.dst]["axis"]
        if e.src == e.dst:  # self loop: piece j -> piece j
            out_edges.extend(Edge(p, p, e.distance, 0, e.tag) for p, _, _ in sp)
            continue
        s_ext = extent[s_axis] if s_axis is not None and s_axis >= 0 else 1
        d_ext = extent[d_axis] if d_axis is not None and d_axis >= 0 else 1
        for pj, slo, shi in sp:
            a = (shi - slo) / s_ext
            for pk, dlo, dhi in dp:
                b = (dhi - dlo) / d_ext
                if len(sp) > 1 and len(dp) > 1 and s_axis == d_axis:
                    frac = max(0, min(shi, dhi) - max(slo, dlo)) / s_ext
                    if frac == 0:
                        continue
                elif len(dp) > 1 and d_axis in e.axes and d_axis != s_axis:
                    frac = a * b  # a block of a 2-D tensor (weights -> BG pieces)
                elif len(sp) == 1 and len(dp) > 1 and s_axis == d_axis:
                    frac = b
                else:
                    frac = a  # the consumer needs all of what this producer piece makes
                tag = e.tag
                if len(dp) > 1 and d_axis in e.axes and d_axis != s_axis and len(sp) > 0:
                    tag = f"{e.tag}>{pk}"  # distinct blocks: do not merge as one multicast
                out_edges.append(Edge(pj, pk, e.distance, math.ceil(e.nbytes * frac), tag))
    g = TaskGraph(tuple(out_tasks), tuple(out_edges))
    if retiming is not None:
        g = retime(g, retiming)
    return g


def with_update_distances(g: TaskGraph, delays: Sequence[int]) -> TaskGraph:
    """Same training graph with the update edges ``W_l -> {F_l, B_l, BG_l}`` at distance d_l + 1."""
    num_layers = g.num_layers
    delays = list(delays)
    if len(delays) != num_layers or any(not _is_int(d) or d < 0 for d in delays):
        raise ValueError(f"delays must be {num_layers} non-negative integers, got {delays}")
    edges = []
    for e in g.edges:
        s, d = g.task(e.src), g.task(e.dst)
        if s.kind == "W" and d.kind in ("F", "B", "BG") and s.layer == d.layer >= 0:
            e = dataclasses.replace(e, distance=delays[s.layer] + 1)
        edges.append(e)
    return TaskGraph(g.tasks, tuple(edges))


def is_training_graph(g: TaskGraph) -> bool:
    """True if every task is an F/B/W task with a layer and each layer has one of each."""
    seen = set()
    for t in g.tasks:
        if t.kind not in ("F", "B", "W") or t.layer < 0 or (t.kind, t.layer) in seen:
            return False
        seen.add((t.kind, t.layer))
    layers = {l for _, l in seen}
    return bool(layers) and all((k, l) in seen for l in layers for k in ("F", "B", "W")) and \
        layers == set(range(len(layers)))


def update_delays(g: TaskGraph) -> list[int]:
    """Gradient delays d_l = distance(W_l -> F_l) - 1 stored in a training graph."""
    out = [None] * g.num_layers
    for e in g.edges:
        s, d = g.task(e.src), g.task(e.dst)
        if s.kind == "W" and d.kind == "F" and s.layer == d.layer >= 0:
            v = e.distance - 1
            out[s.layer] = v if out[s.layer] is None else min(out[s.layer], v)
    return [0 if v is None else v for v in out]


# ---------------------------------------------------------------------------------------------
# Random graphs (tests and benchmarks)


def random_graph(seed: int, num_tasks: int, *, max_out_degree: int = 3, window: int = 20,
                 back_edges: int = 0, max_distance: int = 3,
                 duration_range: tuple[int, int] = (1, 100),
                 bytes_range: tuple[int, int] = (0, 0)) -> TaskGraph:
    """Random task graph: a random DAG of distance-0 edges plus loop-carried back edges.

    Tasks are ``t0 .. t{n-1}``; task i gets 0..``max_out_degree`` distance-0 successors among the
    next ``window`` tasks; ``back_edges`` edges go from a task to one with a lower or equal index
    with distance 1..``max_distance`` (loops).  Uses ``random.Random(seed)``.
    """
    if num_tasks <= 0:
        raise ValueError(f"num_tasks must be positive, got {num_tasks}")
    rng = random.Random(seed)
    lo, hi = duration_range
    blo, bhi = bytes_range
    tasks = tuple(Task(f"t{i}", rng.randint(lo, hi)) for i in range(num_tasks))
    edges = []
    for i in range(num_tasks - 1):
        cand = range(i + 1, min(num_tasks, i + 1 + window))
        for j in rng.sample(cand, min(len(cand), rng.randint(0, max_out_degree))):
            edges.append(Edge(f"t{i}", f"t{j}", 0, rng.randint(blo, bhi)))
    for _ in range(back_edges):
        i = rng.randrange(0, num_tasks)
        j = rng.randrange(max(0, i - window), i + 1)
        edges.append(Edge(f"t{i}", f"t{j}", rng.randint(1, max_distance), rng.randint(blo, bhi)))
    return TaskGraph(tasks, tuple(edges))


def toy_training_tasks(num_layers: int = 3, *, seed: int = 0, scale: int = 1000) -> list[dict[str, Any]]:
    """Hand-made task list in the cost model's format (for tests and docs; not a cost model).

    Layer l gets random GEMM sizes; cycles are ``m*k*n / scale`` plus a vector part.
    """
    rng = random.Random(seed)
    out_f, out_b, out_w = [], [], []
    for l in range(num_layers):
        m, k, n = rng.choice([64, 128, 256]), rng.choice([64, 256, 1024]), rng.choice([16, 64, 256])
        gem = max(1, m * k * n // scale)
        vec = max(1, m * n // 50)
        spikes = m * n // 8
        wbytes = k * n * 4
        out_f.append(dict(name=f"F{l}", layer=l, kind="F", cycles=gem + vec, gemm_cycles=gem,
                          vector_cycles=vec, macs=m * k * n, gemm=dict(m=m, k=k, n=n),
                          bytes_in=m * k // 8, bytes_out=spikes, bytes_weights=wbytes))
        bg = gem if l > 0 else 0
        out_b.append(dict(name=f"B{l}", layer=l, kind="B", cycles=bg + 2 * vec, gemm_cycles=bg,
                          vector_cycles=2 * vec, macs=m * k * n if l else 0,
                          gemm=dict(m=m, k=n, n=k) if l else None, bytes_in=m * n * 8,
                          bytes_out=m * k * 4 if l else 0, bytes_weights=wbytes if l else 0))
        out_w.append(dict(name=f"W{l}", layer=l, kind="W", cycles=gem + n, gemm_cycles=gem,
                          vector_cycles=n, macs=m * k * n, gemm=dict(m=k, k=m, n=n),
                          bytes_in=m * k // 8 + m * n * 4, bytes_out=wbytes, bytes_weights=wbytes))
    return out_f + out_b[::-1] + out_w


__all__ = [
    "Task", "Edge", "TaskGraph", "make_graph", "topological_order", "graph_to_json",
    "graph_from_json", "retime", "stage_map", "layerpipe_delays", "pipeline_retiming",
    "graph_from_tasks", "with_update_distances", "is_training_graph", "update_delays",
    "random_graph", "toy_training_tasks", "TRAIN_KINDS",
]

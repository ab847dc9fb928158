r"""The training task graph of one iteration, from the cost model's task list.

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

Gradient delays go on the update loops ``W_l -> F_l`` (``retiming.py``).  This module is pure
Python.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

from spikepipe_jax.schedule.graph import Edge, Task, TaskGraph, is_int
from spikepipe_jax.schedule.retiming import retime


def piece_bounds(extent: int, pieces: int) -> list[tuple[int, int]]:
    """Balanced split of ``range(extent)`` into ``pieces`` intervals ``(lo, hi)``."""
    base, extra = divmod(extent, pieces)
    out, lo = [], 0
    for j in range(pieces):
        hi = lo + base + (1 if j < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


def column_folds(n: int, cols: int, dataflow: str) -> int:
    """Column folds of an n-column GEMM output on an array with ``cols`` columns.

    For ``os`` and ``ws`` the output (resp. weight) columns map to array columns, so time grows
    with ``ceil(n / cols)``; for ``is`` the n dimension streams through the array, time ~ n.
    """
    if dataflow == "is" or cols <= 0:
        return n
    return -(-n // cols)


BATCH = "batch"  # the batch axis of activation tensors (a split axis like a layer's channels)


@dataclasses.dataclass(frozen=True)
class _Logical:
    """An edge of the unsplit training graph with the tensor axes it carries."""

    src: str
    dst: str
    distance: int
    nbytes: int
    tag: str
    axes: tuple[int | str, ...]  # layer channel axes of the tensor, and BATCH if it has one


def _check_tasks(tasks: Sequence[Mapping[str, Any]]) -> tuple[int, dict[tuple[str, int], Mapping]]:
    by: dict[tuple[str, int], Mapping[str, Any]] = {}
    for i, t in enumerate(tasks):
        if not isinstance(t, Mapping):
            raise ValueError(f"task #{i} must be a dict, got {type(t).__name__}")
        kind, layer = t.get("kind"), t.get("layer")
        if kind not in ("F", "B", "W") or not is_int(layer) or layer < 0:
            raise ValueError(f"task #{i} ({t.get('name')!r}): kind must be F/B/W and layer a "
                             f"non-negative integer, got kind={kind!r} layer={layer!r}")
        if (kind, layer) in by:
            raise ValueError(f"duplicate task {kind}{layer}")
        for key in ("cycles", "bytes_out"):
            v = t.get(key, 0)
            if not is_int(v) or v < 0:
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
                     gemm_cycles_fn: Callable[[int, int, int], int] | None = None,
                     batch: int | None = None, vector_lanes: int = 0) -> TaskGraph:
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
        many pieces named ``"<name>.<j>"``; ``{task name: (pieces, "batch")}``: split any task by
        samples of the batch instead; ``(pieces, "reduction")``: split an F or BG GEMM by its
        reduction dimension (see "Splitting" below).
      float_bits, spike_bits: bits of a float and of a spike, used only where the task bytes do
        not determine an edge's tensor (the last layer's spikes).
      cols, dataflow: array columns and dataflow, for the duration of GEMM pieces (see below).
      retiming: optional retiming applied at the end (see :func:`retime`).
      gemm_cycles_fn: ``(m, k, n) -> cycles`` of one GEMM on the array (e.g. the cost model's
        ``systolic.gemm_cost_exact``), used for the GEMM pieces of split tasks; None: the fold
        approximation below.
      batch: samples per iteration B, the extent of batch splits; None: the tasks' ``batch``
        (``training_tasks`` records it), else 0 (no batch splits).
      vector_lanes: lanes of the vector unit that sums partial weight gradients (0: ``cols``;
        both 0: one lane).

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

    Batch splits (data parallelism inside a task): piece j owns a contiguous block of the B
    samples.  Every activation tensor (spikes, membranes, delta, input gradient) has a batch
    axis, the weights have none, so a batch piece receives its samples' block of each
    activation (all of a tensor split the same way stays on matching pieces) and the whole
    weights (one multicast per processor).  For ``F``, ``B``, ``BL`` and ``BG`` the samples are
    GEMM rows: a piece is the GEMM ``(m_j, k, n)`` with ``m_j`` its share of m (``gemm_cycles_fn``,
    else ``gemm_cycles`` times the share) plus its share of the vector work.  For ``W_l`` the
    samples are the GEMM's *reduction* dimension (``dW = X^T dY`` sums over batch, time and
    pixels): piece j computes the partial gradient ``(m, k_j, n)`` over its samples, all ``K_l x
    F_l`` of it, and a task ``W_l.sum`` adds the pieces' partial gradients (``pieces - 1``
    elementwise passes over ``bytes_out(W_l)`` floats on the vector unit) and is where the
    weights come from: each piece sends it ``bytes_out(W_l)`` (tag ``wgrad<l>``: extra float
    traffic an output-column split does not have), and ``W_l.sum`` carries the update edges
    (``W_l -> F_l``, ``W_l -> B_l``, the self loop).

    Reduction splits (``F_l`` and ``BG_l``, l >= 1): piece j owns a block of the channels the
    GEMM reduces over (``F_l``: layer l-1's, its input channels; ``BG_l``: layer l's, the
    channels of delta_l), computes the GEMM ``(m, k_j, n)`` over them (``gemm_cycles_fn``, else
    ``gemm_cycles`` times its share) and receives only its block of the input and of the weights.
    Its output is a partial sum of the whole ``m x n`` GEMM output in floats; each piece sends it
    to a task ``<name>.sum`` (tag ``psum<l>``), which adds them (``pieces - 1`` passes over
    ``m n`` elements on the vector unit) and then does the task's vector work (``F_l``: pooling
    and the LIF).  The sum task sends the task's outputs.

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
    if len(delays) != num_layers or any(not is_int(d) or d < 0 for d in delays):
        raise ValueError(f"delays must be {num_layers} non-negative integers, got {delays}")
    if dataflow not in ("os", "ws", "is"):
        raise ValueError(f"dataflow must be 'os', 'ws' or 'is', got {dataflow!r}")
    if not is_int(float_bits) or float_bits <= 0 or not is_int(spike_bits) or spike_bits <= 0:
        raise ValueError(f"float_bits and spike_bits must be positive integers, got {float_bits}, {spike_bits}")

    def num(t: Mapping[str, Any], key: str) -> int:
        v = t.get(key, 0) or 0
        if not is_int(v) or v < 0:
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
            logical.append(_Logical(f"F{l}", f"F{l + 1}", 0, spikes[l], f"spikes{l}", (l, BATCH)))
            logical.append(_Logical(f"F{l}", f"W{l + 1}", 0, spikes[l], f"spikes{l}", (l, BATCH)))
            up_send = bname[l + 1][1]
            if up_send:
                logical.append(_Logical(up_send, recv, 0, grad_in[l + 1], f"grad{l}", (l, BATCH)))
        logical.append(_Logical(f"F{l}", recv, 0, saved[l], f"membranes{l}", (l, BATCH)))
        logical.append(_Logical(recv, f"W{l}", 0, delta[l], f"delta{l}", (l, BATCH)))
        if split_backward and send:
            logical.append(_Logical(recv, send, 0, delta[l], f"delta{l}", (l, BATCH)))
        logical.append(_Logical(f"W{l}", f"F{l}", dl, wts_f[l], f"weights{l}", (l - 1, l)))
        if send:
            logical.append(_Logical(f"W{l}", send, dl, wts_b[l], f"weights{l}", (l - 1, l)))
        logical.append(_Logical(f"W{l}", f"W{l}", 1, 0, "", ()))

    if batch is None:
        batch = by[("F", 0)].get("batch", 0) or 0
    if not is_int(batch) or batch < 0:
        raise ValueError(f"batch must be a non-negative integer, got {batch!r}")
    if not is_int(vector_lanes) or vector_lanes < 0:
        raise ValueError(f"vector_lanes must be a non-negative integer, got {vector_lanes!r}")
    split = dict(split or {})
    by_batch: set[str] = set()
    by_reduction: dict[str, int] = {}  # task -> the channel axis its GEMM reduces over
    for name, k in list(split.items()):
        if name not in whole:
            raise ValueError(f"split names unknown task {name!r}; tasks are {sorted(whole)}")
        if isinstance(k, (tuple, list)):
            if len(k) != 2 or k[1] not in ("columns", "batch", "reduction"):
                raise ValueError(f"split of {name!r} must be pieces or (pieces, 'columns'|'batch'|"
                                 f"'reduction'), got {k!r}")
            k, mode = k
        else:
            mode = "columns"
        if not is_int(k) or k < 1:
            raise ValueError(f"split of {name!r} must be a positive integer, got {k!r}")
        split[name] = k
        if mode == "batch":
            if k > 1 and batch < 2:
                raise ValueError(f"batch split of {name!r} needs batch >= 2 samples, got batch={batch}")
            by_batch.add(name)
        elif mode == "reduction":
            kind, layer = whole[name]["kind"], whole[name]["layer"]
            if kind not in ("F", "BG") or layer == 0:
                raise ValueError(f"reduction split of {name!r}: only F and BG of layers >= 1 (their GEMMs "
                                 "reduce over a layer's channels; W's reduction dimension is the batch)")
            by_reduction[name] = layer - 1 if kind == "F" else layer
        elif k > 1 and whole[name]["axis"] is None:
            raise ValueError(f"task {name!r} cannot be split (an unsplit B task mixes two axes; "
                             "use split_backward=True)")

    def axis_of(name: str) -> int | str | None:
        if name in by_batch:
            return BATCH
        return by_reduction.get(name, whole[name]["axis"])

    def extent_of(axis: int | str | None) -> int:
        if axis == BATCH:
            return batch
        return extent[axis] if axis is not None and axis >= 0 else 1

    lanes = vector_lanes or cols or 1
    # Pieces of every whole task: list of (piece name, lo, hi) over its axis extent; the pieces
    # sending its outputs (a batch-split W: its sum task, on no axis).
    pieces: dict[str, list[tuple[str, int, int]]] = {}
    senders: dict[str, list[tuple[str, int, int]]] = {}
    sum_edges: list[Edge] = []
    out_tasks: list[Task] = []
    for name, w in whole.items():
        k = split.get(name, 1)
        ax = axis_of(name)
        ext = extent_of(ax)
        k = min(k, ext)
        if k <= 1:
            pieces[name] = senders[name] = [(name, 0, ext)]
            out_tasks.append(Task(name=name, duration=w["duration"], bytes_out=w["bytes_out"],
                                  layer=w["layer"], kind=w["kind"], bytes_in=w["bytes_in"],
                                  bytes_weights=w["bytes_weights"],
                                  split_extent=extent_of(w["axis"]) if w["axis"] is not None else 0))
            continue
        plist = []
        n_all = max(1, w["n"])
        folds_all = column_folds(n_all, cols, dataflow)
        rest = w["duration"] - w["gemm_cycles"]
        wgrad = ax == BATCH and w["kind"] == "W"  # samples are W's reduction dimension
        red = name in by_reduction
        psum = 0  # bytes of one piece's partial GEMM output (reduction splits)
        if red:
            psum = math.ceil(w["mk"][0] * n_all * float_bits / 8) if w["mk"] else 0
        for j, (lo, hi) in enumerate(piece_bounds(ext, k)):
            share = (hi - lo) / ext
            if w["gemm_cycles"] == 0:
                gem = 0
            elif red:
                if gemm_cycles_fn is not None and w["mk"] is not None:
                    gem = int(gemm_cycles_fn(w["mk"][0], max(1, round(w["mk"][1] * share)), n_all))
                else:
                    gem = math.ceil(w["gemm_cycles"] * share)
            elif ax == BATCH:
                if gemm_cycles_fn is not None and w["mk"] is not None:
                    m, kk = w["mk"]
                    shape = (m, max(1, round(kk * share)), n_all) if wgrad else (max(1, round(m * share)), kk, n_all)
                    gem = int(gemm_cycles_fn(*shape))
                else:
                    gem = math.ceil(w["gemm_cycles"] * share)
            elif gemm_cycles_fn is not None and w["mk"] is not None:
                gem = int(gemm_cycles_fn(w["mk"][0], w["mk"][1], max(1, round(n_all * share))))
            else:
                n_j = max(1, round(n_all * share))
                gem = -(-w["gemm_cycles"] * column_folds(n_j, cols, dataflow) // folds_all)
            dur = min(w["duration"], gem + (0 if red else math.ceil(rest * share)))
            pname = f"{name}.{j}"
            plist.append((pname, lo, hi))
            out_tasks.append(Task(name=pname, duration=dur,
                                  bytes_out=psum if red else w["bytes_out"] if wgrad else
                                  math.ceil(w["bytes_out"] * share),
                                  layer=w["layer"], kind=w["kind"],
                                  bytes_in=math.ceil(w["bytes_in"] * share),
                                  bytes_weights=w["bytes_weights"] if ax == BATCH else
                                  math.ceil(w["bytes_weights"] * share), origin=name,
                                  split_extent=0 if ax == BATCH else hi - lo))
        pieces[name] = senders[name] = plist
        if wgrad:
            sname = f"{name}.sum"
            elems = math.ceil(w["bytes_out"] * 8 / float_bits)
            out_tasks.append(Task(name=sname, duration=(k - 1) * -(-elems // lanes), bytes_out=w["bytes_out"],
                                  layer=w["layer"], kind=w["kind"], bytes_in=k * w["bytes_out"],
                                  origin=name))
            senders[name] = [(sname, 0, 1)]
            sum_edges.extend(Edge(p, sname, 0, w["bytes_out"], f"wgrad{w['layer']}>{p}") for p, _, _ in plist)
        if red:  # the partial sums are added, then the vector part (F: pooling, LIF) runs once
            sname = f"{name}.sum"
            elems = w["mk"][0] * n_all if w["mk"] else 0
            out_tasks.append(Task(name=sname, duration=(k - 1) * -(-elems // lanes) + rest,
                                  bytes_out=w["bytes_out"], layer=w["layer"], kind=w["kind"],
                                  bytes_in=k * psum, origin=name))
            senders[name] = [(sname, 0, 1)]
            sum_edges.extend(Edge(p, sname, 0, psum, f"psum{w['layer']}>{p}") for p, _, _ in plist)

    out_edges: list[Edge] = sum_edges
    for e in logical:
        sp, dp = senders[e.src], pieces[e.dst]
        s_axis = None if sp is not pieces[e.src] else axis_of(e.src)
        d_axis = axis_of(e.dst)
        if e.src == e.dst:  # self loop: piece j -> piece j
            out_edges.extend(Edge(p, p, e.distance, 0, e.tag) for p, _, _ in sp)
            continue
        s_ext, d_ext = extent_of(s_axis), extent_of(d_axis)
        for pj, slo, shi in sp:
            a = (shi - slo) / s_ext
            for pk, dlo, dhi in dp:
                b = (dhi - dlo) / d_ext
                if len(sp) > 1 and len(dp) > 1 and s_axis == d_axis:
                    frac = max(0, min(shi, dhi) - max(slo, dlo)) / s_ext
                    if frac == 0:
                        continue
                elif len(dp) > 1 and d_axis in e.axes and d_axis != s_axis:
                    frac = a * b  # a block of a 2-D tensor (weights -> BG pieces, a batch block)
                elif len(sp) == 1 and len(dp) > 1 and s_axis == d_axis:
                    frac = b
                else:
                    frac = a  # the consumer needs all of what this producer piece makes
                tag = e.tag
                if len(dp) > 1 and ((d_axis in e.axes and d_axis != s_axis)
                                    or (e.dst in by_reduction and len(sp) == 1)):
                    tag = f"{e.tag}>{pk}"  # distinct blocks: do not merge as one multicast
                out_edges.append(Edge(pj, pk, e.distance, math.ceil(e.nbytes * frac), tag))
    g = TaskGraph(tuple(out_tasks), tuple(out_edges))
    if retiming is not None:
        g = retime(g, retiming)
    return g


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


__all__ = ["BATCH", "graph_from_tasks", "is_training_graph", "piece_bounds", "column_folds"]

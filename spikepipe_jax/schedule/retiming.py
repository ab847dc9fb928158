r"""Gradient delays on the update loops and retiming (pipelining) of task graphs.

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
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from spikepipe_jax.schedule.graph import TRAIN_KINDS, TaskGraph, is_int


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
    if not is_int(num_layers) or num_layers <= 0:
        raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
    if stages is None:
        return list(range(num_layers))
    s = list(stages)
    if len(s) != num_layers:
        raise ValueError(f"stages must have one entry per layer ({num_layers}), got {len(s)}")
    if any(not is_int(x) for x in s) or s[0] != 0 or any(b - a not in (0, 1) for a, b in zip(s, s[1:])):
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


def with_update_distances(g: TaskGraph, delays: Sequence[int]) -> TaskGraph:
    """Same training graph with the update edges ``W_l -> {F_l, B_l, BG_l}`` at distance d_l + 1."""
    num_layers = g.num_layers
    delays = list(delays)
    if len(delays) != num_layers or any(not is_int(d) or d < 0 for d in delays):
        raise ValueError(f"delays must be {num_layers} non-negative integers, got {delays}")
    edges = []
    for e in g.edges:
        s, d = g.task(e.src), g.task(e.dst)
        if s.kind == "W" and d.kind in ("F", "B", "BG") and s.layer == d.layer >= 0:
            e = dataclasses.replace(e, distance=delays[s.layer] + 1)
        edges.append(e)
    return TaskGraph(g.tasks, tuple(edges))


def update_delays(g: TaskGraph) -> list[int]:
    """Gradient delays d_l = distance(W_l -> F_l) - 1 stored in a training graph."""
    out = [None] * g.num_layers
    for e in g.edges:
        s, d = g.task(e.src), g.task(e.dst)
        if s.kind == "W" and d.kind == "F" and s.layer == d.layer >= 0:
            v = e.distance - 1
            out[s.layer] = v if out[s.layer] is None else min(out[s.layer], v)
    return [0 if v is None else v for v in out]


__all__ = ["retime", "stage_map", "layerpipe_delays", "pipeline_retiming", "with_update_distances",
           "update_delays"]

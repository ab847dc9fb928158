r"""Contiguous layer partitions into pipeline stages (shared by the baselines and the SpikePipe
policies).

:func:`partition_min_max` minimises the largest stage sum; :func:`pipedream_partition` is
PipeDream's dynamic program without replication,
:math:`A(j, s) = \min_{i<j} \max(A(i, s-1),\, C_i,\, T_{i+1..j})` with :math:`T` the stage's compute
time and :math:`C_i` the time to send the activations forward and the gradients back across the
boundary after layer i, over S <= min(P, L) stages.
"""

from __future__ import annotations

from typing import Sequence

from spikepipe_jax.schedule.bounds import check_processors
from spikepipe_jax.schedule.comm import CommModel
from spikepipe_jax.schedule.graph import TaskGraph
from spikepipe_jax.schedule.training_graph import is_training_graph


def require_training_graph(g: TaskGraph, processors: int) -> int:
    """L for a training graph with one F, B and W task per layer; ValueError otherwise."""
    check_processors(processors)
    if not is_training_graph(g):
        raise ValueError("standard pipelining baselines need a training graph with one F, B and W "
                         "task per layer (kinds F/B/W, layers 0..L-1)")
    return g.num_layers


def layer_costs(g: TaskGraph) -> list[int]:
    """Sum of the task durations of each layer."""
    cost = [0] * g.num_layers
    for t in g.tasks:
        cost[t.layer] += t.duration
    return cost


def partition_min_max(costs: Sequence[int], stages: int) -> list[int]:
    """Contiguous partition of layers into exactly ``stages`` stages minimising the largest
    stage sum (dynamic programming, O(S L^2)); returns the stage of each layer."""
    return partition_contiguous(costs, [0] * len(costs), stages)


def partition_contiguous(costs: Sequence[int], boundary: Sequence[int], stages: int) -> list[int]:
    """Contiguous partition into exactly ``stages`` stages minimising max(stage sum, cut cost),
    ``boundary[i]`` the cost of a cut after layer i; the stage of each layer."""
    n = len(costs)
    if not 1 <= stages <= n:
        raise ValueError(f"stages must be in [1, {n}], got {stages}")
    pre = [0]
    for c in costs:
        pre.append(pre[-1] + c)
    inf = float("inf")
    # a[s][j]: best bottleneck for layers [0, j) in s stages; cut[s][j]: start of the last stage
    a = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    a[0][0] = 0
    for s in range(1, stages + 1):
        for j in range(s, n + 1):
            for i in range(s - 1, j):
                if a[s - 1][i] == inf:
                    continue
                val = max(a[s - 1][i], pre[j] - pre[i], boundary[i - 1] if i > 0 else 0)
                if val < a[s][j]:
                    a[s][j], cut[s][j] = val, i
    out = [0] * n
    j = n
    for s in range(stages, 0, -1):
        i = cut[s][j]
        for l in range(i, j):
            out[l] = s - 1
        j = i
    return out


def pipedream_partition(g: TaskGraph, processors: int, comm: CommModel = CommModel()) -> list[int]:
    """PipeDream's partition (no replication) over S <= min(P, L) stages; stage per layer.

    ``g``: a training graph (F/B/W per layer), or one with B split into BL/BG (the input
    gradient then crosses a boundary as BG_{l+1} -> BL_l)."""
    check_processors(processors)
    if not g.tasks or any(t.layer < 0 for t in g.tasks) or not is_training_graph(g) and \
            not {t.kind for t in g.tasks} <= {"F", "BL", "BG", "W"}:
        require_training_graph(g, processors)  # raises with the usual message
    num_layers = g.num_layers
    costs = layer_costs(g)
    boundary = [0] * num_layers  # comm time across the boundary after layer l
    for e in g.edges:
        s, d = g.task(e.src), g.task(e.dst)
        if (s.kind, d.kind) == ("F", "F") and d.layer == s.layer + 1:
            boundary[s.layer] += comm.transfer_cycles(e.bytes)
        elif (s.kind, d.kind) in (("B", "B"), ("BG", "BL")) and d.layer == s.layer - 1:
            boundary[d.layer] += comm.transfer_cycles(e.bytes)
    best = None
    for stages in range(1, min(processors, num_layers) + 1):
        part = partition_contiguous(costs, boundary, stages)
        loads = [0] * stages
        for l, st in enumerate(part):
            loads[st] += costs[l]
        bott = max(max(loads), max((boundary[l] for l in range(num_layers - 1)
                                    if part[l] != part[l + 1]), default=0))
        if best is None or bott < best[0]:
            best = (bott, part)
    return best[1]


__all__ = ["require_training_graph", "layer_costs", "partition_min_max", "partition_contiguous",
           "pipedream_partition"]

r"""Contiguous layer partitions into pipeline stages (shared by the baselines and the SpikePipe
policies).

:func:`partition_min_max` minimises the largest stage sum; :func:`pipedream_partition` is
PipeDream's dynamic program without replication,
:math:`A(j, s) = \min_{i<j} \max(A(i, s-1),\, C_i,\, T_{i+1..j})` with :math:`T` the stage's compute
time and :math:`C_i` the time to send the activations forward and the gradients back across the
boundary after layer i, over S <= min(P, L) stages.
"""

from __future__ import annotations

import math
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


def partition_contiguous(costs: Sequence[float], boundary: Sequence[float], stages: int) -> list[int]:
    """Contiguous partition into exactly ``stages`` non-empty stages minimising
    max(largest stage sum, largest cut cost), ``boundary[i]`` the cost of a cut after layer i;
    the stage of each layer. The project's one partitioner: the baselines and SpikePipe
    policies here, and the pipeline executor's stages (:func:`spikepipe_jax.train.stages.partition_layers`).

    Exact: ``best[s][i]``, the best bottleneck of layers ``[i, L)`` in ``s`` stages, is
    ``min_j max(cost[i, j), cut(j), best[s-1][j])`` over the first stage's end ``j`` (O(S L^2)
    over a table of range costs). Range costs are ``math.fsum`` sums, exactly rounded, so
    partitions are compared on the same values whatever the order of addition. Among optimal
    partitions the one with the lexicographically smallest stage lengths is returned (each stage,
    from the first, as short as the optimum allows): deterministic, and in a 1F1B pipeline the
    early stages, which hold the most mini-batches in flight, get the fewer layers.
    """
    n = len(costs)
    if not 1 <= stages <= n:
        raise ValueError(f"stages must be in [1, {n}], got {stages}")
    range_cost = [[0.0] * (n + 1) for _ in range(n + 1)]  # fsum(costs[i:j]) for i < j
    for i in range(n):
        for j in range(i + 1, n + 1):
            range_cost[i][j] = math.fsum(costs[i:j])

    def cut(j):  # the cut between layers j - 1 and j (none at the end)
        return boundary[j - 1] if j < n else 0

    inf = math.inf
    best = [[inf] * (n + 1) for _ in range(stages + 1)]  # layers [i, n) in s stages
    best[0][n] = 0.0
    for st in range(1, stages + 1):
        for i in range(n - st, -1, -1):
            best[st][i] = min(max(range_cost[i][j], cut(j), best[st - 1][j]) for j in range(i + 1, n - st + 2))
    optimum = best[stages][0]
    out, i = [0] * n, 0
    for st in range(stages, 0, -1):  # the shortest first stage that keeps the optimum
        j = next(j for j in range(i + 1, n - st + 2)
                 if max(range_cost[i][j], cut(j), best[st - 1][j]) <= optimum)
        for l in range(i, j):
            out[l] = stages - st
        i = j
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

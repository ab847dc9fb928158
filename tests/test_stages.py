"""train/stages.py: the layer-to-stage partitioner against brute force over every partition."""
import itertools
import math

import numpy as np
import pytest

from spikepipe_jax.schedule.baselines import partition_min_max
from spikepipe_jax.train.stages import partition_layers, stage_costs


def _brute_force(costs, num_stages):
    """Every way to cut L layers into S non-empty contiguous stages; the smallest
    (largest stage cost, stage lengths) wins."""
    n = len(costs)
    best = None
    for cuts in itertools.combinations(range(1, n), num_stages - 1):
        bounds = (0,) + cuts + (n,)
        ranges = list(zip(bounds[:-1], bounds[1:]))
        key = (max(math.fsum(costs[a:b]) for a, b in ranges), tuple(b - a for a, b in ranges))
        if best is None or key < best[0]:
            best = (key, ranges)
    return best[1]


def _cases():
    rng = np.random.default_rng(15)
    for trial in range(300):
        n = int(rng.integers(1, 9))
        s = int(rng.integers(1, n + 1))
        kind = trial % 3
        if kind == 0:  # small ints: many ties
            costs = [int(c) for c in rng.integers(0, 4, n)]
        elif kind == 1:  # floats that do not add exactly
            costs = [float(c) for c in rng.uniform(0.0, 1.0, n).round(3)]
        else:  # one dominant layer
            costs = [float(c) for c in rng.exponential(1.0, n) ** 3]
        yield costs, s


CASES = list(_cases())


@pytest.mark.parametrize("costs,num_stages", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_matches_brute_force(costs, num_stages):
    got = partition_layers(costs, num_stages)
    want = _brute_force(costs, num_stages)
    assert max(stage_costs(costs, got)) == max(stage_costs(costs, want))
    assert got == want  # same tie-break: the lexicographically smallest stage lengths


def test_stages_are_contiguous_non_empty_and_cover_all_layers():
    costs = [5, 1, 1, 1, 1, 1, 5, 2, 2]
    for s in range(1, len(costs) + 1):
        stages = partition_layers(costs, s)
        assert len(stages) == s and stages[0][0] == 0 and stages[-1][1] == len(costs)
        assert all(a < b for a, b in stages)
        assert all(stages[k][1] == stages[k + 1][0] for k in range(s - 1))


def test_examples_by_hand():
    assert partition_layers([1, 2, 3, 4], 1) == [(0, 4)]
    assert partition_layers([1, 2, 3, 4], 4) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert partition_layers([1, 2, 3, 4], 2) == [(0, 3), (3, 4)]        # 6 | 4
    assert partition_layers([4, 3, 2, 1], 2) == [(0, 1), (1, 4)]        # 4 | 6
    assert partition_layers([10, 1, 1, 1, 1], 3) == [(0, 1), (1, 2), (2, 5)]  # 10 | 1 | 3: earliest short
    assert partition_layers([0, 0, 0], 2) == [(0, 1), (1, 3)]


def test_same_bottleneck_as_the_schedulers_partition():
    """schedule.baselines.partition_min_max (integer cycles) is an independent implementation."""
    rng = np.random.default_rng(7)
    for _ in range(50):
        n = int(rng.integers(1, 12))
        s = int(rng.integers(1, n + 1))
        costs = [int(c) for c in rng.integers(0, 1000, n)]
        theirs = partition_min_max(costs, s)
        their_loads = [sum(c for c, st in zip(costs, theirs) if st == k) for k in range(s)]
        assert max(stage_costs(costs, partition_layers(costs, s))) == max(their_loads)


def test_accepts_numpy_costs():
    costs = np.array([3.0, 1.0, 2.0, 2.0])
    assert partition_layers(costs, 2) == partition_layers([3.0, 1.0, 2.0, 2.0], 2) == [(0, 2), (2, 4)]
    assert partition_layers([np.int64(1), np.int64(1)], np.int64(2)) == [(0, 1), (1, 2)]


@pytest.mark.parametrize("costs,num_stages,match", [
    ([1, 2, 3], 4, "num_stages=4 exceeds the 3 layers"),
    ([1, 2, 3], 0, "num_stages must be >= 1, got 0"),
    ([1, 2, 3], -2, "num_stages must be >= 1, got -2"),
    ([1, 2, 3], 2.0, "num_stages must be an integer, got 2.0"),
    ([1, 2, 3], True, "num_stages must be an integer, got True"),
    ([], 1, "costs is empty"),
    ([1, -1, 2], 1, "cost of layer 1 must be a finite number >= 0, got -1"),
    ([1, float("nan")], 1, "cost of layer 1 must be a finite number >= 0, got nan"),
    ([1, float("inf")], 1, "cost of layer 1 .* got inf"),
    ([1, "2"], 1, "cost of layer 1 .* got '2'"),
    ([False, 1], 1, "cost of layer 0 .* got False"),
    ("123", 1, "costs must be a sequence"),
    (5, 1, "costs must be a sequence"),
])
def test_bad_input_names_the_value(costs, num_stages, match):
    with pytest.raises(ValueError, match=match):
        partition_layers(costs, num_stages)


@pytest.mark.parametrize("trial", range(60))
def test_cut_costs_partition_matches_brute_force(trial):
    """The one partitioner with PipeDream's cut costs (``schedule.partition.partition_contiguous``):
    the bottleneck is max(stage sum, cost of each cut made); same tie-break as without."""
    from spikepipe_jax.schedule.partition import partition_contiguous

    rng = np.random.default_rng(100 + trial)
    n = int(rng.integers(1, 8))
    s = int(rng.integers(1, n + 1))
    costs = [int(c) for c in rng.integers(0, 5, n)]
    boundary = [int(c) for c in rng.integers(0, 7, n)]
    best = None
    for cuts in itertools.combinations(range(1, n), s - 1):
        bounds = (0,) + cuts + (n,)
        ranges = list(zip(bounds[:-1], bounds[1:]))
        bott = max([math.fsum(costs[a:b]) for a, b in ranges] + [boundary[c - 1] for c in cuts])
        key = (bott, tuple(b - a for a, b in ranges))
        if best is None or key < best[0]:
            best = (key, ranges)
    want = [k for k, (a, b) in enumerate(best[1]) for _ in range(a, b)]
    assert partition_contiguous(costs, boundary, s) == want
    assert partition_layers(costs, s) == _brute_force(costs, s)  # the executor's stages: no cut costs

"""Exact minimum period on small graphs, checked against brute force through the validator."""

import itertools
import random
import statistics

import pytest

from spikepipe_jax.schedule import (Placement, SearchLimit, exact_schedule, lower_bound,
                                    modulo_schedule, schedule_violations, validate)
import spikepipe_jax.schedule as G


def brute_min_period(g, procs, max_offset=2):
    """Smallest II for which some (processor, start, offset) per task passes the validator."""
    names = g.names
    ii = lower_bound(g, procs)
    while True:
        choices = [(p, s, o) for p in range(procs) for s in range(ii) for o in range(max_offset + 1)]
        for combo in itertools.product(choices, repeat=len(names)):
            pls = [Placement(n, *c) for n, c in zip(names, combo)]
            if not schedule_violations(g, pls, ii, procs, limit=1):
                return ii
        ii += 1


def small(tasks, edges):
    return G.make_graph([G.Task(n, d) for n, d in tasks], [G.Edge(*e) for e in edges])


def test_hand_examples():
    # three tasks of 2 on 2 processors: lower bound 3, but one processor must run two: 4
    g = small([("a", 2), ("b", 2), ("c", 2)], [])
    s = exact_schedule(g, 2)
    validate(s)
    assert lower_bound(g, 2) == 3 and s.period == 4
    # loop a(2) -> b(2) -> a with one delay: 4 on any number of processors
    g = small([("a", 2), ("b", 2)], [("a", "b", 0), ("b", "a", 1)])
    assert exact_schedule(g, 3).period == 4
    # 5 + 3 | 4 + 4 packs into 8 on two processors
    g = small([("a", 5), ("b", 3), ("c", 4), ("d", 4)], [("a", "b", 0), ("c", "d", 0)])
    assert exact_schedule(g, 2).period == 8


def test_brute_force_reference_itself():
    g = small([("a", 2), ("b", 2), ("c", 2)], [])
    assert brute_min_period(g, 2) == 4 == exact_schedule(g, 2).period
    g = small([("a", 3), ("b", 1)], [("a", "b", 0), ("b", "a", 1)])
    assert brute_min_period(g, 2) == 4 == exact_schedule(g, 2).period


@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force(seed):
    rng = random.Random(seed)
    g = G.random_graph(seed, 3, back_edges=rng.randint(0, 2), max_distance=1, window=3,
                       duration_range=(1, 3))
    procs = rng.choice([1, 2])
    s = exact_schedule(g, procs)
    validate(s)
    assert s.period == brute_min_period(g, procs)


def test_list_scheduler_gap_on_small_graphs():
    gaps = []
    for seed in range(60):
        rng = random.Random(1000 + seed)
        g = G.random_graph(seed, rng.randint(2, 8), back_edges=rng.randint(0, 4), window=4,
                           max_distance=2, duration_range=(1, 6))
        procs = rng.choice([1, 2, 3])
        e = exact_schedule(g, procs)
        h = modulo_schedule(g, procs)
        validate(e)
        assert lower_bound(g, procs) <= e.period <= h.period
        gaps.append(h.period / e.period)
    assert statistics.mean(gaps) < 1.03


def test_limits():
    with pytest.raises(ValueError, match="limited to"):
        exact_schedule(G.random_graph(0, 20), 2)
    g = G.random_graph(7, 9, back_edges=6, window=9, duration_range=(5, 40))
    with pytest.raises(SearchLimit):
        exact_schedule(g, 3, node_limit=10)

"""The retimed phase: the retiming it starts from, its schedules (validated), and the default search."""

import math
import random

import pytest

import spikepipe_jax.schedule as G
from spikepipe_jax.schedule import (CommModel, iteration_bound, lower_bound, modulo_schedule,
                                    schedule_violations)
from spikepipe_jax.schedule.indexed import IndexedGraph
from spikepipe_jax.schedule.phases import frame_retiming, hybrid_phase, retimed_phase
from spikepipe_jax.schedule.validate import normalize


def check(s):
    assert schedule_violations(s.graph, s.placements, s.period, s.processors, s.comm) == []


def graphs(count, seed0=0, comm_every=3):
    """Small random graphs (local window or Erdos-Renyi-like), a third with bytes and a link."""
    for seed in range(seed0, seed0 + count):
        rng = random.Random(seed)
        n = rng.randint(3, 60)
        window = rng.choice([5, 20, n])
        with_bytes = seed % comm_every == 0
        g = G.random_graph(seed, n, window=window, max_out_degree=rng.choice([2, 3, 6]),
                           back_edges=rng.randint(0, n), max_distance=rng.randint(1, 4),
                           bytes_range=(0, 4096) if with_bytes else (0, 0))
        comm = CommModel(64, rng.randint(0, 5)) if with_bytes else CommModel()
        yield g, rng.choice([1, 2, 3, 4, 8, 16]), comm


@pytest.mark.parametrize("seed0", [0, 100])
def test_retiming_leaves_a_shallow_distance_zero_dag(seed0):
    for g, _, comm in graphs(40, seed0):
        prep = IndexedGraph(g, comm)
        c = max(1, math.ceil(iteration_bound(g)))
        r = frame_retiming(prep, c)
        assert r is not None
        succ = [[] for _ in range(prep.n)]
        for u, v, d, _ in prep.edges:
            assert d + r[v] - r[u] >= 0  # a legal retiming
            if d + r[v] - r[u] == 0:
                succ[u].append(v)
        # the retimed distance-0 edges form a DAG whose longest path is under c + max duration
        longest = [0] * prep.n
        order = G.topological_order(G.make_graph(
            g.tasks, [G.Edge(g.tasks[u].name, g.tasks[v].name) for u in range(prep.n) for v in succ[u]]))
        assert len(order) == prep.n
        for u in reversed(order):
            longest[u] = prep.dur[u] + max((longest[v] for v in succ[u]), default=0)
        assert max(longest, default=0) < c + max(prep.dur)


def test_retiming_below_the_iteration_bound_is_refused():
    g = G.make_graph([G.Task("a", 5), G.Task("b", 7)], [G.Edge("a", "b"), G.Edge("b", "a", 2)])
    prep = IndexedGraph(g, CommModel())
    assert iteration_bound(g) == 6
    assert frame_retiming(prep, 5) is None
    assert frame_retiming(prep, 6) is not None


@pytest.mark.parametrize("seed0", [0, 200])
def test_retimed_phases_give_valid_schedules(seed0):
    placed = 0
    for g, procs, comm in graphs(40, seed0):
        prep = IndexedGraph(g, comm)
        r = frame_retiming(prep, max(1, math.ceil(iteration_bound(g))))
        lb = lower_bound(g, procs)
        names = [t.name for t in g.tasks]
        for ii in (lb, math.ceil(lb * 1.1), 2 * lb):
            for res in (retimed_phase(prep, procs, ii, r), hybrid_phase(prep, procs, ii, (), retiming=r)):
                if res is None:
                    continue
                times, proc = res[0], res[1]
                check(normalize(g, procs, ii, dict(zip(names, proc)), dict(zip(names, times)), comm=comm))
                placed += 1
    assert placed > 100


def test_retimed_phase_keeps_a_fixed_assignment():
    g = G.random_graph(5, 40, back_edges=15, window=10)
    fixed = {t.name: i % 3 for i, t in enumerate(g.tasks)}
    s = modulo_schedule(g, 4, fixed=fixed, phases=("retimed",))
    check(s)
    assert s.processor_of == fixed


def test_default_search_is_never_worse_than_the_list_and_hybrid_phases():
    better = 0
    for g, procs, comm in graphs(60, 300):
        old = ("list",) if sum(IndexedGraph(g, comm).in_loop) > 0.9 * len(g.tasks) else ("hybrid", "list")
        a = modulo_schedule(g, procs, comm=comm)
        b = modulo_schedule(g, procs, comm=comm, phases=old)
        check(a)
        assert a.period <= b.period
        better += a.period < b.period
    assert better > 0


@pytest.mark.parametrize("back_edges", [1000, 3000])
def test_loop_dense_thousand_tasks_near_the_lower_bound(back_edges):
    """The benchmark's loop-dense families (its time is measured by benchmarks/scheduler.py)."""
    g = G.random_graph(2024, 1000, back_edges=back_edges, window=30)
    s = modulo_schedule(g, 64)
    check(s)
    assert s.period <= 1.01 * lower_bound(g, 64)
    assert s.info["phase"].startswith("retimed")

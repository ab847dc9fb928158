"""The SpikePipe list scheduler: validity, closeness to the lower bound, splitting, errors."""

import random
import statistics

import pytest

from spikepipe_jax.schedule import (CommModel, bytes_communicated, graph_from_json, graph_to_json,
                                    layerpipe_delays, lower_bound, modulo_schedule,
                                    schedule_violations, spikepipe_schedule, validate)
import spikepipe_jax.schedule as G


def er_graph(seed, n, p, back, dmax=3, dur=(1, 100)):
    """Erdos-Renyi DAG + random back edges (a second, independent random family)."""
    rng = random.Random(seed)
    tasks = [G.Task(f"t{i}", rng.randint(*dur)) for i in range(n)]
    edges = [G.Edge(f"t{i}", f"t{j}") for i in range(n) for j in range(i + 1, n) if rng.random() < p]
    for _ in range(back):
        i = rng.randrange(n)
        j = rng.randrange(i + 1)
        edges.append(G.Edge(f"t{i}", f"t{j}", rng.randint(1, dmax)))
    return G.make_graph(tasks, edges)


def check(s):
    assert schedule_violations(s.graph, s.placements, s.period, s.processors, s.comm) == []


def test_random_json_graphs_close_to_lower_bound():
    ratios = []
    for seed in range(40):
        rng = random.Random(seed)
        n, procs = rng.randint(5, 60), rng.choice([2, 3, 4, 8])
        if seed % 2:
            g = G.random_graph(seed, n, back_edges=rng.randint(0, n // 4), window=rng.choice([5, 20]))
        else:
            g = er_graph(seed, n, rng.choice([0.05, 0.2]), rng.randint(0, n // 3))
        g = graph_from_json(graph_to_json(g))  # given as JSON
        s = modulo_schedule(g, procs)
        check(s)
        lb = lower_bound(g, procs)
        assert s.period >= lb
        ratios.append(s.period / lb)
    assert statistics.mean(ratios) <= 1.05, statistics.mean(ratios)


def test_one_processor_and_acyclic_graphs_are_optimal():
    g = er_graph(3, 30, 0.1, 0)
    s = modulo_schedule(g, 1)
    check(s)
    assert s.period == g.total_duration
    # many small tasks on 4 processors: perfect packing exists and is found
    g = G.make_graph([G.Task(f"t{i}", 5) for i in range(16)], [G.Edge(f"t{i}", f"t{i + 1}") for i in range(15)])
    s = modulo_schedule(g, 4)
    check(s)
    assert s.period == 20


def test_tight_loop_reaches_iteration_bound():
    # loop a(4) -> b(4) -> c(4) -> a with distance 1: T_inf = 12 even with many processors
    g = G.make_graph([G.Task(x, 4) for x in "abc"] + [G.Task(f"x{i}", 3) for i in range(6)],
                     [G.Edge("a", "b"), G.Edge("b", "c"), G.Edge("c", "a", 1)] +
                     [G.Edge("a", f"x{i}") for i in range(6)])
    s = modulo_schedule(g, 4)
    check(s)
    assert s.period == lower_bound(g, 4) == 12


def test_transfer_times_are_respected():
    g = G.random_graph(5, 40, back_edges=6, bytes_range=(0, 640))
    comm = CommModel(64, 2)
    s = modulo_schedule(g, 4, comm=comm)
    assert schedule_violations(g, s.placements, s.period, 4, comm) == []
    assert s.period >= lower_bound(g, 4)


def test_fixed_assignment_is_kept():
    g = G.random_graph(6, 20, back_edges=3)
    fixed = {t.name: i % 3 for i, t in enumerate(g.tasks)}
    s = modulo_schedule(g, 3, fixed=fixed)
    check(s)
    assert {p.task: p.processor for p in s.placements} == fixed
    loads = [sum(t.duration for t in g.tasks if fixed[t.name] == p) for p in range(3)]
    assert s.period >= max(loads)


def test_zero_duration_tasks():
    g = G.make_graph([G.Task("a", 5), G.Task("u", 0), G.Task("b", 5)],
                     [G.Edge("a", "u"), G.Edge("u", "b"), G.Edge("b", "a", 1)])
    s = modulo_schedule(g, 2)
    check(s)
    assert s.period == 10


def test_training_graph_beats_the_best_contiguous_partition():
    tasks = G.toy_training_tasks(4, seed=11)
    g = G.graph_from_tasks(tasks, delays=layerpipe_delays(4), split_backward=True)
    for procs in (2, 3, 4):
        s = spikepipe_schedule(g, procs, comm=CommModel(64))
        validate(s)
        # never worse than the best contiguous layer partition's largest stage (1F1B's period)
        costs = [sum(t["cycles"] for t in tasks if t["layer"] == l) for l in range(4)]
        best_stage = min(max(sum(costs[a:b]) for a, b in zip((0,) + cut, cut + (4,)))
                         for k in range(procs) for cut in _cuts(4, k))
        assert s.period < best_stage  # strictly: F, B and W of one layer need not share a stage


def _cuts(n, k):
    import itertools
    return [tuple(c) for c in itertools.combinations(range(1, n), k)]


def test_splitting_long_tasks_lowers_the_period():
    tasks = G.toy_training_tasks(2, seed=12)
    big = dict(tasks[0], gemm=dict(m=64, k=256, n=1024), gemm_cycles=400_000, cycles=401_000,
               vector_cycles=1000)
    tasks = [big] + tasks[1:]
    dl = layerpipe_delays(2)
    g = G.graph_from_tasks(tasks, delays=dl, split_backward=True, cols=32, dataflow="ws")

    def split_fn(plan):
        return G.graph_from_tasks(tasks, delays=dl, split_backward=True, cols=32, dataflow="ws", split=plan)

    plain = spikepipe_schedule(g, 4)
    split = spikepipe_schedule(g, 4, split_fn=split_fn)
    validate(split)
    assert plain.period >= 401_000
    assert split.period < plain.period
    assert split.info["split"].get("F0", 1) > 1
    assert any(t.origin == "F0" for t in split.graph.tasks)


def test_communication_is_counted_and_reduced():
    """At the same period, the communication-aware passes (the bytes-first list phase and the
    local moves) move strictly fewer bytes than the plain list phase on this graph."""
    tasks = G.toy_training_tasks(3, seed=13)
    g = G.graph_from_tasks(tasks, delays=layerpipe_delays(3), split_backward=True)
    for procs in (2, 4):
        plain = modulo_schedule(g, procs, comm=CommModel(64), prefer_fewer_bytes=False)
        aware = modulo_schedule(g, procs, comm=CommModel(64))
        validate(plain)
        validate(aware)
        for s in (plain, aware):
            assert s.bytes_communicated == bytes_communicated(g, {p.task: p.processor for p in s.placements})
        assert aware.period == plain.period
        assert aware.bytes_communicated < plain.bytes_communicated, procs


@pytest.mark.parametrize("procs", [0, -2, 1.5, True])
def test_bad_processor_counts(procs):
    g = G.random_graph(1, 5)
    with pytest.raises(ValueError, match="processors"):
        modulo_schedule(g, procs)


def test_thousand_tasks_near_the_lower_bound():
    """Quality on the benchmark's size (its time is measured by benchmarks/scheduler.py)."""
    g = G.random_graph(2024, 1000, back_edges=100, window=30)
    s = modulo_schedule(g, 64)
    check(s)
    assert s.period <= 1.05 * lower_bound(g, 64)

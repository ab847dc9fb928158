"""Standard pipelining baselines: partitions, hand-computed makespans, validity, delays."""

import itertools

import pytest

from spikepipe_jax.schedule import (CommModel, delays_for, gpipe_schedule, partition_min_max,
                                    pipedream_partition, pipedream_schedule, validate,
                                    zb_h1_schedule)
import spikepipe_jax.schedule as G


def uniform_tasks(num_layers, f, b, w):
    """Task list (cost-model format) with the same F/B/W cycles in every layer, no bytes."""
    out = []
    for kind, c in (("F", f), ("B", b), ("W", w)):
        for l in range(num_layers):
            out.append(dict(name=f"{kind}{l}", layer=l, kind=kind, cycles=c, gemm_cycles=c,
                            vector_cycles=0, gemm=dict(m=8, k=8, n=8)))
    return out


def brute_partition(costs, stages):
    best = None
    for cut in itertools.combinations(range(1, len(costs)), stages - 1):
        bounds = (0,) + cut + (len(costs),)
        val = max(sum(costs[a:b]) for a, b in zip(bounds, bounds[1:]))
        best = val if best is None else min(best, val)
    return best


@pytest.mark.parametrize("costs", [[5, 1, 1, 1, 7, 2], [3, 3, 3, 3], [10, 1, 1], [1, 2, 3, 4, 5, 6, 7]])
def test_partition_is_optimal(costs):
    for stages in range(1, len(costs) + 1):
        part = partition_min_max(costs, stages)
        assert part[0] == 0 and part[-1] == stages - 1
        assert all(b - a in (0, 1) for a, b in zip(part, part[1:]))
        loads = [sum(c for c, s in zip(costs, part) if s == k) for k in range(stages)]
        assert max(loads) == brute_partition(costs, stages)


def test_gpipe_makespan_hand_computed():
    # 2 layers, per micro-batch F = B = 1, W = 0; m = 4 on 2 stages: (m + S - 1)(F + B) = 10
    g = G.graph_from_tasks(uniform_tasks(2, 4, 4, 0))
    s = gpipe_schedule(g, 2, micro_batches=[4])
    validate(s)
    assert s.info["micro_batches"] == 4 and s.info["stages"] == [0, 1]
    assert s.period == 10
    assert delays_for(s) == [0, 0]


def test_zb_h1_matches_its_bubble_formula():
    # uniform stages, F = B = W = 1 per micro-batch: ZB-H1 takes m(F+B+W) + (S-1)(F+B-W)
    for layers, m in ((2, 4), (3, 6), (4, 8)):
        g = G.graph_from_tasks(uniform_tasks(layers, m, m, m))
        s = zb_h1_schedule(g, layers, micro_batches=[m])
        validate(s)
        assert s.info["stages"] == list(range(layers))
        assert s.period == 3 * m + (layers - 1) * 1
        g1 = gpipe_schedule(g, layers, micro_batches=[m])
        assert s.period < g1.period
        assert delays_for(s) == [0] * layers


def test_pipedream_period_and_delays():
    tasks = uniform_tasks(4, 3, 4, 2)
    g = G.graph_from_tasks(tasks)
    s = pipedream_schedule(g, 4)
    validate(s)
    assert s.period == 9  # one layer per stage: F + B + W
    assert s.info["stages"] == [0, 1, 2, 3]
    assert delays_for(s) == [3, 2, 1, 0]  # S - 1 - s, walked from the schedule's timeline
    s2 = pipedream_schedule(g, 2)
    validate(s2)
    assert s2.period == 18 and delays_for(s2) == [1, 1, 0, 0]


def test_pipedream_partition_accounts_for_communication():
    tasks = uniform_tasks(3, 10, 10, 10)
    for t in tasks:  # a heavy activation after layer 0, a light one after layer 1
        t["bytes_in"] = {"F1": 64_000, "F2": 64}.get(t["name"], 0)
        t["bytes_out"] = 0
    g = G.graph_from_tasks(tasks)
    # with a slow link, cutting after layer 0 costs 1000 cycles > any stage: cut after layer 1
    assert pipedream_partition(g, 2, CommModel(64)) == [0, 0, 1]
    assert pipedream_partition(g, 2, CommModel()) in ([0, 1, 1], [0, 0, 1])


def test_real_ish_graphs_all_valid_with_links():
    tasks = G.toy_training_tasks(5, seed=3)
    g = G.graph_from_tasks(tasks)
    comm = CommModel(64, 5)
    for procs in (1, 2, 3, 8):
        for fn in (gpipe_schedule, zb_h1_schedule, pipedream_schedule):
            s = fn(g, procs, comm=comm)
            validate(s)
            assert s.period >= sum(t["cycles"] for t in tasks) / procs


def test_baselines_reject_non_training_graphs():
    g = G.random_graph(1, 6)
    for fn in (gpipe_schedule, zb_h1_schedule, pipedream_schedule):
        with pytest.raises(ValueError, match="training graph"):
            fn(g, 2)
    with pytest.raises(ValueError, match="processors"):
        gpipe_schedule(G.graph_from_tasks(uniform_tasks(2, 1, 1, 1)), 0)

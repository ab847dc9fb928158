"""Task graphs: validation, JSON, training-graph structure, retiming, splitting."""

import random

import pytest

import spikepipe_jax.schedule as G
from spikepipe_jax.schedule import CommModel, Placement, modulo_schedule, schedule_violations


def simple_cycles(g):
    """All simple cycles as tuples of edges (brute force, small graphs only)."""
    out = []
    adj = {}
    for e in g.edges:
        adj.setdefault(e.src, []).append(e)
    names = list(g.names)
    for si, s in enumerate(names):
        stack = [(s, [], {s})]
        while stack:
            v, path, seen = stack.pop()
            for e in adj.get(v, []):
                if e.dst == s:
                    out.append(tuple(path + [e]))
                elif e.dst not in seen and names.index(e.dst) > si:
                    stack.append((e.dst, path + [e], seen | {e.dst}))
    return out


def cycle_key(cyc):
    return tuple((e.src, e.dst, e.tag) for e in cyc)


def test_json_round_trip_and_defaults():
    obj = {"tasks": [{"name": "a", "duration": 3}, {"name": "b", "duration": 2, "layer": 1, "kind": "F"}],
           "edges": [{"src": "a", "dst": "b"}, {"src": "b", "dst": "a", "distance": 2, "bytes": 8}]}
    g = G.graph_from_json(obj)
    assert g.task("a").layer == -1 and g.task("a").bytes_out == 0
    assert g.edges[0].distance == 0 and g.edges[0].bytes == 0
    g2 = G.graph_from_json(G.graph_to_json(g))
    assert g2 == g
    assert G.graph_to_json(g2)["edges"][1] == {"src": "b", "dst": "a", "distance": 2, "bytes": 8}


@pytest.mark.parametrize("obj, match", [
    ({"tasks": [{"name": "a", "duration": 1}, {"name": "b", "duration": 1}],
      "edges": [{"src": "a", "dst": "b"}, {"src": "b", "dst": "a"}]}, "zero delays"),
    ({"tasks": [{"name": "a", "duration": 1}], "edges": [{"src": "a", "dst": "a"}]}, "zero delays"),
    ({"tasks": [{"name": "a", "duration": -1}], "edges": []}, "duration"),
    ({"tasks": [{"name": "a", "duration": 1}], "edges": [{"src": "a", "dst": "zz"}]}, "unknown task 'zz'"),
    ({"tasks": [{"name": "a", "duration": 1}, {"name": "a", "duration": 2}], "edges": []}, "duplicate"),
    ({"tasks": [{"name": "a", "duration": 1}], "edges": [{"src": "a", "dst": "a", "distance": -1}]}, "distance"),
    ({"tasks": [{"name": "a"}], "edges": []}, "duration"),
    ({"edges": []}, "tasks"),
    ({"tasks": [{"name": "a", "duration": 1.5}], "edges": []}, "integer"),
])
def test_bad_graphs_raise_clear_errors(obj, match):
    with pytest.raises(ValueError, match=match):
        G.graph_from_json(obj)


def _edge_set(g):
    return {(e.src, e.dst, e.distance) for e in g.edges}


def test_training_graph_structure_matches_the_issue():
    tasks = G.toy_training_tasks(3, seed=1)
    g = G.graph_from_tasks(tasks, delays=[2, 1, 0])
    expect = {("F0", "F1", 0), ("F1", "F2", 0), ("F0", "W1", 0), ("F1", "W2", 0),
              ("F0", "B0", 0), ("F1", "B1", 0), ("F2", "B2", 0),
              ("B2", "B1", 0), ("B1", "B0", 0),
              ("B0", "W0", 0), ("B1", "W1", 0), ("B2", "W2", 0),
              ("W0", "F0", 3), ("W1", "F1", 2), ("W2", "F2", 1),
              ("W1", "B1", 2), ("W2", "B2", 1),  # B_0 has no input-gradient GEMM: no weights
              ("W0", "W0", 1), ("W1", "W1", 1), ("W2", "W2", 1)}
    assert _edge_set(g) == expect
    assert G.update_delays(g) == [2, 1, 0]
    assert G.is_training_graph(g)
    by = {t["name"]: t for t in tasks}
    assert {t.name: t.duration for t in g.tasks} == {k: v["cycles"] for k, v in by.items()}


def test_split_backward_structure_and_durations():
    tasks = G.toy_training_tasks(2, seed=2)
    by = {t["name"]: t for t in tasks}
    g = G.graph_from_tasks(tasks, split_backward=True)
    assert {("F1", "BL1", 0), ("BL1", "BG1", 0), ("BG1", "BL0", 0), ("BL1", "W1", 0), ("BL0", "W0", 0),
            ("W1", "BG1", 1), ("W1", "F1", 1)} <= _edge_set(g)
    assert "BG0" not in g.index  # layer 0 has no input-gradient GEMM
    assert g.task("BL1").duration == by["B1"]["vector_cycles"]
    assert g.task("BG1").duration == by["B1"]["cycles"] - by["B1"]["vector_cycles"]
    assert g.task("BL0").duration == by["B0"]["cycles"]
    assert g.total_duration == sum(t["cycles"] for t in tasks)


def test_edge_bytes_from_task_bytes():
    # hand-made byte counts in the cost model's convention
    tasks = G.toy_training_tasks(2, seed=3)
    by = {t["name"]: t for t in tasks}
    g = G.graph_from_tasks(tasks)
    eb = {(e.src, e.dst): e.bytes for e in g.edges}
    assert eb[("F0", "F1")] == by["F1"]["bytes_in"]
    assert eb[("F0", "B0")] == by["F0"]["bytes_out"] - by["F1"]["bytes_in"]
    delta1 = by["W1"]["bytes_in"] - by["F1"]["bytes_in"]
    assert eb[("B1", "W1")] == delta1
    assert eb[("B1", "B0")] == by["B1"]["bytes_out"] - delta1
    assert eb[("W1", "F1")] == by["F1"]["bytes_weights"]


def test_bad_task_lists():
    tasks = G.toy_training_tasks(2)
    with pytest.raises(ValueError, match="no W1"):
        G.graph_from_tasks([t for t in tasks if t["name"] != "W1"])
    with pytest.raises(ValueError, match="delays"):
        G.graph_from_tasks(tasks, delays=[1])
    with pytest.raises(ValueError, match="delays"):
        G.graph_from_tasks(tasks, delays=[-1, 0])
    with pytest.raises(ValueError, match="cannot be split"):
        G.graph_from_tasks(tasks, split={"B1": 2})
    with pytest.raises(ValueError, match="unknown task"):
        G.graph_from_tasks(tasks, split={"X9": 2})
    with pytest.raises(ValueError, match="cycles"):
        G.graph_from_tasks([dict(t, cycles=-5) if t["name"] == "F0" else t for t in tasks])


@pytest.mark.parametrize("split_backward", [False, True])
def test_retiming_preserves_every_loop_delay_count(split_backward):
    tasks = G.toy_training_tasks(3, seed=4)
    g = G.graph_from_tasks(tasks, delays=G.layerpipe_delays(3), split_backward=split_backward)
    before = {cycle_key(c): sum(e.distance for e in c) for c in simple_cycles(g)}
    assert len(before) >= 6
    rng = random.Random(0)
    vectors = [G.pipeline_retiming(g)]
    r = {t.name: 0 for t in g.tasks}
    for _ in range(200):  # random walk over legal retimings (illegal steps raise and are undone)
        v = rng.choice(g.names)
        step = rng.choice((-1, 1))
        r[v] += step
        try:
            G.retime(g, r)
        except ValueError:
            r[v] -= step
            continue
        vectors.append(dict(r))
    assert len(vectors) > 20
    for r in vectors:
        gr = G.retime(g, r)
        after = {cycle_key(c): sum(e.distance for e in c) for c in simple_cycles(gr)}
        assert after == before
        assert all(e.distance >= 0 for e in gr.edges)


def test_layerpipe_retiming_puts_one_register_per_stage_boundary():
    num_layers = 4
    g = G.graph_from_tasks(G.toy_training_tasks(num_layers), delays=G.layerpipe_delays(num_layers))
    gr = G.retime(g, G.pipeline_retiming(g))
    d = {(e.src, e.dst): e.distance for e in gr.edges}
    for l in range(num_layers - 1):
        assert d[(f"F{l}", f"F{l + 1}")] == 1
        assert d[(f"B{l + 1}", f"B{l}")] == 1
        assert d[(f"F{l}", f"B{l}")] == 2 * (num_layers - 1 - l)  # activations stashed
    for l in range(num_layers):
        assert d[(f"W{l}", f"F{l}")] == 1
    assert d[(f"F{num_layers - 1}", f"B{num_layers - 1}")] == 0


def test_illegal_retiming_raises():
    g = G.graph_from_tasks(G.toy_training_tasks(2))
    with pytest.raises(ValueError, match="illegal retiming"):
        G.retime(g, {"F1": -1})


def test_schedule_of_retimed_graph_is_schedule_of_original_with_shifted_offsets():
    g = G.graph_from_tasks(G.toy_training_tasks(3, seed=5), delays=G.layerpipe_delays(3))
    r = G.pipeline_retiming(g)
    gr = G.retime(g, r)
    s = modulo_schedule(gr, 3)
    assert schedule_violations(gr, s.placements, s.period, 3) == []
    shifted = [Placement(p.task, p.processor, p.start, p.iteration_offset + r[p.task]) for p in s.placements]
    assert schedule_violations(g, shifted, s.period, 3) == []
    # without the shift the original graph's constraints are generally violated
    assert schedule_violations(g, s.placements, s.period, 3) != [] or all(v == 0 for v in r.values())


def test_split_pieces_bytes_and_durations():
    tasks = G.toy_training_tasks(2, seed=6)
    by = {t["name"]: t for t in tasks}
    n_f1 = by["F1"]["gemm"]["n"]
    calls = []

    def cycles_fn(m, k, n):
        calls.append((m, k, n))
        return m * k * n // 1000

    g = G.graph_from_tasks(tasks, split_backward=True, split={"F1": 2, "BL1": 2, "W1": 2},
                           gemm_cycles_fn=cycles_fn)
    eb = {(e.src, e.dst): e.bytes for e in g.edges}
    spikes0 = by["F1"]["bytes_in"]
    # every F1 piece receives all input spikes (broadcast), aligned pieces get their share
    assert eb[("F0", "F1.0")] == spikes0 and eb[("F0", "F1.1")] == spikes0
    assert ("F1.0", "BL1.1") not in eb and ("F1.0", "BL1.0") in eb
    whole = {(e.src, e.dst): e.bytes for e in G.graph_from_tasks(tasks, split_backward=True).edges}
    parts = eb[("F1.0", "BL1.0")] + eb[("F1.1", "BL1.1")]
    assert whole[("F1", "BL1")] <= parts <= whole[("F1", "BL1")] + 2  # shares, rounded up
    m, k = by["F1"]["gemm"]["m"], by["F1"]["gemm"]["k"]
    assert (m, k, n_f1 // 2) in calls
    vec = by["F1"]["cycles"] - by["F1"]["gemm_cycles"]
    assert g.task("F1.0").duration == cycles_fn(m, k, n_f1 // 2) + -(-vec // 2)
    assert g.task("F1.0").origin == "F1" and g.task("F1.0").split_extent == n_f1 // 2
    # the weight-update self loop stays per piece
    assert ("W1.0", "W1.0") in eb and ("W1.0", "W1.1") not in eb


def test_fold_model_for_pieces_without_cost_function():
    tasks = G.toy_training_tasks(1, seed=7)
    t = dict(tasks[0], gemm=dict(m=64, k=64, n=256), gemm_cycles=4000, vector_cycles=0, cycles=4000)
    tasks = [t] + tasks[1:]
    g = G.graph_from_tasks(tasks, split={"F0": 4}, cols=128, dataflow="ws")
    # 256 columns = 2 folds of 128; a piece of 64 columns is still one fold: half the time
    assert g.task("F0.0").duration == 2000
    g_is = G.graph_from_tasks(tasks, split={"F0": 4}, cols=128, dataflow="is")
    assert g_is.task("F0.0").duration == 1000  # n streams in 'is': linear


def test_random_graph_is_valid_and_deterministic():
    a = G.random_graph(3, 50, back_edges=10)
    b = G.random_graph(3, 50, back_edges=10)
    assert a == b and len(a.tasks) == 50
    assert any(e.distance > 0 for e in a.edges)
    assert G.random_graph(4, 50, back_edges=10) != a


def test_comm_model_transfer():
    c = CommModel(64, 10)
    assert c.transfer_cycles(0) == 10 and c.transfer_cycles(65) == 12
    assert CommModel().transfer_cycles(10 ** 9) == 0
    with pytest.raises(ValueError):
        CommModel(-1)
    with pytest.raises(ValueError):
        CommModel(1, -3)


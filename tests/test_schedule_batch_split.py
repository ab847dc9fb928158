"""Batch and reduction splits of training tasks: durations, bytes (weights broadcast, partial
weight-gradient sums, partial GEMM sums), the planners, and schedules of split graphs (validated)."""

import math

import pytest

from spikepipe_jax.schedule import (CommModel, bytes_communicated, graph_from_tasks, lower_bound,
                                    modulo_schedule, spikepipe_schedule, toy_training_tasks, validate)
from spikepipe_jax.schedule.comm import bytes_by_tensor
from spikepipe_jax.schedule.policies import batch_split_plan, reduction_split_plan
from spikepipe_jax.schedule.study import split_lower_bound

LAYER1 = ("F1", "BL1", "BG1", "W1")


def toy(k=2, batch=4, cols=8, **kw):
    tasks = toy_training_tasks(3, seed=0)
    return tasks, graph_from_tasks(tasks, split_backward=True, batch=batch, cols=cols,
                                   split={n: (k, "batch") for n in LAYER1}, **kw)


def by_name(tasks):
    return {t["name"]: t for t in tasks}


def test_piece_durations_are_shares_of_the_gemm_and_vector_work():
    tasks, g = toy(k=2)
    t = by_name(tasks)
    f1, w1, b1 = t["F1"], t["W1"], t["B1"]
    for j in range(2):
        assert g.task(f"F1.{j}").duration == math.ceil(f1["gemm_cycles"] / 2) + math.ceil(f1["vector_cycles"] / 2)
        assert g.task(f"W1.{j}").duration == math.ceil(w1["gemm_cycles"] / 2) + math.ceil(
            (w1["cycles"] - w1["gemm_cycles"]) / 2)
        assert g.task(f"BL1.{j}").duration == math.ceil(b1["vector_cycles"] / 2)
        assert g.task(f"BG1.{j}").duration == math.ceil(b1["gemm_cycles"] / 2)
    # the partial weight gradients are summed on the vector unit (cols lanes): one pass per
    # extra piece over dW and db in floats
    elems = w1["bytes_out"] * 8 // 32
    assert g.task("W1.sum").duration == 1 * math.ceil(elems / 8)
    _, g3 = toy(k=3)
    assert g3.task("W1.sum").duration == 2 * math.ceil(elems / 8)


def test_gemm_pieces_use_the_cost_function_with_rows_or_the_reduction_split():
    calls = []

    def fn(m, k, n):
        calls.append((m, k, n))
        return m + k + n

    tasks, g = toy(k=2, gemm_cycles_fn=fn)
    t = by_name(tasks)
    fm, fk, fn_ = (t["F1"]["gemm"][c] for c in "mkn")
    wm, wk, wn = (t["W1"]["gemm"][c] for c in "mkn")
    assert (fm // 2, fk, fn_) in calls  # F: samples are GEMM rows
    assert (wm, wk // 2, wn) in calls  # W: samples are the reduction dimension
    assert g.task("W1.0").duration == wm + wk // 2 + wn + (t["W1"]["cycles"] - t["W1"]["gemm_cycles"]) // 2


def test_bytes_of_a_batch_split_layer():
    tasks, g = toy(k=2)
    t = by_name(tasks)
    wbytes = t["W1"]["bytes_out"]
    edges = {(e.src, e.dst): e for e in g.edges}
    # each piece sends its full partial gradient to the sum, as distinct data
    for j in range(2):
        e = edges[(f"W1.{j}", "W1.sum")]
        assert e.bytes == wbytes and e.tag == f"wgrad1>W1.{j}"
    # the sum carries the update loops: whole weights to every F / BG piece, one tag
    for j in range(2):
        assert edges[("W1.sum", f"F1.{j}")].bytes == t["F1"]["bytes_weights"]
        assert edges[("W1.sum", f"F1.{j}")].tag == "weights1"
        assert edges[("W1.sum", f"F1.{j}")].distance == 1
    assert ("W1.sum", "W1.sum") in edges and ("W1.0", "W1.0") not in edges
    # activations stay on matching pieces: no edge between different sample blocks
    assert ("F1.0", "BL1.1") not in edges and ("BL1.1", "W1.0") not in edges
    # an unsplit producer sends each piece its half, as distinct blocks
    assert edges[("F0", "F1.0")].bytes == t["F1"]["bytes_in"] // 2
    assert edges[("F0", "F1.0")].tag != edges[("F0", "F1.1")].tag
    # an unsplit consumer gets every piece's half
    assert edges[("F1.0", "F2")].bytes + edges[("F1.1", "F2")].bytes == t["F2"]["bytes_in"]

    # data parallel placement: piece j of layer 1 on processor j, everything else on 0. What
    # crosses: block 1 of layer 0's spikes, of layer 2's input gradient and of layer 1's spikes
    # (to F2 and W2: one multicast), layer 1's input gradient from BG1.1, the weights to the
    # pieces on processor 1 (one multicast) and W1.1's partial gradient.
    proc = {x.name: 0 for x in g.tasks}
    proc.update({f"{n}.1": 1 for n in LAYER1})
    half_in_grad2 = edges[("BG2", "BL1.1")].bytes
    want = (edges[("F0", "F1.1")].bytes + edges[("F0", "W1.1")].bytes  # spikes0: two blocks' tags
            + half_in_grad2 + edges[("F1.1", "F2")].bytes + edges[("BG1.1", "BL0")].bytes
            + t["F1"]["bytes_weights"] + wbytes)
    # F0 -> F1.1 and F0 -> W1.1 carry the same block, but as separately tagged blocks they count
    # once each; everything else as derived above
    assert bytes_communicated(g, proc) == want
    assert bytes_by_tensor(g, proc)["wgrad"] == wbytes


def test_batch_split_errors():
    tasks = toy_training_tasks(2, seed=0)
    with pytest.raises(ValueError, match="batch >= 2"):
        graph_from_tasks(tasks, split_backward=True, split={"F1": (2, "batch")})
    with pytest.raises(ValueError, match="columns'|'batch"):
        graph_from_tasks(tasks, split_backward=True, batch=4, split={"F1": (2, "rows")})
    with pytest.raises(ValueError, match="batch must be"):
        graph_from_tasks(tasks, split_backward=True, batch=-1)
    # pieces are capped at the batch, and an unsplit B may be split by samples
    g = graph_from_tasks(tasks, batch=2, split={"B1": (5, "batch")})
    assert sorted(t.name for t in g.tasks if t.origin == "B1") == ["B1.0", "B1.1"]


def test_batch_split_graphs_schedule_validly_and_the_planner_uses_them():
    tasks, g = toy(k=2)
    for procs in (2, 3, 4):
        s = modulo_schedule(g, procs, comm=CommModel(64, 0))
        validate(s)
        assert s.period >= lower_bound(g, procs)
    g0 = graph_from_tasks(tasks, split_backward=True, cols=8)
    plan = batch_split_plan(g0, 4, 3000, 4)
    assert plan == {n: (3, "batch") for n in ("F1", "W1", "BL1", "BG1")}
    assert batch_split_plan(g0, 4, 3000, 1) == {}

    # 256 array columns: no GEMM here has more output columns, so column splits gain nothing
    # and only a batch split shortens layer 1
    g0 = graph_from_tasks(tasks, split_backward=True, cols=256)

    def split_fn(p):
        return graph_from_tasks(tasks, split_backward=True, cols=256, batch=4, split=p)

    s = spikepipe_schedule(g0, 4, split_fn=split_fn, split_batch=4)
    validate(s)
    assert s.info["split"] and all(v[1] == "batch" for v in s.info["split"].values())
    assert s.period < spikepipe_schedule(g0, 4, split_fn=split_fn).period
    assert s.period >= split_lower_bound(g0, 4, split_fn, batch=4)
    assert split_lower_bound(g0, 4, split_fn, batch=4) < split_lower_bound(g0, 4, split_fn)


def test_training_tasks_record_batch_for_the_graph_builder():
    tasks = [dict(t, batch=4) for t in toy_training_tasks(2, seed=0)]
    g = graph_from_tasks(tasks, split_backward=True, split={"F1": (2, "batch")})
    assert {t.name for t in g.tasks} >= {"F1.0", "F1.1"}


def test_reduction_split_durations_and_bytes():
    tasks = toy_training_tasks(3, seed=0)
    t = by_name(tasks)
    g = graph_from_tasks(tasks, split_backward=True, cols=8,
                         split={"F1": (2, "reduction"), "BG1": (2, "reduction")})
    f1, b1 = t["F1"], t["B1"]
    fm, fn_ = f1["gemm"]["m"], f1["gemm"]["n"]
    bm, bn = b1["gemm"]["m"], b1["gemm"]["n"]
    # pieces: half of the GEMM each, no vector work; the sum adds one partial output (m x n
    # floats on 8 lanes) and then runs F's vector part (pooling, LIF)
    assert [g.task(f"F1.{j}").duration for j in range(2)] == [math.ceil(f1["gemm_cycles"] / 2)] * 2
    assert g.task("F1.sum").duration == math.ceil(fm * fn_ / 8) + f1["vector_cycles"]
    assert g.task("BG1.sum").duration == math.ceil(bm * bn / 8)
    edges = {(e.src, e.dst): e for e in g.edges}
    for j in range(2):
        assert edges[(f"F1.{j}", "F1.sum")].bytes == fm * fn_ * 4  # partial currents, floats
        assert edges[(f"BG1.{j}", "BG1.sum")].bytes == bm * bn * 4
        # each piece gets its block of input channels and of the weights, as distinct data
        assert edges[("F0", f"F1.{j}")].bytes == f1["bytes_in"] // 2
        assert edges[("W1", f"F1.{j}")].bytes == f1["bytes_weights"] // 2
        assert edges[("BL1", f"BG1.{j}")].tag == f"delta1>BG1.{j}"
    assert edges[("F0", "F1.0")].tag != edges[("F0", "F1.1")].tag
    # the sums send the outputs
    assert ("F1.sum", "F2") in edges and ("BG1.sum", "BL0") in edges
    assert not any(e.src.startswith("F1.") and e.src != "F1.sum" and e.dst != "F1.sum" for e in g.edges)
    # both pieces on processor 1, everything else on 0: the partial sums do not cross
    proc = {x.name: 0 for x in g.tasks}
    proc.update({"F1.0": 1, "F1.1": 1})
    assert bytes_by_tensor(g, proc)["psum"] == 2 * fm * fn_ * 4
    assert bytes_by_tensor(g, proc)["spikes"] == f1["bytes_in"]  # both blocks of the input
    for procs in (2, 3):
        validate(modulo_schedule(g, procs, comm=CommModel(64, 0)))


def test_reduction_split_errors_and_planner():
    tasks = toy_training_tasks(3, seed=0)
    for name in ("F0", "W1", "BL1"):
        with pytest.raises(ValueError, match="reduction split"):
            graph_from_tasks(tasks, split_backward=True, split={name: (2, "reduction")})
    g0 = graph_from_tasks(tasks, split_backward=True, cols=8)
    plan = reduction_split_plan(g0, 4, 3000)
    assert plan == {"F1": (3, "reduction"), "BG1": (3, "reduction")}

    def split_fn(p):
        return graph_from_tasks(tasks, split_backward=True, cols=8, split=p)

    for cols in (8, 256):  # with 256 columns only the reduction split shortens the GEMMs
        g0 = graph_from_tasks(tasks, split_backward=True, cols=cols)

        def split_fn(p, cols=cols):
            return graph_from_tasks(tasks, split_backward=True, cols=cols, split=p)

        s = spikepipe_schedule(g0, 4, split_fn=split_fn, split_reduction=True)
        validate(s)
        assert s.period >= split_lower_bound(g0, 4, split_fn, reduction=True)
        assert split_lower_bound(g0, 4, split_fn, reduction=True) <= split_lower_bound(g0, 4, split_fn)
        if cols == 256:
            assert any(v[1] == "reduction" for v in s.info["split"].values())
            assert s.period < spikepipe_schedule(g0, 4, split_fn=split_fn).period

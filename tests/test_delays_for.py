"""Gradient delays from pipelines, walked from timelines, against the closed forms."""

import pytest

from spikepipe_jax.schedule import (CommModel, delays_for, delays_from_timeline, gpipe_schedule,
                                    layerpipe_delays, pipedream_schedule, spikepipe_schedule,
                                    update_delays)
import spikepipe_jax.schedule as G
from spikepipe_jax.schedule.study import method_entry


@pytest.mark.parametrize("num_layers", [1, 2, 3, 5, 8])
def test_closed_forms_per_layer_stages(num_layers):
    assert delays_for("none", num_layers=num_layers) == [0] * num_layers
    # 1F1B with one stage per layer: stage s has S - 1 - s
    assert delays_for("1f1b", num_layers=num_layers) == [num_layers - 1 - l for l in range(num_layers)]
    # LayerPipe2: Delay(l) = 2 S(l), S(l) = stages after layer l's
    assert delays_for("fully_pipelined", num_layers=num_layers) == [2 * (num_layers - 1 - l)
                                                                    for l in range(num_layers)]


@pytest.mark.parametrize("stages", [[0, 0, 1, 1, 2], [0, 1, 1, 1], [0, 0, 0], [0, 1, 2, 2, 2, 3]])
def test_closed_forms_grouped_stages(stages):
    nst = stages[-1] + 1
    assert delays_for("1f1b", num_layers=len(stages), stages=stages) == [nst - 1 - s for s in stages]
    assert delays_for("fully_pipelined", num_layers=len(stages), stages=stages) == \
        [2 * (nst - 1 - s) for s in stages]
    assert layerpipe_delays(len(stages), stages) == [2 * (nst - 1 - s) for s in stages]


def test_walk_hand_timeline():
    # forward of iteration i at 10 i; update of k applied at 10 k + 25: updates k = i-2, i-1 are
    # still running when forward i starts (at 10 i < 10 (i-2) + 25), so d = 2
    fs = [[10 * i for i in range(9)]]
    ue = [[10 * k + 25 for k in range(9)]]
    assert delays_from_timeline(fs, ue) == [2]
    # exactly at the start counts as applied
    assert delays_from_timeline([[10 * i for i in range(9)]], [[10 * k + 20 for k in range(9)]]) == [1]
    with pytest.raises(ValueError, match="before forward"):
        delays_from_timeline([[10 * i for i in range(9)]], [[10 * k - 5 for k in range(9)]])


def test_from_schedules():
    tasks = G.toy_training_tasks(4, seed=5)
    g = G.graph_from_tasks(tasks)
    assert delays_for(gpipe_schedule(g, 2)) == [0, 0, 0, 0]
    for procs in (2, 3, 4):
        s = pipedream_schedule(g, procs)
        st = s.info["stages"]
        closed = delays_for("1f1b", 4, stages=st)
        assert closed == [st[-1] - x for x in st]
        # an underloaded stage may see fresher weights than the closed form, never staler
        assert all(0 <= a <= b for a, b in zip(delays_for(s), closed))
    # balanced stages: exactly the closed form
    bal = G.graph_from_tasks([dict(t, cycles=100, gemm_cycles=100, vector_cycles=0) for t in tasks])
    s = pipedream_schedule(bal, 4)
    assert s.info["stages"] == [0, 1, 2, 3] and delays_for(s) == [3, 2, 1, 0]
    # the proposed schedule: never more staleness than its graph allows
    gs = G.graph_from_tasks(tasks, delays=layerpipe_delays(4), split_backward=True)
    sp = spikepipe_schedule(gs, 3, comm=CommModel(64))
    d = delays_for(sp)
    assert all(0 <= x <= y for x, y in zip(d, update_delays(gs)))
    assert d[-1] == 0  # the last layer's update loop has a single delay
    # the JSON form of a schedule (with its graph) gives the same answer
    assert delays_for(method_entry(sp)) == d


def test_list_passthrough_and_errors():
    assert delays_for([3, 0, 1]) == [3, 0, 1]
    with pytest.raises(ValueError, match="non-negative"):
        delays_for([1, -1])
    with pytest.raises(ValueError, match="expected 3"):
        delays_for([1, 2], num_layers=3)
    with pytest.raises(ValueError, match="unknown pipelining"):
        delays_for("gpipe2", num_layers=3)
    with pytest.raises(ValueError, match="num_layers"):
        delays_for("1f1b")
    with pytest.raises(ValueError, match="stages"):
        delays_for("1f1b", num_layers=3, stages=[0, 2, 3])
    with pytest.raises(ValueError, match="stages"):
        delays_for("1f1b", num_layers=3, stages=[0, 1])
    with pytest.raises(ValueError, match="num_layers"):
        delays_for("none", num_layers=0)

"""The independent schedule validator: accepts valid schedules, rejects hand-made invalid ones."""

import pytest

from spikepipe_jax.schedule import CommModel, Placement, Schedule, schedule_violations, validate
import spikepipe_jax.schedule as G


def chain():
    # a(3) -> b(2) -> c(4), and the loop c -> a with distance 2
    return G.make_graph([G.Task("a", 3), G.Task("b", 2), G.Task("c", 4)],
                        [G.Edge("a", "b", 0, 100), G.Edge("b", "c", 0, 0), G.Edge("c", "a", 2, 0)])


def pl(*items):
    return [Placement(*x) for x in items]


def test_accepts_valid_schedules():
    g = chain()
    # one processor, period 9 = all work, back to back
    assert schedule_violations(g, pl(("a", 0, 0, 0), ("b", 0, 3, 0), ("c", 0, 5, 0)), 9, 1) == []
    # two processors, period 5: c runs on P1 in the next period (offset 1)
    ok = pl(("a", 0, 0, 0), ("b", 0, 3, 0), ("c", 1, 0, 1))
    assert schedule_violations(g, ok, 5, 2) == []
    validate(Schedule(g, 2, 5, tuple(ok)))
    # period 7 with c wrapping around the period end on P1 ([5, 9) = [5, 7) + [0, 2))
    assert schedule_violations(g, pl(("a", 0, 0, 0), ("b", 0, 3, 0), ("c", 1, 5, 0)), 7, 2) == []


@pytest.mark.parametrize("placements, period, procs, comm, match", [
    # b starts before a ends
    ([("a", 0, 0, 0), ("b", 1, 2, 0), ("c", 1, 5, 0)], 9, 2, CommModel(), "edge a -> b"),
    # overlap on one processor
    ([("a", 0, 0, 0), ("b", 0, 3, 0), ("c", 0, 4, 0)], 9, 1, CommModel(), "overlaps"),
    # overlap only modulo the period (c = [5, 9) wraps onto a = [0, 3))
    ([("a", 0, 0, 0), ("b", 1, 3, 0), ("c", 0, 5, 0)], 6, 2, CommModel(), "overlaps"),
    # loop c -> a (distance 2) broken: a of iteration i+2 starts at 10, c of i ends at 14
    ([("a", 0, 0, 0), ("b", 0, 3, 0), ("c", 1, 0, 2)], 5, 2, CommModel(), "edge c -> a"),
    # valid with an ideal link, too early once the link has one cycle of latency
    ([("a", 0, 0, 0), ("b", 0, 3, 0), ("c", 1, 0, 1)], 5, 2, CommModel(64, 1), "edge b -> c"),
    # task longer than the period
    ([("a", 0, 0, 0), ("b", 1, 0, 1), ("c", 2, 0, 1)], 3, 3, CommModel(), "overlaps itself"),
    # bookkeeping errors
    ([("a", 0, 0, 0), ("b", 0, 3, 0)], 9, 1, CommModel(), "not placed"),
    ([("a", 0, 0, 0), ("b", 0, 3, 0), ("c", 0, 5, 0), ("zz", 0, 0, 0)], 9, 1, CommModel(), "unknown task"),
    ([("a", 0, 0, 0), ("a", 0, 3, 0), ("b", 0, 3, 0), ("c", 0, 5, 0)], 9, 1, CommModel(), "twice"),
    ([("a", 2, 0, 0), ("b", 0, 3, 0), ("c", 0, 5, 0)], 9, 2, CommModel(), "processor 2"),
    ([("a", 0, 9, 0), ("b", 0, 3, 0), ("c", 0, 5, 0)], 9, 1, CommModel(), "start 9"),
    ([("a", 0, -1, 0), ("b", 0, 3, 0), ("c", 0, 5, 0)], 9, 1, CommModel(), "start -1"),
])
def test_rejects_invalid_schedules(placements, period, procs, comm, match):
    g = chain()
    bad = schedule_violations(g, pl(*placements), period, procs, comm)
    assert bad and any(match in b for b in bad), bad
    with pytest.raises(ValueError, match="invalid schedule"):
        validate(Schedule(g, procs, period, tuple(pl(*placements)), comm=comm))


def test_transfer_time_only_between_processors():
    g = chain()
    same = pl(("a", 0, 0, 0), ("b", 0, 3, 0), ("c", 0, 5, 0))
    assert schedule_violations(g, same, 9, 1, CommModel(1, 1000)) == []  # one processor: no transfer
    # a -> b carries 100 bytes: 2 cycles at 64 B/cycle when b runs on another processor
    early = pl(("a", 0, 0, 0), ("b", 1, 4, 0), ("c", 1, 0, 1))
    assert schedule_violations(g, early, 6, 2) == []
    assert any("edge a -> b" in v for v in schedule_violations(g, early, 6, 2, CommModel(64, 0)))
    late = pl(("a", 0, 0, 0), ("b", 1, 5, 0), ("c", 1, 1, 1))
    assert schedule_violations(g, late, 6, 2, CommModel(64, 0)) == []


def test_bad_period_or_processors():
    g = chain()
    items = pl(("a", 0, 0, 0), ("b", 0, 3, 0), ("c", 0, 5, 0))
    assert "period" in schedule_violations(g, items, 0, 1)[0]
    assert "processors" in schedule_violations(g, items, 9, 0)[0]


def test_zero_duration_tasks_take_no_slot():
    g = G.make_graph([G.Task("a", 4), G.Task("u", 0)], [G.Edge("a", "u", 0)])
    assert schedule_violations(g, pl(("a", 0, 0, 0), ("u", 0, 0, 1)), 4, 1) == []

"""Communication budget: the trade-off walk, the budget policy, the lower bounds, the study keys."""

import itertools
import math

import pytest

import spikepipe_jax.schedule as G
from spikepipe_jax.schedule import (CommModel, bytes_communicated, layerpipe_delays, spikepipe_schedule,
                                    validate)
from spikepipe_jax.schedule import comm_bounds, study
from spikepipe_jax.schedule.tradeoff import loads, tradeoff_assignments


def _training_graph(layers=3, seed=13):
    tasks = G.toy_training_tasks(layers, seed=seed)
    return tasks, G.graph_from_tasks(tasks, delays=layerpipe_delays(layers), split_backward=True)


def test_tradeoff_front_is_pareto_and_starts_free():
    _, g = _training_graph()
    for procs in (2, 3, 4):
        front = tradeoff_assignments(g, procs)
        pts = [(max(loads(g, a, procs)), bytes_communicated(g, a)) for a in front]
        assert pts[0][1] == 0  # all on one processor
        assert all(b1 < b2 and m1 > m2 for (m1, b1), (m2, b2) in zip(pts, pts[1:])), pts
        assert all(0 <= p < procs for a in front for p in a.values())
        assert pts[-1][0] < g.total_duration  # it did move work


def test_budget_is_respected_and_buys_speed():
    _, g = _training_graph()
    comm = CommModel(64)
    free = spikepipe_schedule(g, 3, comm=comm)
    periods = []
    for budget in (0, free.bytes_communicated // 4, free.bytes_communicated // 2, 10 * free.bytes_communicated):
        s = spikepipe_schedule(g, 3, comm=comm, comm_budget=budget)
        validate(s)
        assert s.info["within_budget"] and s.bytes_communicated <= budget
        assert [s.period, s.bytes_communicated, 0] in s.info["candidates"]
        assert s.period == min(c[0] for c in s.info["candidates"] if c[1] <= budget)
        periods.append(s.period)
    assert periods == sorted(periods, reverse=True) and periods[0] > periods[-1]
    assert periods[0] == g.total_duration  # nothing may cross: one processor, back to back
    assert periods[-1] <= free.period


def _brute_front(g, procs):
    best = {}
    for a in itertools.product(range(procs), repeat=len(g.tasks)):
        ld = [0] * procs
        for t, p in zip(g.tasks, a):
            ld[p] += t.duration
        b = bytes_communicated(g, dict(zip(g.names, a)))
        best[max(ld)] = min(best.get(max(ld), math.inf), b)
    return best


@pytest.mark.parametrize("procs", [2, 3])
def test_exact_front_matches_brute_force_and_bounds_the_layer_cut(procs):
    g = G.graph_from_tasks(G.toy_training_tasks(2, seed=3), split_backward=True)
    front = comm_bounds.exact_front(g)
    pts = [pt for k in range(1, procs + 1) for pt in front[k]]
    brute = _brute_front(g, procs)
    for x in sorted(set(brute) | {m for m, _ in pts}):
        want = min((b for m, b in brute.items() if m <= x), default=None)
        got = min((b for m, b in pts if m <= x), default=None)
        assert got == want, x
        if want is not None:
            assert comm_bounds.layer_cut_bytes(g, x) <= comm_bounds.layer_chain_bytes(g, x) <= want


def test_min_period_bound_holds_for_every_scheduled_candidate():
    """No schedule the scheduler finds within a budget beats the bound for that budget."""
    for layers, seed, procs in ((2, 3, 2), (3, 13, 3), (3, 5, 4)):
        _, g = _training_graph(layers, seed)
        s = spikepipe_schedule(g, procs, comm=CommModel(64), comm_budget=math.inf)
        front = comm_bounds.exact_front(g) if len(g.tasks) <= 11 else None
        for period, nbytes, _ in s.info["candidates"]:
            for fr in (front, None):
                lb, how = comm_bounds.min_period_for_budget(g, procs, nbytes, front=fr)
                assert lb <= period, (layers, procs, period, nbytes, how)
        with pytest.raises(ValueError, match="at most 11 tasks"):
            comm_bounds.exact_front(G.random_graph(1, 12))


def test_compare_training_reports_budget_overhead_and_tradeoff():
    tasks, _ = _training_graph(3, 13)
    res, scheds = study.compare_training(tasks, 3, comm=CommModel(64), comm_budget_pct=0.5)
    cb = res["comm_budget"]
    want = scheds["pipedream_1f1b"].bytes_communicated + 0.005 * res["training_bytes"]
    assert cb["bytes"] == pytest.approx(want)
    for name in ("spikepipe", "spikepipe_nosplit"):
        s = scheds[name]
        assert s.bytes_communicated <= cb["bytes"]
        assert res["comm_time_overhead_pct"][name] >= 0.0
        assert s.period >= cb["min_period_nosplit"] or s.info["split"]
    row = study.summary_row(res, net="toy")
    assert row["extra_comm_pct_nosplit_vs_1f1b"] <= 0.5
    curve = row["tradeoff"]["nosplit"]
    vals = [curve[str(p)] for p in study.BUDGET_LADDER if str(p) in curve]
    assert vals == sorted(vals)  # more budget never hurts
    assert row["speedup_nosplit_vs_pipedream_1f1b"] <= row["speedup_nosplit_upper_bound_at_budget"]
    summary = study.summarize([row])
    assert summary["all"]["comm_time_overhead_pct"]["mean"] == row["comm_time_overhead_pct"]
    assert "tradeoff_mean" in summary["all"]


def test_comm_time_overhead_is_zero_on_ideal_links():
    _, g = _training_graph()
    s = spikepipe_schedule(g, 3, comm=CommModel())
    assert study.comm_time_overhead_pct(s) == 0.0
    slow = spikepipe_schedule(g, 3, comm=CommModel(1, 1000))
    assert study.comm_time_overhead_pct(slow) > 0.0


def test_bytes_by_tensor_adds_up_to_bytes_communicated():
    import random
    from spikepipe_jax.schedule.comm import bytes_by_tensor
    g = G.graph_from_tasks(G.toy_training_tasks(3, seed=2), split_backward=True, split={"F1": 2, "W2": 3})
    rng = random.Random(0)
    kinds = set()
    for _ in range(30):
        a = {t.name: rng.randrange(3) for t in g.tasks}
        parts = bytes_by_tensor(g, a)
        assert sum(parts.values()) == bytes_communicated(g, a)
        kinds |= {k for k, v in parts.items() if v}
    assert {"spikes", "grad", "delta", "weights"} <= kinds <= {"spikes", "grad", "membranes", "delta", "weights"}
    assert bytes_by_tensor(g, {t.name: 0 for t in g.tasks}) == {}


@pytest.mark.parametrize("split_backward", [True, False])
def test_layer_chain_bound_never_exceeds_the_exact_front(split_backward):
    """The chain bound counts every boundary between whole layers (a whole layer is always a
    run): still a lower bound on the bytes at each largest load, over random training graphs."""
    tighter = 0
    for seed in range(8):
        layers = 2 if split_backward else 3  # 7 or 9 tasks: exact set partitions
        g = G.graph_from_tasks(G.toy_training_tasks(layers, seed=seed), split_backward=split_backward,
                               delays=layerpipe_delays(layers))
        front = comm_bounds.exact_front(g)
        pts = [pt for k in range(1, len(front)) for pt in front[k]]
        for x in sorted({m for m, _ in pts}):
            want = min(b for m, b in pts if m <= x)
            chain = comm_bounds.layer_chain_bytes(g, x)
            assert comm_bounds.layer_cut_bytes(g, x) <= chain <= want, (seed, x)
            tighter += chain > comm_bounds.layer_cut_bytes(g, x)
    assert tighter > 0



def _slow_link_case():
    """A toy graph and link on which the shortest period within the byte budget has a
    communication time overhead above 0.5 % while a slower candidate has none."""
    _, g = _training_graph(3, 5)
    return g, CommModel(8)


def test_time_limit_picks_a_compliant_candidate():
    from spikepipe_jax.schedule.policies import comm_time_overhead_pct
    g, comm = _slow_link_case()
    free = spikepipe_schedule(g, 2, comm=comm, comm_budget=math.inf)
    assert comm_time_overhead_pct(free) > 0.5  # the limit binds here
    s = spikepipe_schedule(g, 2, comm=comm, comm_budget=math.inf, comm_time_budget_pct=0.5)
    validate(s)
    assert s.info["within_time_budget"] and s.info["comm_time_budget_pct"] == 0.5
    assert comm_time_overhead_pct(s) <= 0.5 < comm_time_overhead_pct(free)
    assert s.period > free.period  # it paid in period for it
    assert study.comm_time_overhead_pct(s) == comm_time_overhead_pct(s)  # the cache agrees
    # a limit above the free pick's overhead changes nothing
    loose = spikepipe_schedule(g, 2, comm=comm, comm_budget=math.inf,
                               comm_time_budget_pct=comm_time_overhead_pct(free) + 0.1)
    assert (loose.period, loose.bytes_communicated) == (free.period, free.bytes_communicated)


def test_time_limit_pick_rule_and_fallback():
    """``_pick``: the byte budget first, then the shortest period within the time limit; with no
    candidate within it, the smallest overhead."""
    from spikepipe_jax.schedule.period_search import modulo_schedule
    from spikepipe_jax.schedule.policies import _pick, comm_time_overhead_pct
    g, comm = _slow_link_case()
    free = spikepipe_schedule(g, 2, comm=comm)
    one = modulo_schedule(g, 2, comm=comm, fixed={t.name: 0 for t in g.tasks}, phases=("list",))
    assert comm_time_overhead_pct(one) == 0.0 < 0.5 < comm_time_overhead_pct(free)
    assert one.period > free.period
    assert _pick([free, one], 0.01) is free
    assert _pick([free, one], 0.01, None, 0.5) is one
    assert _pick([free, one], 0.01, math.inf, 0.5) is one
    # nothing within the limit (a negative one): the smallest overhead, not the shortest period
    assert _pick([free, one], 0.01, None, -1.0) is one
    over = comm_time_overhead_pct(free)
    assert _pick([free, one], 0.01, None, over) is free  # both within: the shorter period
    # the byte budget comes first: the one-processor schedule moves nothing, so a zero budget
    # keeps it even without a time limit
    assert one.bytes_communicated == 0 < free.bytes_communicated
    assert _pick([free, one], 0.01, 0) is one

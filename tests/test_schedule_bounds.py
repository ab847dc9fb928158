"""Iteration bound (exact, against brute-force loop enumeration), resource and lower bounds."""

import random
from fractions import Fraction

import pytest

from spikepipe_jax.schedule import bounds as Bd
from spikepipe_jax.schedule.graph import sccs
import spikepipe_jax.schedule as G


def brute_iteration_bound(g):
    """max over simple cycles of sum(durations) / sum(distances), by enumeration."""
    adj = {}
    for e in g.edges:
        adj.setdefault(e.src, []).append(e)
    names = list(g.names)
    best = Fraction(0)
    for si, s in enumerate(names):
        stack = [(s, 0, 0, {s})]
        while stack:
            v, w, t, seen = stack.pop()
            for e in adj.get(v, []):
                nw, nt = w + g.task(v).duration, t + e.distance
                if e.dst == s:
                    best = max(best, Fraction(nw, nt))
                elif e.dst not in seen and names.index(e.dst) > si:
                    stack.append((e.dst, nw, nt, seen | {e.dst}))
    return best


def graph(tasks, edges):
    return G.make_graph([G.Task(n, d) for n, d in tasks], [G.Edge(*e) for e in edges])


def test_hand_examples():
    # loop a(3) -> b(5) -> a with two delays: (3 + 5) / 2
    g = graph([("a", 3), ("b", 5)], [("a", "b", 0), ("b", "a", 2)])
    assert Bd.iteration_bound(g) == Fraction(4)
    # two loops sharing a node: a->b->a (d=1, 3+5=8) and b->c->b (d=3, 5+7=12 -> 4)
    g = graph([("a", 3), ("b", 5), ("c", 7)],
              [("a", "b", 0), ("b", "a", 1), ("b", "c", 0), ("c", "b", 3)])
    tinf, loop = Bd.max_cycle_ratio(g)
    assert tinf == 8 and set(loop) == {"a", "b"}
    # self loop: W -> W with one delay
    g = graph([("w", 7)], [("w", "w", 1)])
    assert Bd.iteration_bound(g) == 7
    # acyclic
    g = graph([("a", 3), ("b", 5)], [("a", "b", 0)])
    assert Bd.iteration_bound(g) == 0


def test_iteration_bound_is_exact_on_random_graphs():
    for seed in range(150):
        rng = random.Random(seed)
        g = G.random_graph(seed, rng.randint(1, 8), back_edges=rng.randint(0, 6), window=8,
                           max_distance=3, duration_range=(0, 20))
        assert Bd.iteration_bound(g) == brute_iteration_bound(g), seed


def _components(g):
    n = len(g.tasks)
    succ = [[] for _ in range(n)]
    for e in g.edges:
        succ[g.index[e.src]].append(g.index[e.dst])
    for comp in sccs(n, succ):
        cs = set(comp)
        out = {}
        for e in g.edges:
            u, v = g.index[e.src], g.index[e.dst]
            if u in cs and v in cs:
                out.setdefault(u, []).append((g.tasks[u].duration, e.distance, v))
        if out:
            yield comp, out


@pytest.mark.parametrize("method", ["howard_exact", "parametric"])
def test_exact_fallbacks_agree(method):
    for seed in range(60):
        rng = random.Random(100 + seed)
        g = G.random_graph(seed, rng.randint(2, 8), back_edges=rng.randint(1, 6), window=8,
                           duration_range=(1, 20))
        best = Fraction(0)
        for comp, out in _components(g):
            if method == "howard_exact":
                r = Bd._howard(comp, out, exact=True)[0]
            else:
                r = Bd._parametric(comp, out)[0]
            best = max(best, r)
        assert best == brute_iteration_bound(g)


def test_training_graph_bound_hand_derived():
    # unpipelined training: the loop through layer 0 is the whole iteration minus other W's
    tasks = G.toy_training_tasks(3, seed=2)
    g = G.graph_from_tasks(tasks)
    c = {t["name"]: t["cycles"] for t in tasks}
    whole = sum(c[f"F{l}"] + c[f"B{l}"] for l in range(3)) + c["W0"]
    assert Bd.iteration_bound(g) >= whole
    assert Bd.iteration_bound(g) == max(whole, sum(c[f"F{l}"] + c[f"B{l}"] for l in range(1, 3)) + c["W1"],
                                        c["F2"] + c["B2"] + c["W2"])


def test_resource_and_lower_bound():
    g = graph([("a", 10), ("b", 4), ("c", 4)], [("a", "b", 0), ("b", "c", 0)])
    assert Bd.resource_bound(g, 2) == Fraction(9)
    assert Bd.lower_bound(g, 2) == 10  # the longest task
    assert Bd.lower_bound(g, 1) == 18
    g = graph([("a", 10), ("b", 4), ("c", 5)], [("a", "b", 0), ("b", "c", 0), ("c", "a", 1)])
    assert Bd.lower_bound(g, 8) == 19  # the loop
    b = Bd.period_bounds(g, 8)
    assert b["iteration_bound"] == 19 and b["longest_task"] == 10 and b["lower_bound"] == 19
    with pytest.raises(ValueError, match="processors"):
        Bd.lower_bound(g, 0)


def test_large_graph_iteration_bound_is_its_critical_cycle():
    """On 1,000 tasks the bound is attained by the cycle it returns (its time: benchmarks/)."""
    g = G.random_graph(1, 1000, back_edges=300, window=30)
    tinf = Bd.iteration_bound(g)
    ratio, cycle = Bd.max_cycle_ratio(g)
    assert tinf == ratio > 0
    names = cycle + cycle[:1]
    total_d = sum(min(e.distance for e in g.edges if (e.src, e.dst) == (a, b))
                  for a, b in zip(names, names[1:]))
    assert ratio == Fraction(sum(g.task(n).duration for n in cycle), total_d)

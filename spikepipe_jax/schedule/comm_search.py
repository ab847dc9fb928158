"""Communication-aware placement at a fixed period (step 7 of ``period_search.py`` and the layer
affinity policy): :func:`affinity_assign` keeps a layer's tasks together where the period
allows; :func:`reduce_comm` moves single tasks next to their neighbours while every constraint
still holds."""

from __future__ import annotations

from spikepipe_jax.schedule.indexed import IndexedGraph
from spikepipe_jax.schedule.reservation import ModuloTable


def affinity_assign(prep: IndexedGraph, procs: int, ii: int) -> list[int] | None:
    """Processor per task that keeps each layer's tasks together where the period allows.

    Clusters are a layer's tasks (for split tasks: piece j of each split task of the layer,
    which share the same channels); tasks without a layer are their own cluster.  Clusters are
    placed largest first on a processor with room (capacity II), preferring the one they
    exchange most bytes with, then the fullest (best fit); a cluster with no room is broken into
    its tasks, placed the same way.  None if some task finds no room.
    """
    g = prep.g
    clusters: dict[tuple, list[int]] = {}
    for v, t in enumerate(g.tasks):
        if t.layer < 0:
            key = ("task", v)
        else:
            key = ("layer", t.layer, t.name.rsplit(".", 1)[1] if t.origin else None)
        clusters.setdefault(key, []).append(v)
    load = [0] * procs
    proc = [-1] * prep.n
    dur = prep.dur

    def place(members: list[int]) -> bool:
        need = sum(dur[v] for v in members)
        aff = [0] * procs
        mset = set(members)
        for v in members:
            for u, _, _, b in prep.preds[v]:
                if u not in mset and proc[u] >= 0:
                    aff[proc[u]] += b
            for w, _, _, b in prep.succs[v]:
                if w not in mset and proc[w] >= 0:
                    aff[proc[w]] += b
        best = None
        for p in range(procs):
            if load[p] + need <= ii:
                key = (aff[p], load[p])
                if best is None or key > best[0]:
                    best = (key, p)
        if best is None:
            return False
        for v in members:
            proc[v] = best[1]
        load[best[1]] += need
        return True

    for members in sorted(clusters.values(), key=lambda m: -sum(dur[v] for v in m)):
        if place(members):
            continue
        for v in sorted(members, key=lambda v: -dur[v]):
            if not place([v]):
                return None
    return proc


def reduce_comm(prep: IndexedGraph, procs: int, ii: int, t: list[int], proc: list[int],
                 passes: int = 3) -> tuple[list[int], list[int]]:
    """Local search at a fixed period: move single tasks next to their neighbours.

    Each task, heaviest traffic first, is tried on the processors of its neighbours, in the
    earliest slot that keeps every edge (all tasks are placed, so both predecessors and
    successors bound the window) and the reservation tables valid; the move is kept if the
    bytes communicated (``comm.bytes_communicated``, evaluated on the sources it changes) drop.
    """
    n, dur, preds, succs = prep.n, prep.dur, prep.preds, prep.succs
    out_e = prep.out_tagged
    mrt = [ModuloTable(ii) for _ in range(procs)]
    for v in range(n):
        mrt[proc[v]].insert(t[v], dur[v], v)

    def contrib(u: int) -> int:
        """Bytes sent by task u (multicast per tag and destination processor)."""
        pu = proc[u]
        groups: dict[tuple[str, int], int] = {}
        tot = 0
        for w, tag, b in out_e[u]:
            q = proc[w]
            if q == pu:
                continue
            if tag:
                key = (tag, q)
                if b > groups.get(key, -1):
                    groups[key] = b
            else:
                tot += b
        return tot + sum(groups.values())

    srcs = [sorted({v} | {u for u, *_ in preds[v]}) for v in range(n)]
    weight = [sum(b for *_, b in preds[v]) + sum(b for *_, b in succs[v]) for v in range(n)]
    order = sorted(range(n), key=lambda v: -weight[v])
    for _ in range(passes):
        improved = False
        for v in order:
            cands = {proc[u] for u, *_ in preds[v]} | {proc[s] for s, *_ in succs[v]}
            cands.discard(proc[v])
            if not cands:
                continue
            old_p, old_t = proc[v], t[v]
            before = sum(contrib(u) for u in srcs[v])
            mrt[old_p].remove(v, dur[v])
            done = False
            for p in sorted(cands):
                lo, hi = None, None
                for u, d, tr, _ in preds[v]:
                    x = t[u] + dur[u] - d * ii + (tr if proc[u] != p else 0)
                    lo = x if lo is None or x > lo else lo
                for s_, d, tr, _ in succs[v]:
                    x = t[s_] + d * ii - dur[v] - (tr if proc[s_] != p else 0)
                    hi = x if hi is None or x < hi else hi
                if lo is None:
                    lo = 0 if hi is None else hi - ii + 1
                if hi is None:
                    hi = lo + ii - 1
                start = mrt[p].earliest(lo, min(hi, lo + ii - 1), dur[v])
                if start is None:
                    continue
                proc[v] = p
                if sum(contrib(u) for u in srcs[v]) < before:
                    t[v] = start
                    mrt[p].insert(start, dur[v], v)
                    done = improved = True
                    break
                proc[v] = old_p
            if not done:
                mrt[old_p].insert(old_t, dur[v], v)
        if not improved:
            break
    return t, proc


__all__ = ["affinity_assign", "reduce_comm"]

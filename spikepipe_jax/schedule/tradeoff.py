r"""Processor assignments that trade period for communication (the budget policy of ``policies.py``).

On a training graph pipelined with gradient delays, the period of a placement is close to its
largest processor load (loops have slack), so the trade-off is between the largest load and the
bytes that cross processors (``comm.bytes_communicated``).  :func:`tradeoff_assignments` walks it
greedily: from a cheap start (all tasks on one processor; the standard pipeline's contiguous
stages), each step takes work off the most loaded processor by moving one task, or all of one
layer's tasks there, to another processor that stays below the current maximum, choosing the move
that adds the fewest bytes per cycle of work moved (moves that remove bytes first).  Every
assignment whose largest load is the lowest seen so far is kept; the Pareto-optimal ones
(largest load, bytes) are returned for the scheduler to turn into periodic schedules
(``modulo_schedule(fixed=...)``).  Co-locating the tasks that share large float tensors
(membranes, deltas, weights of one layer) is what the walk keeps when it can: moving such a task
alone costs its tensor, moving the whole layer costs only spikes and gradients.

Pure Python.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from spikepipe_jax.schedule.comm import bytes_communicated
from spikepipe_jax.schedule.graph import TaskGraph
from spikepipe_jax.schedule.partition import layer_costs, partition_min_max


def _byte_groups(g: TaskGraph):
    """Per task, the (source task, tag) groups of edges it touches, and each group's edges."""
    groups: dict[tuple, list[tuple[int, int, int]]] = {}
    for k, e in enumerate(g.edges):
        if e.src == e.dst:
            continue
        u, v = g.index[e.src], g.index[e.dst]
        key = (u, e.tag) if e.tag else ("edge", k)
        groups.setdefault(key, []).append((u, v, e.bytes))
    touch: list[set] = [set() for _ in g.tasks]
    for key, es in groups.items():
        for u, v, _ in es:
            touch[u].add(key)
            touch[v].add(key)
    return groups, touch


def _group_bytes(es: Sequence[tuple[int, int, int]], proc: Sequence[int]) -> int:
    """Bytes of one (source, tag) group: once per destination processor, the largest edge."""
    best: dict[int, int] = {}
    for u, v, b in es:
        q = proc[v]
        if q != proc[u] and b > best.get(q, -1):
            best[q] = b
    return sum(best.values())


def tradeoff_assignments(g: TaskGraph, processors: int, *, starts: Sequence[Sequence[int]] | None = None,
                         max_steps: int | None = None, max_points: int = 24) -> list[dict[str, int]]:
    """Pareto-optimal assignments ``{task: processor}`` of (largest load, bytes), cheapest first.

    Args:
      g: task graph (layer tasks are moved as groups too).
      processors: P.
      starts: processor per task (by index) to start from; default: all on processor 0, and the
        contiguous layer stages of ``partition_min_max`` when every task has a layer.
      max_steps: moves per start (default ``4 * len(g.tasks)``).
      max_points: at most this many assignments are returned (spread over the front).
    """
    n = len(g.tasks)
    dur = [t.duration for t in g.tasks]
    groups, touch = _byte_groups(g)
    layer_of = [t.layer for t in g.tasks]
    if starts is None:
        starts = [[0] * n]
        if n and all(l >= 0 for l in layer_of):
            costs = layer_costs(g)
            part = partition_min_max(costs, min(processors, len(costs)))
            starts.append([part[l] for l in layer_of])
    steps = 4 * n if max_steps is None else max_steps
    found: dict[tuple[int, ...], tuple[int, int]] = {}

    def record(proc: list[int]) -> None:
        load = [0] * processors
        for v, p in enumerate(proc):
            load[p] += dur[v]
        found.setdefault(tuple(proc), (max(load), bytes_communicated(g, dict(zip(g.names, proc)))))

    for start in starts:
        proc = list(start)
        load = [0] * processors
        for v, p in enumerate(proc):
            load[p] += dur[v]
        record(proc)
        for _ in range(steps):
            top = max(load)
            src = load.index(top)
            on_src = [v for v in range(n) if proc[v] == src]
            moves: list[list[int]] = [[v] for v in on_src if dur[v] > 0]
            by_layer: dict[int, list[int]] = {}
            for v in on_src:
                if layer_of[v] >= 0:
                    by_layer.setdefault(layer_of[v], []).append(v)
            moves += [vs for vs in by_layer.values() if 1 < len(vs) < len(on_src)]
            best = None
            for vs in moves:
                work = sum(dur[v] for v in vs)
                keys = set().union(*(touch[v] for v in vs))
                before = sum(_group_bytes(groups[k], proc) for k in keys)
                for q in range(processors):
                    if q == src or load[q] + work >= top:
                        continue
                    for v in vs:
                        proc[v] = q
                    added = sum(_group_bytes(groups[k], proc) for k in keys) - before
                    for v in vs:
                        proc[v] = src
                    score = (added / work, -work, load[q], q)
                    if best is None or score < best[0]:
                        best = (score, vs, q, work)
            if best is None:
                break
            _, vs, q, work = best
            for v in vs:
                proc[v] = q
            load[src] -= work
            load[q] += work
            if max(load) < top:
                record(proc)

    pts = sorted(found.items(), key=lambda kv: (kv[1][1], kv[1][0]))
    front, best_load = [], None
    for proc, (mx, b) in pts:  # by bytes ascending: keep the ones that lower the largest load
        if best_load is None or mx < best_load:
            front.append(proc)
            best_load = mx
    if len(front) > max_points:
        idx = sorted({round(i * (len(front) - 1) / (max_points - 1)) for i in range(max_points)})
        front = [front[i] for i in idx]
    return [dict(zip(g.names, proc)) for proc in front]


def loads(g: TaskGraph, proc: Mapping[str, int], processors: int) -> list[int]:
    """Work per processor of an assignment."""
    out = [0] * processors
    for t in g.tasks:
        out[proc[t.name]] += t.duration
    return out


__all__ = ["tradeoff_assignments", "loads"]

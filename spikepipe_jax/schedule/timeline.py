"""One event simulator for stage-level pipeline timelines (the baselines' GPipe / ZB-H1 timelines
and the delay walks of ``delays.py``).

Stages run one op at a time.  At each step every stage offers candidate ops (``next_ops``); an op
is ready once its dependencies are done (``deps``: ``(other op, lag)``, it may start at
``end(other) + lag``).  Among the ops that can start earliest over all stages (ties: the lower
stage), the stage runs its candidate of highest priority (lowest ``priority``) among those ready
by then.  With one candidate per stage (a fixed op order per stage) this is the plain "start when
the stage is free and the inputs are there" walk.  Pure Python.
"""

from __future__ import annotations

from typing import Callable, Hashable, Iterable, Mapping, Sequence

Op = Hashable


def simulate(num_stages: int, next_ops: Callable[[int, Mapping[Op, tuple]], Iterable[tuple[object, Op]]],
             deps: Callable[[Op], Iterable[tuple[Op, float]]], duration: Callable[[Op], float],
             ) -> dict[Op, tuple]:
    """Runs the stages to completion; ``{op: (start, end)}``.

    Args:
      num_stages: number of stages (each runs one op at a time).
      next_ops: ``(stage, times so far) -> [(priority, op), ...]``, the stage's candidates now;
        empty when the stage has nothing left.
      deps: op -> ``[(other op, lag), ...]``.
      duration: op -> its duration.

    Raises:
      ValueError: some stage still has ops but none can ever become ready (deadlock).
    """
    times: dict[Op, tuple] = {}
    free = [0] * num_stages

    def ready(op: Op):
        r = 0
        for other, lag in deps(op):
            t = times.get(other)
            if t is None:
                return None
            r = max(r, t[1] + lag)
        return r

    while True:
        best = None
        pending = False
        for s in range(num_stages):
            cands = []
            for prio, op in next_ops(s, times):
                pending = True
                r = ready(op)
                if r is not None:
                    cands.append((max(free[s], r), prio, op))
            if not cands:
                continue
            start = min(c[0] for c in cands)
            c = min((c for c in cands if c[0] <= start), key=lambda c: (c[1], c[0]))
            if best is None or (c[0], s) < (best[0], best[2]):
                best = (c[0], c[2], s)
        if best is None:
            if pending:
                raise ValueError("pipeline simulation deadlocked (inconsistent op order)")
            return times
        start, op, s = best
        end = start + duration(op)
        times[op] = (start, end)
        free[s] = end


def fixed_order(order: Sequence[Sequence[Op]]) -> Callable[[int, Mapping[Op, tuple]], list]:
    """``next_ops`` for a fixed op sequence per stage: the stage's first op not yet run."""
    pos = [0] * len(order)

    def next_ops(s: int, times: Mapping[Op, tuple]) -> list:
        ops = order[s]
        while pos[s] < len(ops) and ops[pos[s]] in times:
            pos[s] += 1
        return [(0, ops[pos[s]])] if pos[s] < len(ops) else []
    return next_ops


__all__ = ["simulate", "fixed_order"]

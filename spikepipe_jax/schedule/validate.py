r"""Schedules (placements + period) and their independent validator.

A periodic (modulo) schedule of a task graph runs every task once per period II.  Task ``v`` is
placed on ``processor`` at ``start`` :math:`s_v \in [0, II)` with ``iteration_offset`` :math:`o_v`:
its instance for iteration :math:`i` runs on that processor during

.. math:: [\,(i + o_v)\,II + s_v,\; (i + o_v)\,II + s_v + t_v\,).

It is valid iff

* **precedence**: every edge :math:`u \to v` with distance :math:`d` satisfies
  :math:`s_v + o_v II + d\,II \ge s_u + o_u II + t_u + c_{uv}`, where :math:`c_{uv}` is the
  transfer time of the edge's bytes when the processors differ (``comm.CommModel``), else 0;
* **resources**: on each processor no two tasks overlap modulo II (nor a task with itself, so
  :math:`t_v \le II`).

:func:`schedule_violations` checks exactly this from the graph, the placements and the period,
sharing no code with the schedulers.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

from spikepipe_jax.schedule.comm import CommModel, bytes_communicated
from spikepipe_jax.schedule.graph import TaskGraph
from spikepipe_jax.schedule.graph_json import graph_from_json, graph_to_json


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where and when a task runs: see the module docstring."""

    task: str
    processor: int
    start: int
    iteration_offset: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "processor": self.processor, "start": self.start,
                "iteration_offset": self.iteration_offset}


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A periodic schedule of ``graph`` on ``processors`` processors.

    Attributes:
      graph: the graph the placements refer to (for split or micro-batched methods this is the
        transformed graph, not the input graph).
      processors: P.
      period: II in cycles.
      placements: one per task of ``graph``.
      method: name of the scheduler that made it.
      comm: link model the schedule was made (and is validated) with.
      info: method-specific plain data (stage map, micro-batches, splits, ...).
    """

    graph: TaskGraph
    processors: int
    period: int
    placements: tuple[Placement, ...]
    method: str = ""
    comm: CommModel = CommModel()
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def processor_of(self) -> dict[str, int]:
        return {p.task: p.processor for p in self.placements}

    @property
    def bytes_communicated(self) -> int:
        return bytes_communicated(self.graph, self.processor_of)

    @property
    def utilization(self) -> float:
        """Busy fraction of the processors: ``sum(durations) / (P * period)``."""
        return self.graph.total_duration / (self.processors * self.period)

    def to_json(self, *, with_graph: bool = False) -> dict[str, Any]:
        d = {"period": self.period, "processors": self.processors,
             "placements": [p.to_json() for p in self.placements],
             "bytes_communicated": self.bytes_communicated, "utilization": self.utilization,
             "comm": self.comm.to_json(), "info": dict(self.info)}
        if with_graph:
            d["graph"] = graph_to_json(self.graph)
        return d


def placements_from_json(items: Iterable[Mapping[str, Any]]) -> tuple[Placement, ...]:
    """Placements from dicts ``{"task", "processor", "start", "iteration_offset"}``."""
    out = []
    for i, p in enumerate(items):
        try:
            out.append(Placement(str(p["task"]), p["processor"], p["start"], p.get("iteration_offset", 0)))
        except (KeyError, TypeError) as err:
            raise ValueError(f"placement #{i} must have task, processor, start: {p!r}") from err
    return tuple(out)


def schedule_from_json(obj: Mapping[str, Any], graph: TaskGraph | None = None,
                       processors: int | None = None) -> Schedule:
    """A :class:`Schedule` from a method entry of ``schedules.json`` (graph given or inside)."""
    if graph is None:
        if "graph" not in obj:
            raise ValueError("schedule JSON has no 'graph' and none was given")
        graph = graph_from_json(obj["graph"])
    comm = CommModel(**obj["comm"]) if "comm" in obj else CommModel()
    return Schedule(graph=graph, processors=int(processors or obj["processors"]),
                    period=obj["period"], placements=placements_from_json(obj["placements"]),
                    method=str(obj.get("method", "")), comm=comm, info=dict(obj.get("info", {})))


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def schedule_violations(graph: TaskGraph, placements: Sequence[Placement], period: int,
                        processors: int, comm: CommModel = CommModel(), *, limit: int = 50) -> list[str]:
    """Every way the schedule breaks the rules of the module docstring (empty list = valid).

    Checks: period and processors positive integers; each task of the graph placed exactly once
    and no unknown task; processor in ``[0, P)``; start an integer in ``[0, period)``; integer
    offsets; precedence with transfer times on every edge; no overlap modulo the period.
    """
    out: list[str] = []
    if not _is_int(period) or period <= 0:
        return [f"period must be a positive integer, got {period!r}"]
    if not _is_int(processors) or processors <= 0:
        return [f"processors must be a positive integer, got {processors!r}"]
    where: dict[str, Placement] = {}
    for p in placements:
        if p.task not in graph.index:
            out.append(f"placement of unknown task {p.task!r}")
            continue
        if p.task in where:
            out.append(f"task {p.task!r} placed twice")
            continue
        if not _is_int(p.processor) or not 0 <= p.processor < processors:
            out.append(f"task {p.task!r}: processor {p.processor!r} not in [0, {processors})")
            continue
        if not _is_int(p.start) or not 0 <= p.start < period:
            out.append(f"task {p.task!r}: start {p.start!r} not an integer in [0, {period})")
            continue
        if not _is_int(p.iteration_offset):
            out.append(f"task {p.task!r}: iteration_offset {p.iteration_offset!r} not an integer")
            continue
        where[p.task] = p
    placed = {p.task for p in placements}
    for t in graph.tasks:
        if t.name not in placed:
            out.append(f"task {t.name!r} not placed")
    if out:
        return out[:limit]
    dur = {t.name: t.duration for t in graph.tasks}
    for e in graph.edges:
        pu, pv = where[e.src], where[e.dst]
        c = comm.transfer_cycles(e.bytes) if pu.processor != pv.processor else 0
        lhs = pv.start + pv.iteration_offset * period + e.distance * period
        rhs = pu.start + pu.iteration_offset * period + dur[e.src] + c
        if lhs < rhs:
            out.append(f"edge {e.src} -> {e.dst} (distance {e.distance}): {e.dst} starts at {lhs} "
                       f"(incl. distance), before {e.src} ends + transfer = {rhs}")
            if len(out) >= limit:
                return out
    busy: dict[int, list[tuple[int, int, str]]] = {}
    for name, p in where.items():
        d = dur[name]
        if d == 0:
            continue
        if d > period:
            out.append(f"task {name!r} lasts {d} > period {period}: overlaps itself")
            continue
        end = p.start + d
        if end <= period:
            busy.setdefault(p.processor, []).append((p.start, end, name))
        else:
            busy.setdefault(p.processor, []).append((p.start, period, name))
            busy.setdefault(p.processor, []).append((0, end - period, name))
    for proc, ivs in busy.items():
        ivs.sort()
        for (a0, a1, an), (b0, b1, bn) in zip(ivs, ivs[1:]):
            if b0 < a1:
                out.append(f"processor {proc}: {an} [{a0},{a1}) overlaps {bn} [{b0},{b1}) modulo {period}")
                if len(out) >= limit:
                    return out
    return out


def validate(schedule: Schedule) -> None:
    """Raises ``ValueError`` listing the violations if the schedule is invalid."""
    bad = schedule_violations(schedule.graph, schedule.placements, schedule.period,
                              schedule.processors, schedule.comm)
    if bad:
        more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
        raise ValueError(f"invalid schedule ({schedule.method or 'unnamed'}): " + "; ".join(bad[:5]) + more)


def normalize(graph: TaskGraph, processors: int, period: int, proc: Mapping[str, int],
              times: Mapping[str, int], *, method: str = "", comm: CommModel = CommModel(),
              info: Mapping[str, Any] | None = None) -> Schedule:
    """Schedule from absolute start times ``t_v`` (iteration 0): ``start = t mod II``,
    ``offset = t // II``, offsets shifted so the smallest is 0."""
    base = min((times[t.name] // period for t in graph.tasks), default=0)
    pls = tuple(Placement(t.name, int(proc[t.name]), times[t.name] % period,
                          times[t.name] // period - base) for t in graph.tasks)
    return Schedule(graph=graph, processors=processors, period=period, placements=pls,
                    method=method, comm=comm, info=dict(info or {}))


__all__ = ["Placement", "Schedule", "schedule_violations", "validate", "normalize",
           "placements_from_json", "schedule_from_json"]

"""Task graphs to and from plain JSON data.

JSON format (:func:`graph_to_json` / :func:`graph_from_json`)::

    {"tasks": [{"name", "duration", "bytes_out", "layer", "kind", ...}],
     "edges": [{"src", "dst", "distance", "bytes", ...}]}

``distance``, ``bytes``, ``bytes_out`` default to 0, ``layer`` to -1 (none), ``kind`` to "".
"""

from __future__ import annotations

from typing import Any, Mapping

from spikepipe_jax.schedule.graph import Edge, Task, TaskGraph, is_int


def graph_to_json(g: TaskGraph) -> dict[str, Any]:
    """Plain-data form ``{"tasks": [...], "edges": [...]}`` (optional fields only when set)."""
    tasks = []
    for t in g.tasks:
        d: dict[str, Any] = {"name": t.name, "duration": t.duration, "bytes_out": t.bytes_out,
                             "layer": t.layer, "kind": t.kind}
        for f in ("bytes_in", "bytes_weights", "origin", "split_extent"):
            v = getattr(t, f)
            if v:
                d[f] = v
        tasks.append(d)
    edges = []
    for e in g.edges:
        d = {"src": e.src, "dst": e.dst, "distance": e.distance, "bytes": e.bytes}
        if e.tag:
            d["tag"] = e.tag
        edges.append(d)
    return {"tasks": tasks, "edges": edges}


def _json_int(obj: Mapping[str, Any], key: str, default: Any, where: str) -> int:
    v = obj.get(key, default)
    if v is None:
        v = default
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not is_int(v):
        raise ValueError(f"{where}: {key} must be an integer, got {v!r}")
    return v


def graph_from_json(obj: Mapping[str, Any]) -> TaskGraph:
    """Builds a graph from the JSON form (see module docstring).

    Raises:
      ValueError: missing ``tasks``/``name``/``duration``, non-integer or negative numbers, unknown
        tasks in edges, zero-delay cycles.
    """
    if not isinstance(obj, Mapping) or "tasks" not in obj:
        raise ValueError("a task graph must be a JSON object with a 'tasks' list (and 'edges')")
    tasks = []
    for i, t in enumerate(obj["tasks"]):
        where = f"task #{i}"
        if not isinstance(t, Mapping) or "name" not in t:
            raise ValueError(f"{where}: needs a 'name'")
        where = f"task {t['name']!r}"
        if "duration" not in t:
            raise ValueError(f"{where}: needs a 'duration' (cycles)")
        tasks.append(Task(
            name=str(t["name"]), duration=_json_int(t, "duration", None, where),
            bytes_out=_json_int(t, "bytes_out", 0, where), layer=_json_int(t, "layer", -1, where),
            kind=str(t.get("kind") or ""), bytes_in=_json_int(t, "bytes_in", 0, where),
            bytes_weights=_json_int(t, "bytes_weights", 0, where), origin=str(t.get("origin") or ""),
            split_extent=_json_int(t, "split_extent", 0, where)))
    edges = []
    for i, e in enumerate(obj.get("edges") or []):
        where = f"edge #{i}"
        if not isinstance(e, Mapping) or "src" not in e or "dst" not in e:
            raise ValueError(f"{where}: needs 'src' and 'dst'")
        edges.append(Edge(src=str(e["src"]), dst=str(e["dst"]),
                          distance=_json_int(e, "distance", 0, where),
                          bytes=_json_int(e, "bytes", 0, where), tag=str(e.get("tag") or "")))
    return TaskGraph(tuple(tasks), tuple(edges))


__all__ = ["graph_to_json", "graph_from_json"]

r"""The scheduling study: every method on the same graph and costs, and the sweep table.

Methods (names used in ``schedules.json`` and the table):

* ``spikepipe``: the proposed list scheduler (``policies.spikepipe_schedule``) on the training
  graph with B split into its LIF and GEMM parts and LayerPipe2's delays
  (:math:`d_l = 2(L-1-l)`, ``retiming.layerpipe_delays``) on the update loops, splitting long GEMM
  tasks by output columns where that lowers the period;
* ``spikepipe_nosplit``: the same without splitting tasks;
* ``pipedream_1f1b``, ``gpipe``, ``zb_h1``: the standard pipelines of ``baselines.py`` on the
  training graph with B whole.

With ``comm_budget_pct`` the SpikePipe schedules may move at most that percentage of the
training bytes beyond 1F1B's schedule; each case then also reports the communication time
overhead (:func:`comm_time_overhead_pct`), the trade-off curve of its candidates (best speedup
over 1F1B within each extra communication of :data:`BUDGET_LADDER`) and the upper bound any
unsplit schedule can reach within it (``comm_bounds``).  With ``comm_time_budget_pct`` the
SpikePipe schedules also keep that overhead within the limit where a candidate allows it
(``policies.spikepipe_schedule``); 1F1B's overhead is reported next to theirs for reference.

Each method's entry carries its period, placements, bytes communicated, utilisation and the
gradient delays its timeline implies (``delays.delays_for``), so speed and staleness sit side by
side.  This module does no I/O (tables and plots: ``report/schedule_report.py``); the cost model is passed in as functions (``schedule`` does not
import ``hardware``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

from spikepipe_jax.schedule import baselines, bounds, comm_bounds, delays
from spikepipe_jax.schedule.comm import CommModel, bytes_by_tensor, training_bytes
from spikepipe_jax.schedule.graph import TaskGraph
from spikepipe_jax.schedule.graph_json import graph_to_json
from spikepipe_jax.schedule.period_search import modulo_schedule
from spikepipe_jax.schedule.policies import comm_time_overhead_pct, reduction_split_plan, spikepipe_schedule
from spikepipe_jax.schedule.retiming import layerpipe_delays, with_update_distances
from spikepipe_jax.schedule.training_graph import graph_from_tasks, is_training_graph
from spikepipe_jax.schedule.validate import Schedule, validate

METHODS = ("spikepipe", "spikepipe_nosplit", "pipedream_1f1b", "gpipe", "zb_h1")
BASELINES = ("pipedream_1f1b", "gpipe", "zb_h1")


def method_entry(s: Schedule, top_graph: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """JSON entry of one method; includes its graph when it is not the top-level graph."""
    d = s.to_json()
    d["method"] = s.method
    d["bytes_by_tensor"] = bytes_by_tensor(s.graph, s.processor_of)
    try:
        d["delays"] = delays.delays_for(s)
    except ValueError:
        d["delays"] = None  # a graph without layers
    gj = graph_to_json(s.graph)
    if top_graph is None or gj != top_graph:
        d["graph"] = gj
    return d


def _result(top: TaskGraph, processors: int, comm: CommModel, scheds: Mapping[str, Schedule],
            total_bytes: int, lb_split: int | None = None,
            extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    top_json = graph_to_json(top)
    b = bounds.period_bounds(top, processors)
    out = {"graph": top_json, "processors": processors, "lower_bound": b["lower_bound"],
           "lower_bound_split": b["lower_bound"] if lb_split is None else lb_split,
           "bounds": b, "comm": comm.to_json(), "training_bytes": total_bytes,
           "methods": {name: method_entry(s, top_json) for name, s in scheds.items()}}
    out.update(extra or {})
    return out


def compare_training(tasks: Sequence[Mapping[str, Any]], processors: int, *,
                     comm: CommModel = CommModel(), cols: int = 0, dataflow: str = "ws",
                     micro_tasks_fn: Callable[[int], Sequence[Mapping[str, Any]] | None] | None = None,
                     gemm_cycles_fn: Callable[[int, int, int], int] | None = None,
                     split: bool = True, methods: Sequence[str] = METHODS,
                     comm_budget_pct: float | None = None, front_cache: dict | None = None,
                     comm_time_budget_pct: float | None = None,
                     ) -> tuple[dict[str, Any], dict[str, Schedule]]:
    """All methods on one network's training tasks (cost-model format).

    Args:
      tasks: ``hardware.mapping.training_tasks`` output.
      processors: P.
      comm: link model.
      cols, dataflow: the array's columns and dataflow (durations of split GEMM pieces).
      micro_tasks_fn: ``m -> tasks`` for a micro-batch of B/m samples (None if B/m is not an
        integer); None: linear scaling.
      gemm_cycles_fn: ``(m, k, n) -> cycles`` for GEMM pieces.
      split: allow the proposed scheduler to split tasks.
      methods: subset of :data:`METHODS` to run.
      comm_budget_pct: the SpikePipe schedules may move at most this percentage of the
        training bytes more than PipeDream 1F1B's schedule (``training_bytes`` of the graph; the
        1F1B schedule is computed first); None: no budget.
      comm_time_budget_pct: the most communication time overhead (percent,
        :func:`comm_time_overhead_pct`) the SpikePipe schedules may have where a candidate within
        the byte budget allows it (``policies.spikepipe_schedule``); None: no limit.
      front_cache: a dict the caller keeps across calls (e.g. over P) for the exact trade-off
        fronts of small graphs (``comm_bounds.exact_front``).

    Returns:
      ``(result, schedules)``: the ``schedules.json`` dict (top-level graph = the proposed
      method's input graph) and the :class:`Schedule` objects; every schedule is validated.
    """
    num_layers = len(tasks) // 3
    dl = layerpipe_delays(num_layers)
    g_sp = graph_from_tasks(tasks, delays=dl, split_backward=True, cols=cols, dataflow=dataflow)
    g_base = graph_from_tasks(tasks, cols=cols, dataflow=dataflow)

    def split_fn(plan):
        return graph_from_tasks(tasks, delays=dl, split_backward=True, cols=cols, dataflow=dataflow,
                                split=plan, gemm_cycles_fn=gemm_cycles_fn)

    mgf = None
    if micro_tasks_fn is not None:
        def mgf(m):
            t = micro_tasks_fn(m)
            return None if t is None else graph_from_tasks(t, cols=cols, dataflow=dataflow)

    scheds: dict[str, Schedule] = {}
    total = training_bytes(g_base)  # g_base's tasks carry the input tasks' bytes unchanged
    one_f_one_b = None
    if "pipedream_1f1b" in methods:
        one_f_one_b = baselines.pipedream_schedule(g_base, processors, comm=comm)
    budget = None
    if comm_budget_pct is not None:
        budget = comm_budget_pct / 100.0 * total + (one_f_one_b.bytes_communicated if one_f_one_b else 0)
    unsplit = None
    if "spikepipe" in methods or "spikepipe_nosplit" in methods:
        unsplit = spikepipe_schedule(g_sp, processors, comm=comm, comm_budget=budget,
                                     comm_time_budget_pct=comm_time_budget_pct)
    for name in methods:
        if name == "spikepipe":
            s = spikepipe_schedule(g_sp, processors, comm=comm, split_fn=split_fn if split else None,
                                   unsplit=unsplit, comm_budget=budget,
                                   split_batch=int(tasks[0].get("batch", 0) or 0) if split else 0,
                                   split_reduction=split, comm_time_budget_pct=comm_time_budget_pct)
        elif name == "spikepipe_nosplit":
            s = _renamed(unsplit, "spikepipe_nosplit")
        elif name == "pipedream_1f1b":
            s = one_f_one_b
        elif name == "gpipe":
            s = baselines.gpipe_schedule(g_base, processors, comm=comm, micro_graph_fn=mgf)
        elif name == "zb_h1":
            s = baselines.zb_h1_schedule(g_base, processors, comm=comm, micro_graph_fn=mgf)
        else:
            raise ValueError(f"unknown method {name!r}; expected some of {METHODS}")
        validate(s)
        scheds[name] = s
    lb_split = None
    if split:
        lb_split = split_lower_bound(g_sp, processors, split_fn, batch=int(tasks[0].get("batch", 0) or 0),
                                     reduction=True)
    extra: dict[str, Any] = {}
    for name in ("spikepipe", "spikepipe_nosplit", "pipedream_1f1b"):  # 1F1B's: for reference
        if name in scheds:
            extra.setdefault("comm_time_overhead_pct", {})[name] = comm_time_overhead_pct(scheds[name])
    if budget is not None:
        front = None
        if len(g_sp.tasks) <= EXACT_MAX_TASKS:
            cache = front_cache if front_cache is not None else {}
            if g_sp not in cache:
                cache[g_sp] = comm_bounds.exact_front(g_sp, EXACT_MAX_TASKS)
            front = cache[g_sp]
        min_period, how = comm_bounds.min_period_for_budget(g_sp, processors, budget, front=front)
        by_pct = {}
        if one_f_one_b is not None:
            for pct in BUDGET_LADDER:
                cap = one_f_one_b.bytes_communicated + pct / 100.0 * total
                by_pct[str(pct)] = comm_bounds.min_period_for_budget(g_sp, processors, cap, front=front)[0]
        extra["comm_budget"] = {"pct": comm_budget_pct, "bytes": budget, "min_period_nosplit": min_period,
                                "bound": how, "min_period_nosplit_by_pct": by_pct}
    return _result(g_sp, processors, comm, scheds, total, lb_split, extra), scheds


EXACT_MAX_TASKS = 11


def split_lower_bound(g: TaskGraph, processors: int,
                      split_fn: Callable[[Mapping[str, Any]], TaskGraph], batch: int = 0,
                      reduction: bool = False) -> int:
    """Lower bound on the period when tasks may be split (into at most P pieces each).

    ``max(ceil(sum / P), ceil(T_inf), longest task)`` where the sum is the unsplit graph's (a
    split never removes work) and the iteration bound and longest task are those of the graph
    with every splittable task cut into ``min(P, channels)`` pieces (the shortest pieces the
    cost model allows; on os/ws arrays a GEMM with no more output columns than the array gains
    nothing).  With ``batch >= 2`` (batch splits allowed, ``policies.batch_split_plan``), each
    term is the smaller of that and the same term for every layer cut into ``min(P, B)``
    sample blocks (per task, the shorter of its two longest pieces; a weight gradient's piece
    and its partial-sum task count as its pieces); with ``reduction``, likewise for the F and BG
    tasks cut over the channels they reduce (``policies.reduction_split_plan`` at its finest).
    """
    plan = {t.name: min(processors, t.split_extent) for t in g.tasks if t.split_extent > 1}
    graphs = [split_fn({k: v for k, v in plan.items() if v > 1}) if plan else g]
    k = min(processors, batch)
    if k >= 2:
        graphs.append(split_fn({t.name: (k, "batch") for t in g.tasks if t.layer >= 0 and not t.origin}))
    if reduction:
        finest = reduction_split_plan(g, processors, 1)
        if finest:
            graphs.append(split_fn(finest))
    longest: dict[str, int] = {}
    for gi in graphs:
        mine: dict[str, int] = {}
        for t in gi.tasks:
            mine[t.whole] = max(mine.get(t.whole, 0), t.duration)
        for name, d in mine.items():
            longest[name] = min(longest.get(name, d), d)
    parts = [math.ceil(min(gi.total_duration for gi in [g] + graphs) / processors),
             math.ceil(min(bounds.iteration_bound(gi) for gi in graphs)),
             max(longest.values(), default=0)]
    return max(1, max(parts))


def compare_graph(g: TaskGraph, processors: int, *, comm: CommModel = CommModel(),
                  comm_budget_pct: float | None = None,
                  comm_time_budget_pct: float | None = None) -> tuple[dict[str, Any], dict[str, Schedule]]:
    """The proposed scheduler (tasks not split) on any graph, as given (its distances are the
    delays it may use), plus, if the graph is a training graph (one F, B, W task per layer), the
    baselines (which impose their own delays: 1F1B's ``S-1-s``; GPipe and ZB-H1 none, with
    micro-batches) and ``spikepipe_layerpipe``: the proposed scheduler on the same graph with
    LayerPipe2's delays on the update loops, the comparison the study makes, under
    ``comm_budget_pct`` (percent of the training bytes over 1F1B's bytes) and
    ``comm_time_budget_pct`` (:func:`compare_training`)."""
    scheds = {"spikepipe": modulo_schedule(g, processors, comm=comm, method="spikepipe")}
    if is_training_graph(g):
        scheds["pipedream_1f1b"] = baselines.pipedream_schedule(g, processors, comm=comm)
        budget = None
        if comm_budget_pct is not None:
            budget = scheds["pipedream_1f1b"].bytes_communicated + comm_budget_pct / 100.0 * training_bytes(g)
        gl = with_update_distances(g, layerpipe_delays(g.num_layers))
        scheds["spikepipe_layerpipe"] = spikepipe_schedule(gl, processors, comm=comm, comm_budget=budget,
                                                           comm_time_budget_pct=comm_time_budget_pct)
        scheds["gpipe"] = baselines.gpipe_schedule(g, processors, comm=comm)
        scheds["zb_h1"] = baselines.zb_h1_schedule(g, processors, comm=comm)
        scheds = {k: scheds[k] for k in ("spikepipe", "spikepipe_layerpipe", "pipedream_1f1b", "gpipe", "zb_h1")}
    for s in scheds.values():
        validate(s)
    return _result(g, processors, comm, scheds, training_bytes(g)), scheds


def _renamed(s: Schedule, method: str) -> Schedule:
    return dataclasses.replace(s, method=method)


def summary_row(result: Mapping[str, Any], **keys: Any) -> dict[str, Any]:
    """One table row from a :func:`compare_training` result (``keys``: net, array, ...)."""
    m = result["methods"]
    row: dict[str, Any] = dict(keys)
    row.update(processors=result["processors"], lower_bound=result["lower_bound"],
               lower_bound_split=result["lower_bound_split"],
               iteration_bound=round(result["bounds"]["iteration_bound"], 1),
               training_bytes=result["training_bytes"])
    for name, e in m.items():
        row[f"period_{name}"] = e["period"]
        row[f"util_{name}"] = round(e["utilization"], 4)
        row[f"bytes_{name}"] = e["bytes_communicated"]
        row[f"comm_pct_{name}"] = round(100.0 * e["bytes_communicated"] / result["training_bytes"], 4)
        row[f"delays_{name}"] = "-".join(map(str, e["delays"])) if e["delays"] is not None else ""
    for prop in ("spikepipe", "spikepipe_nosplit"):
        if prop not in m:
            continue
        suffix = "" if prop == "spikepipe" else "_nosplit"
        for b in BASELINES:
            if b in m:
                row[f"speedup{suffix}_vs_{b}"] = round(m[b]["period"] / m[prop]["period"], 4)
    if "spikepipe" in m:
        row["gap_to_lower_bound"] = round(m["spikepipe"]["period"] / result["lower_bound_split"], 4)
        row["splits"] = ",".join(f"{k}x{v}" if isinstance(v, int) else f"{k}x{v[0]}{v[1][0]}"
                                 for k, v in sorted(m["spikepipe"]["info"].get("split", {}).items()))
        if "pipedream_1f1b" in m:
            extra = m["spikepipe"]["bytes_communicated"] - m["pipedream_1f1b"]["bytes_communicated"]
            row["extra_comm_pct_vs_1f1b"] = round(100.0 * extra / result["training_bytes"], 4)
    if "spikepipe_nosplit" in m:
        row["gap_nosplit_to_lower_bound"] = round(m["spikepipe_nosplit"]["period"] / result["lower_bound"], 4)
        if "pipedream_1f1b" in m:
            extra = m["spikepipe_nosplit"]["bytes_communicated"] - m["pipedream_1f1b"]["bytes_communicated"]
            row["extra_comm_pct_nosplit_vs_1f1b"] = round(100.0 * extra / result["training_bytes"], 4)
            # the same, counting only what crosses between layers (spikes, input gradients): the
            # accounting in which a layer's membranes, deltas and weights never count as traffic
            inter = [sum(v for k, v in m[x].get("bytes_by_tensor", {}).items() if k in INTER_LAYER)
                     for x in ("spikepipe_nosplit", "pipedream_1f1b")]
            row["extra_comm_pct_nosplit_vs_1f1b_interlayer"] = round(
                100.0 * (inter[0] - inter[1]) / result["training_bytes"], 4)
    for name, v in result.get("comm_time_overhead_pct", {}).items():
        row["comm_time_overhead_pct" + {"spikepipe": "", "spikepipe_nosplit": "_nosplit"}.get(name, "_" + name)] = v
    for name in ("spikepipe", "spikepipe_nosplit"):
        if name in m and "within_time_budget" in m[name]["info"]:
            row["within_time_budget" + ("" if name == "spikepipe" else "_nosplit")] = \
                bool(m[name]["info"]["within_time_budget"])
    cb = result.get("comm_budget")
    if cb is not None:
        row["comm_budget_pct"] = cb["pct"]
        for name in ("spikepipe", "spikepipe_nosplit"):
            if name in m:
                row["within_budget" + ("" if name == "spikepipe" else "_nosplit")] = \
                    bool(m[name]["info"].get("within_budget", True))
        if "pipedream_1f1b" in m and cb["min_period_nosplit"] not in (None, math.inf):
            row["speedup_nosplit_upper_bound_at_budget"] = round(
                m["pipedream_1f1b"]["period"] / cb["min_period_nosplit"], 4)
            row["upper_bound_kind"] = cb["bound"]
        if "pipedream_1f1b" in m and "spikepipe" in m:
            row["tradeoff"] = tradeoff_curve(m["spikepipe"]["info"].get("candidates", []),
                                             m["pipedream_1f1b"], result["training_bytes"])
            row["tradeoff"]["upper_bound"] = {
                pct: round(m["pipedream_1f1b"]["period"] / x, 4)
                for pct, x in cb.get("min_period_nosplit_by_pct", {}).items() if x not in (None, math.inf)}
    return row


#: Tensors that cross between layers (the rest belong to one layer: membranes, deltas, weights).
INTER_LAYER = ("spikes", "grad")

#: Curves of the trade-off: the scheduler's best without / with split tasks, and the bound.
TRADEOFF_KINDS = ("nosplit", "split", "upper_bound")

#: Extra-communication thresholds (percent of training bytes over 1F1B) of the trade-off curves.
BUDGET_LADDER = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0, 200.0)


def tradeoff_curve(candidates: Sequence[Sequence[int]], one_f_one_b: Mapping[str, Any],
                   total_bytes: int) -> dict[str, dict[str, float]]:
    """Best speedup over 1F1B reachable within each extra-communication threshold of
    :data:`BUDGET_LADDER`, from the SpikePipe scheduler's candidates ``[period, bytes, split
    tasks]``: ``{"nosplit": {pct: speedup}, "split": {pct: speedup}}`` (``split`` allows split
    tasks; a threshold no candidate meets is left out).  :func:`summary_row` adds
    ``"upper_bound"``: the most any schedule of the unsplit tasks can reach within each threshold
    (``comm_bounds.min_period_for_budget``)."""
    out: dict[str, dict[str, float]] = {"nosplit": {}, "split": {}}
    for pct in BUDGET_LADDER:
        cap = one_f_one_b["bytes_communicated"] + pct / 100.0 * total_bytes
        for key, ok in (("nosplit", lambda c: c[2] == 0), ("split", lambda c: True)):
            periods = [c[0] for c in candidates if ok(c) and c[1] <= cap]
            if periods:
                out[key][str(pct)] = round(one_f_one_b["period"] / min(periods), 4)
    return out


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Average / max speedups per network and overall, gaps and communication overheads."""
    def agg(sel: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"cases": len(sel)}
        for key in sorted({k for r in sel for k in r if k.startswith(("speedup", "gap", "extra_comm",
                                                                          "comm_pct_spikepipe",
                                                                          "comm_time_overhead"))}):
            vals = [r[key] for r in sel if r.get(key) is not None]
            if vals:
                geo = math.exp(sum(math.log(v) for v in vals) / len(vals)) if all(v > 0 for v in vals) else None
                out[key] = {"mean": round(sum(vals) / len(vals), 4),
                            "geomean": None if geo is None else round(geo, 4),
                            "min": round(min(vals), 4), "max": round(max(vals), 4)}
        for key in ("within_budget", "within_budget_nosplit", "within_time_budget",
                    "within_time_budget_nosplit"):
            flags = [r[key] for r in sel if key in r]
            if flags:
                out[key + "_share"] = round(sum(flags) / len(flags), 4)
        curves = [r["tradeoff"] for r in sel if "tradeoff" in r]
        if curves:
            out["tradeoff_mean"] = {
                kind: {pct: round(sum(c[kind][pct] for c in curves) / len(curves), 4)
                       for pct in map(str, BUDGET_LADDER) if all(pct in c[kind] for c in curves)}
                for kind in TRADEOFF_KINDS if all(kind in c for c in curves)}
            for kind in out["tradeoff_mean"]:
                reach = [float(p) for p, v in out["tradeoff_mean"][kind].items() if v >= 1.6]
                out[f"smallest_budget_pct_for_1_6x_{kind}"] = min(reach) if reach else None
        return out

    nets = sorted({r["net"] for r in rows})
    out = {"all": agg(rows)}
    for net in nets:
        out[net] = agg([r for r in rows if r["net"] == net])
    small = [r for r in rows if r["processors"] <= r.get("num_layers", 10 ** 9)]
    out["processors_le_layers"] = agg(small)
    return out


def tradeoff_by_net_and_p(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``{net: {P: {"nosplit"|"split": {pct: mean speedup}}}}``: the trade-off curves averaged over
    arrays and dataflows (the Pareto fronts of speedup over 1F1B vs extra communication)."""
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for net in sorted({r["net"] for r in rows}):
        for p in sorted({r["processors"] for r in rows if r["net"] == net}):
            curves = [r["tradeoff"] for r in rows if r["net"] == net and r["processors"] == p and "tradeoff" in r]
            if not curves:
                continue
            out.setdefault(net, {})[str(p)] = {
                kind: {pct: round(sum(c[kind][pct] for c in curves) / len(curves), 4)
                       for pct in map(str, BUDGET_LADDER) if all(pct in c[kind] for c in curves)}
                for kind in TRADEOFF_KINDS if all(kind in c for c in curves)}
    return out


def sweep(tasks_fn: Callable[..., Sequence[Mapping[str, Any]]], nets: Sequence[str],
          processors: Sequence[int], arrays: Sequence[tuple[int, int]], dataflows: Sequence[str], *,
          comm: CommModel = CommModel(), batch_of: Callable[[str], int] | None = None,
          gemm_cycles_fn: Callable[..., int] | None = None, split: bool = True,
          comm_budget_pct: float | None = None, comm_time_budget_pct: float | None = None,
          progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Networks x arrays x dataflows x P: one :func:`summary_row` each.

    Args:
      tasks_fn: ``(net, rows, cols, dataflow, batch=None) -> tasks`` (the cost model).
      nets, processors, arrays, dataflows: the grid (arrays as ``(rows, cols)``).
      comm: link model.
      batch_of: ``net -> batch size`` (for micro-batches: B/m must divide); None: linear micro-batches.
      gemm_cycles_fn: ``(m, k, n, rows, cols, dataflow) -> cycles`` for split GEMM pieces.
      split: allow splitting in the proposed scheduler.
      comm_budget_pct: the SpikePipe schedules' budget (:func:`compare_training`).
      comm_time_budget_pct: their communication time limit (:func:`compare_training`).
      progress: optional callback with a one-line message per case.
    """
    rows_out = []
    for net in nets:
        for r, c in arrays:
            for df in dataflows:
                tasks = tasks_fn(net, r, c, df)
                mt = None
                if batch_of is not None:
                    bsz = batch_of(net)

                    def mt(m, net=net, r=r, c=c, df=df, bsz=bsz):
                        return tasks_fn(net, r, c, df, batch=bsz // m) if bsz % m == 0 else None
                gf = None
                if gemm_cycles_fn is not None:
                    def gf(m, k, n, r=r, c=c, df=df):
                        return gemm_cycles_fn(m, k, n, r, c, df)
                fronts: dict = {}
                for p in processors:
                    res, _ = compare_training(tasks, p, comm=comm, cols=c, dataflow=df,
                                              micro_tasks_fn=mt, gemm_cycles_fn=gf, split=split,
                                              comm_budget_pct=comm_budget_pct, front_cache=fronts,
                                              comm_time_budget_pct=comm_time_budget_pct)
                    row = summary_row(res, net=net, array=f"{r}x{c}", rows=r, cols=c, dataflow=df,
                                      num_layers=len(tasks) // 3)
                    rows_out.append(row)
                    if progress is not None:
                        progress(f"{net} {r}x{c} {df} P={p}: spikepipe {row['period_spikepipe']:,} "
                                 f"1f1b x{row.get('speedup_vs_pipedream_1f1b')} "
                                 f"(no split x{row.get('speedup_nosplit_vs_pipedream_1f1b')}, "
                                 f"extra comm {row.get('extra_comm_pct_nosplit_vs_1f1b')} %) "
                                 f"gpipe x{row.get('speedup_vs_gpipe')}")
    return rows_out


__all__ = ["METHODS", "BASELINES", "BUDGET_LADDER", "compare_training", "compare_graph", "method_entry",
           "summary_row", "summarize", "sweep", "tradeoff_curve", "tradeoff_by_net_and_p",
           "comm_time_overhead_pct"]

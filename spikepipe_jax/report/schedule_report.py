"""Schedule-study outputs from results: the sweep table (CSV, Markdown), Gantt charts and speedup
plots (``matplotlib.figure.Figure``, imported lazily: no pyplot, no backend switch).  Reads results
only (``Schedule`` objects and the sweep rows of ``schedule.study``); written atomically."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

_COLORS = {"F": "#4C78A8", "B": "#E45756", "BL": "#F58518", "BG": "#E45756", "W": "#54A24B",
           "U": "#999999", "": "#B279A2"}


def _save(fig, path: str) -> None:
    from spikepipe_jax.io import atomic_save_figure
    atomic_save_figure(path, fig, dpi=110)


_MD_COLUMNS = (
    ("net", "net"), ("array", "array"), ("dataflow", "df"), ("processors", "P"),
    ("lower_bound_split", "LB"), ("period_spikepipe", "SpikePipe"), ("period_spikepipe_nosplit", "no split"),
    ("period_pipedream_1f1b", "1F1B"), ("period_gpipe", "GPipe"), ("period_zb_h1", "ZB-H1"),
    ("speedup_vs_pipedream_1f1b", "x 1F1B"), ("speedup_vs_gpipe", "x GPipe"), ("speedup_vs_zb_h1", "x ZB-H1"),
    ("speedup_nosplit_vs_pipedream_1f1b", "no split x 1F1B"), ("gap_to_lower_bound", "gap"),
    ("util_spikepipe", "util"), ("extra_comm_pct_vs_1f1b", "extra comm %"),
    ("extra_comm_pct_nosplit_vs_1f1b", "no split extra comm %"), ("comm_time_overhead_pct", "comm time %"),
    ("speedup_nosplit_upper_bound_at_budget", "no split x 1F1B bound"),
    ("delays_spikepipe", "delays SpikePipe"), ("delays_pipedream_1f1b", "delays 1F1B"), ("splits", "splits"))


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """All columns of all rows as CSV text."""
    import csv
    import io
    keys: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k not in keys and not isinstance(v, (dict, list)):  # nested data: sweep_summary.json
                keys.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def to_markdown(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any] | None = None) -> str:
    """A summary of speedups per network, then the main columns of every row."""
    lines = []
    if summary:
        lines += ["| scope | cases | SpikePipe / 1F1B mean (max) | / GPipe mean (max) | / ZB-H1 mean (max) | "
                  "no split / 1F1B mean (max) | gap to LB mean | extra comm % vs 1F1B mean (max) | "
                  "no split extra comm % mean (max) | comm time overhead % mean (max) | "
                  "no split / 1F1B upper bound at the budget, mean (max) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for scope, s in summary.items():
            def f(key, stat="mean", s=s):
                v = s.get(key)
                return "" if v is None else f"{v[stat]:.2f}"

            def both(key, f=f):
                return "" if f(key) == "" else f"{f(key)} ({f(key, 'max')})"
            cells = [scope, str(s["cases"]), both("speedup_vs_pipedream_1f1b"), both("speedup_vs_gpipe"),
                     both("speedup_vs_zb_h1"), both("speedup_nosplit_vs_pipedream_1f1b"),
                     f("gap_to_lower_bound"), both("extra_comm_pct_vs_1f1b"),
                     both("extra_comm_pct_nosplit_vs_1f1b"), both("comm_time_overhead_pct"),
                     both("speedup_nosplit_upper_bound_at_budget")]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    cols = [(k, h) for k, h in _MD_COLUMNS if any(k in r for r in rows)]
    lines.append("| " + " | ".join(h for _, h in cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for r in rows:
        cells = []
        for k, _ in cols:
            v = r.get(k, "")
            cells.append(f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_gantt(schedules: Mapping[str, "Schedule"], path: str, *, title: str = "",
               label_tasks: bool = True) -> str:
    """One row of bars per processor and one panel per schedule, over one period.

    A task that wraps around the end of the period is drawn in two parts.  The x axis is the
    time within the period in cycles; bars are coloured by task kind and labelled with the task
    name and its iteration offset (``F3+2``).  Written atomically to ``path`` (PNG).
    """
    from matplotlib.figure import Figure

    names = list(schedules)
    if not names:
        raise ValueError("no schedule to plot")
    fig = Figure(figsize=(11, 1.2 + 0.45 * sum(
        schedules[n].processors for n in names) + 0.6 * len(names)))
    axes = fig.subplots(len(names), 1, squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        s = schedules[name]
        ii = s.period
        for p in s.placements:
            t = s.graph.task(p.task)
            if t.duration == 0:
                continue
            color = _COLORS.get(t.kind, _COLORS[""])
            parts = [(p.start, min(t.duration, ii - p.start))]
            if p.start + t.duration > ii:
                parts.append((0, p.start + t.duration - ii))
            for x, w in parts:
                ax.barh(p.processor, w, left=x, height=0.8, color=color, edgecolor="black",
                        linewidth=0.4)
                if label_tasks and w > 0.04 * ii:
                    ax.text(x + w / 2, p.processor, f"{p.task}+{p.iteration_offset}",
                            ha="center", va="center", fontsize=6, color="white", clip_on=True)
        ax.set_xlim(0, ii)
        ax.set_ylim(-0.6, s.processors - 0.4)
        ax.set_yticks(range(s.processors))
        ax.set_yticklabels([f"P{i}" for i in range(s.processors)], fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{name}: period {ii:,} cycles, {s.bytes_communicated:,} B moved/iteration",
                     fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    axes[-1, 0].set_xlabel("cycle within the period (label: task+iteration offset)")
    if title:
        fig.suptitle(title, fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    else:
        fig.tight_layout()
    _save(fig, path)
    return path


def plot_speedups(rows: Sequence[Mapping], path: str, *, baselines: Sequence[str] = ("pipedream_1f1b", "gpipe"),
                  method: str = "spikepipe") -> str:
    """Speedup of ``method`` (``spikepipe`` or ``spikepipe_nosplit``) over each baseline vs P,
    one panel per network.

    ``rows`` are sweep rows (``study.summary_row``); lines average over dataflows per array.
    """
    prefix = "speedup_nosplit" if method == "spikepipe_nosplit" else "speedup"
    from matplotlib.figure import Figure

    nets = sorted({r["net"] for r in rows})
    if not nets:
        raise ValueError("no rows to plot")
    fig = Figure(figsize=(4.2 * len(nets), 3.4))
    axes = fig.subplots(1, len(nets), squeeze=False)
    styles = {b: ls for b, ls in zip(baselines, ("-", "--", ":", "-."))}
    for ax, net in zip(axes[0], nets):
        arrays = sorted({r["array"] for r in rows if r["net"] == net})
        for ai, arr in enumerate(arrays):
            for b in baselines:
                pts: dict[int, list[float]] = {}
                key = f"{prefix}_vs_{b}"
                for r in rows:
                    if r["net"] == net and r["array"] == arr and r.get(key) is not None:
                        pts.setdefault(r["processors"], []).append(r[key])
                if not pts:
                    continue
                xs = sorted(pts)
                ys = [sum(pts[x]) / len(pts[x]) for x in xs]
                ax.plot(xs, ys, styles[b], marker="o", ms=3, color=f"C{ai}",
                        label=f"{arr} vs {b}")
        ax.axhline(1.0, color="gray", lw=0.6)
        ax.set_title(net, fontsize=10)
        ax.set_xlabel("processors P")
        ax.set_ylabel(f"speedup of {method}")
        ax.legend(fontsize=6)
    fig.tight_layout()
    _save(fig, path)
    return path


def plot_tradeoff(tradeoff: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]], path: str, *,
                  budget_pct: float | None = None) -> str:
    """Pareto fronts: mean speedup over 1F1B (over arrays and dataflows) reachable within an extra
    communication (percent of the training bytes over 1F1B's), one panel per network, one colour
    per P; solid: the scheduler, tasks not split; dotted: splits allowed; dashed: the upper bound
    for unsplit tasks (``schedule.comm_bounds``).  ``tradeoff`` is
    ``study.tradeoff_by_net_and_p``."""
    from matplotlib.figure import Figure

    nets = list(tradeoff)
    if not nets:
        raise ValueError("no trade-off curves to plot")
    fig = Figure(figsize=(4.4 * len(nets), 3.6))
    axes = fig.subplots(1, len(nets), squeeze=False)
    for ax, net in zip(axes[0], nets):
        for i, (p, curves) in enumerate(sorted(tradeoff[net].items(), key=lambda kv: int(kv[0]))):
            for kind, ls in (("nosplit", "-"), ("split", ":"), ("upper_bound", "--")):
                pts = sorted((float(k), v) for k, v in curves.get(kind, {}).items())
                if pts:
                    xs = [max(x, 0.05) for x, _ in pts]  # 0 % drawn at the left edge of the log axis
                    ax.step(xs, [y for _, y in pts], ls, where="post", color=f"C{i % 10}",
                            lw=0.8 if kind == "upper_bound" else 1.4,
                            label=f"P={p}" if kind == "nosplit" else None)
        ax.axhline(1.6, color="gray", lw=0.6, ls="--")
        if budget_pct is not None:
            ax.axvline(max(budget_pct, 0.05), color="k", lw=0.6)
        ax.set_xscale("log")
        ax.set_title(net, fontsize=10)
        ax.set_xlabel("extra communication vs 1F1B (% of training bytes)")
        ax.set_ylabel("speedup over PipeDream 1F1B")
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    _save(fig, path)
    return path


__all__ = ["to_csv", "to_markdown", "plot_gantt", "plot_speedups", "plot_tradeoff"]

"""Gantt charts of periodic schedules (matplotlib, Agg backend, imported lazily)."""

from __future__ import annotations

from typing import Mapping, Sequence

from spikepipe_jax.schedule.validate import Schedule

_COLORS = {"F": "#4C78A8", "B": "#E45756", "BL": "#F58518", "BG": "#E45756", "W": "#54A24B",
           "U": "#999999", "": "#B279A2"}


def _save(fig, path: str) -> None:
    from spikepipe_jax.io import atomic_save_figure
    atomic_save_figure(path, fig, dpi=110)


def plot_gantt(schedules: Mapping[str, Schedule], path: str, *, title: str = "",
               label_tasks: bool = True) -> str:
    """One row of bars per processor and one panel per schedule, over one period.

    A task that wraps around the end of the period is drawn in two parts.  The x axis is the
    time within the period in cycles; bars are coloured by task kind and labelled with the task
    name and its iteration offset (``F3+2``).  Written atomically to ``path`` (PNG).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(schedules)
    if not names:
        raise ValueError("no schedule to plot")
    fig, axes = plt.subplots(len(names), 1, figsize=(11, 1.2 + 0.45 * sum(
        schedules[n].processors for n in names) + 0.6 * len(names)), squeeze=False)
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
    plt.close(fig)
    return path


def plot_speedups(rows: Sequence[Mapping], path: str, *, baselines: Sequence[str] = ("pipedream_1f1b", "gpipe"),
                  method: str = "spikepipe") -> str:
    """Speedup of ``method`` (``spikepipe`` or ``spikepipe_nosplit``) over each baseline vs P,
    one panel per network.

    ``rows`` are sweep rows (``study.summary_row``); lines average over dataflows per array.
    """
    prefix = "speedup_nosplit" if method == "spikepipe_nosplit" else "speedup"
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = sorted({r["net"] for r in rows})
    if not nets:
        raise ValueError("no rows to plot")
    fig, axes = plt.subplots(1, len(nets), figsize=(4.2 * len(nets), 3.4), squeeze=False)
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
    plt.close(fig)
    return path


__all__ = ["plot_gantt", "plot_speedups"]

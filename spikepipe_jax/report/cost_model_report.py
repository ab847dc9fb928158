"""Cost-model sweep outputs from its result columns (``hardware.sweep.sweep``): the CSV and the
figures (``matplotlib.figure.Figure``, no pyplot, no backend or global state; the caller saves
them).  Reads results only (NumPy; no JAX, no cost model)."""

from __future__ import annotations

import csv
import io
from typing import Any, Mapping

import numpy as np

DATAFLOWS = ("os", "ws", "is")  # the codes 0, 1, 2 of hardware.systolic.DATAFLOWS (a test checks)

CSV_COLUMNS = ("network", "num_steps", "batch", "task", "layer", "kind", "rows", "cols",
               "dataflow", "m", "k", "n", "macs", "gemm_cycles", "vector_cycles", "cycles",
               "mapping_eff_pct", "compute_util_pct")


def format_csv(result: Mapping[str, np.ndarray]) -> str:
    """The sweep result as CSV text with a header (:data:`CSV_COLUMNS`)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    cols = [np.asarray(result[c]) for c in CSV_COLUMNS]
    for i in range(len(cols[0])):
        row = []
        for c in cols:
            v = c[i]
            if isinstance(v, (float, np.floating)):
                row.append("" if np.isnan(v) else f"{float(v):.4f}")
            else:
                row.append(str(v.item() if hasattr(v, "item") else v))
        w.writerow(row)
    return buf.getvalue()


def select(result, **where) -> np.ndarray:
    """Mask of the result rows whose columns equal ``where``'s values."""
    mask = np.ones(len(result["cycles"]), bool)
    for key, value in where.items():
        mask &= np.asarray(result[key]) == value
    return mask


def best_dataflow_table(result, net: str, num_steps: int, batch: int):
    """``(layers, arrays, best_code[layer, array])``: dataflow minimising the layer's F+B+W
    GEMM cycles, over the square arrays in ``result``."""
    sel = select(result, network=net, num_steps=num_steps, batch=batch)
    sel &= result["rows"] == result["cols"]
    layers = np.unique(result["layer"][sel])
    arrays = np.unique(result["rows"][sel])
    dfs = [d for d in DATAFLOWS if np.any(sel & (result["dataflow"] == d))]
    best = np.zeros((len(layers), len(arrays)), np.int64)
    for i, l in enumerate(layers):
        for j, r in enumerate(arrays):
            tot = [result["gemm_cycles"][sel & (result["layer"] == l) & (result["rows"] == r)
                                         & (result["dataflow"] == d)].sum() for d in dfs]
            best[i, j] = DATAFLOWS.index(dfs[int(np.argmin(tot))])
    return layers, arrays, best


def utilization_grid(result, net: str, dataflow: str, num_steps: int, batch: int):
    """``(rows, cols, util_pct[r, c])``: useful MACs of a training iteration over ``R*C*``
    (sum of its GEMM cycles), in percent."""
    sel = select(result, network=net, dataflow=dataflow, num_steps=num_steps, batch=batch)
    rows = np.unique(result["rows"][sel])
    cols = np.unique(result["cols"][sel])
    util = np.full((len(rows), len(cols)), np.nan)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            s = sel & (result["rows"] == r) & (result["cols"] == c)
            if s.any():
                util[i, j] = 100.0 * result["macs"][s].sum() / (r * c * result["gemm_cycles"][s].sum())
    return rows, cols, util


def _networks(result) -> list[str]:
    return list(dict.fromkeys(np.asarray(result["network"]).tolist()))


def plot_task_cycles(result: Mapping[str, np.ndarray], ref: Mapping[str, Any]):
    """Bar chart per network: cycles of F, B, W per layer (GEMM solid, vector unit hatched)."""
    from matplotlib.figure import Figure

    nets = _networks(result)
    fig = Figure(figsize=(5 * len(nets), 4), constrained_layout=True)
    axes = fig.subplots(1, len(nets), squeeze=False)[0]
    colors = {"F": "tab:blue", "B": "tab:orange", "W": "tab:green"}
    for ax, net in zip(axes, nets):
        sel = select(result, network=net, **ref)
        layers = np.unique(result["layer"][sel])
        for j, kind in enumerate(("F", "B", "W")):
            g = np.zeros(len(layers))
            v = np.zeros(len(layers))
            for i, l in enumerate(layers):
                s = sel & (result["layer"] == l) & (result["kind"] == kind)
                g[i], v[i] = result["gemm_cycles"][s].sum(), result["vector_cycles"][s].sum()
            x = layers + (j - 1) * 0.27
            ax.bar(x, g, 0.27, color=colors[kind], label=f"{kind} GEMM")
            ax.bar(x, v, 0.27, bottom=g, color=colors[kind], alpha=0.4, hatch="//",
                   label=f"{kind} vector unit")
        ax.set_xticks(layers)
        ax.set_xlabel("weight layer l")
        ax.set_ylabel("cycles per training iteration")
        ax.set_title(f"{net}: {ref['rows']}x{ref['cols']} {ref['dataflow']}, "
                     f"T={ref['num_steps']}, B={ref['batch']}", fontsize=9)
        ax.legend(fontsize=7, ncol=2)
    return fig


def plot_best_dataflow(result: Mapping[str, np.ndarray], ref: Mapping[str, Any]):
    """Heatmap per network: best dataflow (fewest F+B+W GEMM cycles) per layer and square array."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    nets = _networks(result)
    fig = Figure(figsize=(4.5 * len(nets), 4), constrained_layout=True)
    axes = fig.subplots(1, len(nets), squeeze=False)[0]
    palette = ["tab:blue", "tab:orange", "tab:green"]
    cmap = ListedColormap(palette)
    for ax, net in zip(axes, nets):
        layers, arrays, best = best_dataflow_table(result, net, ref["num_steps"], ref["batch"])
        ax.imshow(best, cmap=cmap, vmin=-0.5, vmax=2.5, aspect="auto", origin="lower")
        ax.set_xticks(range(len(arrays)), [f"{a}x{a}" for a in arrays], rotation=45, fontsize=7)
        ax.set_yticks(range(len(layers)), [str(l) for l in layers])
        ax.set_xlabel("array R x C (PEs)")
        ax.set_ylabel("weight layer l")
        ax.set_title(f"{net}: best dataflow (T={ref['num_steps']}, B={ref['batch']})", fontsize=9)
    handles = [Patch(color=palette[i], label=d) for i, d in enumerate(DATAFLOWS)]
    axes[-1].legend(handles=handles, title="dataflow", fontsize=7, loc="upper left",
                    bbox_to_anchor=(1.02, 1.0))
    return fig


def plot_utilization(result: Mapping[str, np.ndarray], ref: Mapping[str, Any]):
    """Heatmaps (network x dataflow) of iteration-level PE utilisation over R x C."""
    from matplotlib.figure import Figure

    nets = _networks(result)
    dfs = [d for d in DATAFLOWS if np.any(result["dataflow"] == d)]
    fig = Figure(figsize=(3.8 * len(dfs), 3.2 * len(nets)), constrained_layout=True)
    axes = fig.subplots(len(nets), len(dfs), squeeze=False)
    for a_row, net in zip(axes, nets):
        for ax, df in zip(a_row, dfs):
            rows, cols, util = utilization_grid(result, net, df, ref["num_steps"], ref["batch"])
            im = ax.imshow(util, origin="lower", vmin=0, vmax=100, cmap="viridis", aspect="auto")
            ax.set_xticks(range(len(cols)), [str(c) for c in cols], fontsize=7)
            ax.set_yticks(range(len(rows)), [str(r) for r in rows], fontsize=7)
            ax.set_xlabel("array columns C (PEs)")
            ax.set_ylabel("array rows R (PEs)")
            ax.set_title(f"{net}, {df}: T={ref['num_steps']}, B={ref['batch']}", fontsize=9)
            fig.colorbar(im, ax=ax, label="PE utilisation (%)")
    return fig


__all__ = ["CSV_COLUMNS", "format_csv", "select", "best_dataflow_table", "utilization_grid", "plot_task_cycles",
           "plot_best_dataflow", "plot_utilization"]

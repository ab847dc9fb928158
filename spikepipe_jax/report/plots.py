"""Figures as PNG bytes (``matplotlib.figure.Figure``, imported lazily: no pyplot, no backend switch,
so a notebook's inline display stays as it was)."""

from __future__ import annotations

import sys
from typing import Sequence

import numpy as np

from spikepipe_jax.io import png_bytes


def figure_png(fig) -> bytes:
    """PNG bytes of a figure; a pyplot figure is then closed (a bare ``Figure`` needs no closing)."""
    data = png_bytes(fig)
    plt = sys.modules.get("matplotlib.pyplot")  # imported by the caller, not here
    if plt is not None:
        plt.close(fig)  # a no-op for a figure pyplot does not manage
    return data


def accuracy_curves_png(records: Sequence[dict], title: str = "Test accuracy vs epoch") -> bytes:
    """One panel per network; per setting the mean test accuracy over seeds with a ±std band."""
    from matplotlib.figure import Figure
    nets = list(dict.fromkeys(r["net"] for r in records))
    fig = Figure(figsize=(5.2 * len(nets), 4.0))
    axes = fig.subplots(1, len(nets), squeeze=False)
    for ax, net in zip(axes[0], nets):
        settings = list(dict.fromkeys(r["setting"] for r in records if r["net"] == net))
        for s in settings:
            curves = [r["curve"] for r in records if r["net"] == net and r["setting"] == s and r["curve"]]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            acc = np.array([[a for _, a in c[:n]] for c in curves]) * 100
            epochs = np.array([e for e, _ in curves[0][:n]]) + 1
            mean, std = acc.mean(0), acc.std(0)
            style = "-" if "+" not in s and "pipeline" not in s else "--"
            ax.plot(epochs, mean, style, label=f"{s} (n={len(curves)})")
            ax.fill_between(epochs, mean - std, mean + std, alpha=0.15)
        ax.set_title(net)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    return figure_png(fig)

"""Figures (matplotlib, Agg backend, imported lazily so the package imports without a display)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from spikepipe_jax.io import png_bytes


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def figure_png(fig) -> bytes:
    """PNG bytes of a pyplot figure, which is then closed."""
    data = png_bytes(fig)
    _plt().close(fig)
    return data


def accuracy_curves_png(records: Sequence[dict], title: str = "Test accuracy vs epoch") -> bytes:
    """One panel per network; per setting the mean test accuracy over seeds with a ±std band."""
    plt = _plt()
    nets = list(dict.fromkeys(r["net"] for r in records))
    fig, axes = plt.subplots(1, len(nets), figsize=(5.2 * len(nets), 4.0), squeeze=False)
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

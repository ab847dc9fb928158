"""Delay-study outputs: JSON of all runs, Markdown/CSV summary table, accuracy-curve PNG."""

from __future__ import annotations

import os
from typing import Sequence

from spikepipe_jax.report.plots import accuracy_curves_png
from spikepipe_jax.report.tables import csv_text, fmt_float, markdown_table

COLUMNS = (
    ("net", "network", str),
    ("setting", "setting", str),
    ("delays", "delays d_l", lambda d: ",".join(map(str, d))),
    ("seeds", "seeds", str),
    ("mean", "test acc (mean)", lambda v: f"{100 * v:.2f} %"),
    ("std", "std", lambda v: f"{100 * v:.2f}"),
    ("degradation_pts", "degradation (pts)", fmt_float(2)),
    ("vs_plain_1f1b", "degradation / plain 1F1B's", fmt_float(2)),
    ("curve_gap_vs_buffer_pts", "curve gap to buffer model (pts)", fmt_float(2)),
)


def write_delay_study(records: Sequence[dict], rows: Sequence[dict], out: str) -> dict[str, str]:
    """Writes ``delay_study.{json,md,csv,png}`` from the runs and their summary rows
    (``train.delay_study.summarize(records)``, computed by the caller: report/ reads results only)."""
    from spikepipe_jax.io import atomic_write_bytes, atomic_write_json, atomic_write_text
    paths = {k: os.path.join(out, f"delay_study.{k}") for k in ("json", "md", "csv", "png")}
    atomic_write_json(paths["json"], {"runs": list(records), "summary": rows})
    atomic_write_text(paths["md"], markdown_table(rows, COLUMNS))
    atomic_write_text(paths["csv"], csv_text(rows, [c[0] for c in COLUMNS] + ["wall_s"]))
    atomic_write_bytes(paths["png"], accuracy_curves_png(records, "Test accuracy vs epoch per delay setting"))
    return paths

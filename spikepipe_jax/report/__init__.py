"""Tables and figures from results (no training or scheduling code here)."""

from spikepipe_jax.report.plots import accuracy_curves_png, figure_png
from spikepipe_jax.report.tables import csv_text, fmt_float, markdown_table
from spikepipe_jax.report.delay_report import write_delay_study

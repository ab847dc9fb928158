"""REPORT.md of ``scripts/reproduce.py``: every number comes from the stage results of this run."""

from __future__ import annotations

import importlib.metadata
import os
from typing import Any, Mapping

from spikepipe_jax.report.delay_report import COLUMNS as DELAY_COLUMNS
from spikepipe_jax.report.tables import markdown_table


def _version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _img(out: str, rel: str, alt: str) -> str:
    return f"![{alt}]({rel})\n" if os.path.exists(os.path.join(out, rel)) else f"*(figure {rel} missing)*\n"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    return str(v)


def _train_section(out: str, r: Mapping) -> list[str]:
    return [
        "## 1. Training (default network)\n",
        f"`{r['config']}` on the bundled digits (fixed 1,438/359 split): **test accuracy "
        f"{100 * r['test_accuracy']:.2f} %** after {r['epochs']} epochs ({r['steps']} steps, batch "
        f"{r['batch']}, T={r['num_steps']}, seed {r['seed']}) in {r['wall_s']:.1f} s.\n",
        _img(out, "train/train_curve.png", "test accuracy per epoch"),
    ]


def _delay_section(out: str, r: Mapping) -> list[str]:
    rows = r["summary"]
    lines = ["## 2. Accuracy cost of pipeline gradient delays\n",
             "Each layer l applies its gradient d_l optimiser steps late (`delayed_gradients`). "
             "Settings: `none` (synchronous), `1f1b` (PipeDream 1F1B, one stage per layer: "
             "d_l = L−1−l), `2x_1f1b` (twice that), `fully_pipelined` (F/B/W timeline), mitigations on "
             "top of 1F1B delays, and the faithful pipeline simulator (per-layer weight versions, with "
             "and without weight stashing). Degradation is in accuracy points vs `none`; the last "
             "column is the degradation left relative to plain 1F1B delays (< 0.5 = cut by more than half).\n",
             markdown_table(rows, DELAY_COLUMNS),
             _img(out, "delay_study/delay_study.png", "test accuracy vs epoch per delay setting")]
    return lines


_REAL_COLUMNS = tuple(c for c in DELAY_COLUMNS if c[0] != "curve_gap_vs_buffer_pts") + (
    ("wall_s", "training time (s, all seeds)", lambda v: f"{v:,.1f}"),)


def _data_line(c: Mapping) -> str:
    def n(v):
        return "all" if not v else f"{v:,}"
    return (f"{c['data']}, {n(c['max_train'])} training / {n(c['max_test'])} test images, {c['epochs']} "
            f"epoch(s), batch {c['batch']}, T={c['num_steps']}, lr {c['learning_rate']:g}")


def _real_delay_section(out: str, r: Mapping) -> list[str]:
    lines = ["## 2b. Pipeline gradient delays on real data (Fashion-MNIST)\n"]
    if "skipped" in r:
        return lines + [f"skipped: {r['skipped']}.\n"]
    data = "; ".join(f"`{net}`: {_data_line(c)}" for net, c in r["configs"].items())
    lines += [f"The study of section 2 on Fashion-MNIST ({data}), {r['seeds']} seed(s) per setting; "
              f"{r['runs']} training runs took **{r['wall_s']:,.1f} s** in all (sum of the runs' wall "
              "times; the last column splits it by setting).\n",
              markdown_table(r["summary"], _REAL_COLUMNS),
              _img(out, "delay_study_real/delay_study.png", "Fashion-MNIST test accuracy vs epoch per delay setting")]
    return lines


def _cost_section(out: str, r: Mapping) -> list[str]:
    agree = [dict(file=a["file"], cases=a["cases"], exact=a["exact"],
                  pct=f"{100 * a['exact'] / max(1, a['cases']):.1f} %") for a in r["agreement"]]
    lines = ["## 3. Systolic-array cost model\n",
             "Closed-form GEMM cycles (SCALE-Sim 3.0.0 CALC-mode semantics) in `jax.numpy`. "
             "Agreement with cycle counts produced by SCALE-Sim itself:\n",
             markdown_table(agree, (("file", "reference", str), ("cases", "cases", str),
                                    ("exact", "exact matches", str), ("pct", "agreement", str))),
             "\nTraining tasks per layer (config arrays: 128×128, weight-stationary; batch and T of each "
             "config; F = synaptic GEMM + LIF forward, B = LIF backward + input-gradient GEMM, "
             "W = weight-gradient GEMM):\n"]
    rows = []
    for net, tasks in r["tasks"].items():
        for t in tasks:
            rows.append(dict(net=net, name=t["name"], cycles=t["cycles"], gemm=t["gemm_cycles"],
                             vec=t["vector_cycles"], macs=t["macs"],
                             shape="—" if not t["gemm"] else f"{t['gemm']['m']}×{t['gemm']['k']}×{t['gemm']['n']}",
                             bytes=t["bytes_in"] + t["bytes_out"]))
    lines.append(markdown_table(rows, (("net", "network", str), ("name", "task", str),
                                       ("cycles", "cycles", _fmt), ("gemm", "GEMM cycles", _fmt),
                                       ("vec", "vector cycles", _fmt), ("shape", "GEMM M×K×N", str),
                                       ("macs", "MACs", _fmt), ("bytes", "bytes in+out", _fmt))))
    lines.append(f"\nSweep ({r['sweep_seconds']} s, jitted and vmapped over networks × arrays × dataflows × T × B):\n")
    for name, alt in (("task_cycles", "cycles per task per layer"), ("best_dataflow", "best dataflow per layer"),
                      ("utilization", "utilisation heatmap")):
        lines.append(_img(out, f"cost_model/{name}.png", alt))
    return lines


def _schedule_section(out: str, r: Mapping) -> list[str]:
    lines = ["## 4. Scheduling pipelined training on P processors\n",
             "Period (cycles per training iteration in steady state) of the SpikePipe modulo list "
             "scheduler vs GPipe, PipeDream 1F1B and ZB-H1 on the same task graph and costs.\n",
             "Summary rows (mean and max speedups over the cases of each scope), then one row per "
             "case (x = speedup of SpikePipe; gap = period / lower bound; util = busy fraction of the "
             "P processors; extra comm % = SpikePipe's bytes crossing processors beyond 1F1B's, as a "
             "percentage of all bytes training moves):\n",
             r["table"],
             _img(out, "schedule/sweep/speedup_vs_P.png", "speedup vs P")]
    if os.path.exists(os.path.join(out, "schedule/sweep/pareto.png")):
        lines += ["\nTrade-off between speed and communication (per network and P, mean over arrays and "
                  "dataflows): the best speedup over 1F1B the scheduler reaches within each extra "
                  "communication (solid: tasks not split; dotted: split allowed) and the upper bound "
                  "for unsplit tasks (dashed, `schedule.comm_bounds`); the vertical line is the budget "
                  "the table above used:\n",
                  _img(out, "schedule/sweep/pareto.png", "speedup vs extra communication")]
    g = r["gantt"]
    lines.append(f"\nGantt charts for `{g['net']}` (P = {g['result'].get('processors')}):\n")
    lines.append(_img(out, "schedule/gantt/gantt.png", "Gantt charts"))
    methods = g["result"].get("methods", {})
    if methods:
        lines.append(markdown_table(
            [dict(m=m, p=e.get("period"), b=e.get("bytes_communicated"), d=e.get("delays")) for m, e in methods.items()],
            (("m", "method", str), ("p", "period (cycles)", _fmt), ("b", "bytes communicated", _fmt),
             ("d", "gradient delays d_l", _fmt))))
    return lines


def write_report(out: str, results: Mapping[str, Mapping], header: Mapping[str, Any]) -> str:
    """Writes ``out/REPORT.md`` (atomically) and returns its path."""
    from spikepipe_jax.io import atomic_write_text
    versions = {p: _version(p) for p in ("jax", "jaxlib", "flax", "optax", "numpy", "ml_collections")}
    lines = ["# SpikePipe reproduction report\n",
             f"- command: `{header['command']}` (scale `{header['scale']}`)",
             f"- wall time: {header['wall_s']} s; machine: {header['machine']}; Python {header['python']}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
             "- seeds: training seed 0 (configs), delay-study seeds 0..n−1; configs in `configs/`",
             "- stage results (JSON) in `stages/`; re-running skips finished stages (`--force` recomputes)\n"]
    sections = dict(train=_train_section, delay_study=_delay_section, delay_study_real=_real_delay_section,
                    cost_model=_cost_section, schedule=_schedule_section)
    for name, fn in sections.items():
        if name in results:
            lines += fn(out, results[name])
            lines.append("")
    path = os.path.join(out, "REPORT.md")
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path

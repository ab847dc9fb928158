"""The delay study: accuracy cost of pipeline gradient delays, and what mitigation buys back.

For each network and *setting* (no delay, pipeline-derived delays, 2x those, mitigations,
the faithful pipeline simulator) and each seed, one full training run via
:func:`spikepipe_jax.train.train_and_evaluate` in ``out/runs/<net>/<setting>/seed<k>``. A run
whose workdir already holds a finished result for the same config is read back, not re-trained,
so an interrupted study resumes where it stopped. Results are plain dicts; tables and figures
are made by :mod:`spikepipe_jax.report`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable, Optional, Sequence

import numpy as np

from spikepipe_jax.experiments import load_config
from spikepipe_jax.train import loop, pipeline


@dataclasses.dataclass(frozen=True)
class Setting:
    """One row of the study: overrides of ``config.pipeline``."""
    name: str
    delays: str = "none"
    delay_scale: int = 1
    mitigation: str = "none"
    simulate: str = "none"
    delay_position: str = "before"

    def apply(self, config):
        config.pipeline.delays = self.delays
        config.pipeline.delay_scale = self.delay_scale
        config.pipeline.mitigation = self.mitigation
        config.pipeline.simulate = self.simulate
        config.pipeline.delay_position = self.delay_position
        return config


BASE_SETTINGS = (
    Setting("none"),
    Setting("1f1b", delays="1f1b"),
    Setting("2x_1f1b", delays="1f1b", delay_scale=2),
    Setting("fully_pipelined", delays="fully_pipelined"),
)
MITIGATION_SETTINGS = (
    Setting("1f1b+weight_prediction", delays="1f1b", mitigation="weight_prediction"),
    Setting("1f1b+lr_scale_sqrt", delays="1f1b", mitigation="lr_scale_sqrt"),
    Setting("1f1b+dc_asgd", delays="1f1b", mitigation="dc_asgd"),
)
SIMULATOR_SETTINGS = (
    Setting("1f1b_pipeline_stash", delays="1f1b", simulate="stash"),
    Setting("1f1b_pipeline_no_stash", delays="1f1b", simulate="no_stash"),
)


def settings_for(net: str, *, mitigate_nets: Sequence[str] = (), simulate_nets: Sequence[str] = (),
                 only: Sequence[str] = ()) -> list[Setting]:
    """The settings a network runs: the base ones, plus the mitigations / the pipeline simulator
    for the networks listed; ``only`` (names) keeps a subset and must name known settings."""
    known = {x.name for x in BASE_SETTINGS + MITIGATION_SETTINGS + SIMULATOR_SETTINGS}
    unknown = sorted(set(only) - known)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; expected names from {sorted(known)}")
    s = list(BASE_SETTINGS)
    if net in mitigate_nets:
        s += MITIGATION_SETTINGS
    if net in simulate_nets:
        s += SIMULATOR_SETTINGS
    return [x for x in s if not only or x.name in only]


def _finished(workdir: str, config) -> Optional[dict]:
    """The final summary of a finished run with the same config, else None."""
    mpath, cpath = os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "config.json")
    if not (os.path.exists(mpath) and os.path.exists(cpath)):
        return None
    with open(cpath) as f:
        if loop.config_differences(json.load(f), loop.config_json(config)):
            return None
    recs = loop.read_metrics(workdir)
    return recs[-1] if recs and recs[-1].get("final") else None


def run_study(nets: Sequence[str], settings_for: Callable[[str], Sequence[Setting]], seeds: Sequence[int],
              out: str, *, config_arg: str = "", overrides: Optional[Callable] = None,
              log: Callable[[str], None] = print) -> list[dict]:
    """Trains every (net, setting, seed) and returns one record per run.

    Args:
      nets: config names (``configs/<net>.py``).
      settings_for: net -> the settings to run for it.
      seeds: PRNG seeds.
      out: study folder; runs go to ``out/runs/<net>/<setting>/seed<k>``.
      config_arg: argument to ``get_config`` (e.g. ``"smoke"``).
      overrides: optional ``fn(config, net)`` applied before the setting (data dir, epochs...).
    """
    records = []
    plan = [(n, s, seed) for n in nets for s in settings_for(n) for seed in seeds]
    t0 = time.perf_counter()
    for i, (net, setting, seed) in enumerate(plan):
        config = load_config(net, config_arg)
        if overrides is not None:
            overrides(config, net)
        setting.apply(config)
        config.seed = seed
        model = loop.validate_config(config)
        delays = pipeline.config_delays(config, model.num_layers)
        workdir = os.path.join(out, "runs", net, setting.name, f"seed{seed}")
        summary = _finished(workdir, config)
        status = "cached"
        if summary is None:
            summary = loop.train_and_evaluate(config, workdir, log=lambda m: None)
            status = "trained"
        records.append(dict(net=net, setting=setting.name, seed=seed, delays=delays,
                            mitigation=setting.mitigation, simulate=setting.simulate,
                            test_accuracy=float(summary["test_accuracy"]), wall_s=float(summary["wall_s"]),
                            curve=loop.eval_curve(workdir)))
        log(f"[{i + 1}/{len(plan)} {time.perf_counter() - t0:6.1f}s] {net:12s} {setting.name:26s} seed {seed} "
            f"test_accuracy {summary['test_accuracy']:.4f} ({status})")
    return records


def summarize(records: Sequence[dict]) -> list[dict]:
    """Mean ± std per (net, setting), degradation vs "none" in points, and for mitigation and
    simulator rows the fraction of the plain pipeline's degradation that remains."""
    rows = []
    by_key: dict[tuple, list] = {}
    for r in records:
        by_key.setdefault((r["net"], r["setting"]), []).append(r)
    means = {k: float(np.mean([r["test_accuracy"] for r in v])) for k, v in by_key.items()}
    for (net, setting), runs in by_key.items():
        accs = np.array([r["test_accuracy"] for r in runs])
        base = means.get((net, "none"))
        degr = None if base is None else 100.0 * (base - accs.mean())
        plain = runs[0]["mitigation"] == "none" and runs[0]["simulate"] == "none"
        ref_name = None if plain else "1f1b"
        remaining = None
        if ref_name and base is not None and (net, ref_name) in means:
            ref_degr = 100.0 * (base - means[(net, ref_name)])
            remaining = None if ref_degr <= 0 else degr / ref_degr
        gap = None
        if runs[0]["simulate"] != "none" and (net, "1f1b") in by_key:
            gap = curve_gap_pts(by_key[(net, "1f1b")], runs)
        rows.append(dict(net=net, setting=setting, delays=runs[0]["delays"], seeds=len(runs),
                         mean=float(accs.mean()), std=float(accs.std(ddof=1)) if len(accs) > 1 else 0.0,
                         degradation_pts=degr, vs_plain_1f1b=remaining, curve_gap_vs_buffer_pts=gap,
                         wall_s=float(np.sum([r["wall_s"] for r in runs]))))
    return rows


def _mean_curve(runs: Sequence[dict]) -> np.ndarray:
    curves = [[a for _, a in r["curve"]] for r in runs if r["curve"]]
    n = min(len(c) for c in curves)
    return np.mean([c[:n] for c in curves], axis=0)


def curve_gap_pts(buffer_runs: Sequence[dict], sim_runs: Sequence[dict]) -> Optional[float]:
    """Mean over epochs of |seed-mean test accuracy of the buffer model − of the simulator|, in points."""
    if not all(r["curve"] for r in list(buffer_runs) + list(sim_runs)):
        return None
    a, b = _mean_curve(buffer_runs), _mean_curve(sim_runs)
    n = min(len(a), len(b))
    return float(100.0 * np.mean(np.abs(a[:n] - b[:n])))

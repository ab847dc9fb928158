"""Sweeps the systolic-array cost model of SNN training and writes a CSV and figures.

Networks x array shapes (8..256, square and not) x dataflows (os/ws/is) x T x batch, evaluated
in one jitted, vmapped call (:func:`spikepipe_jax.hardware.sweep.sweep`).

Command:  python -m scripts.sweep_cost_model --out=runs/cost_model [--quick]
Writes:   <out>/cost_model_sweep.csv (one row per network, T, batch, task, array, dataflow),
          <out>/task_cycles.png, <out>/best_dataflow.png, <out>/utilization.png, <out>/grid.json.
Runtime:  a few seconds on 2 CPU cores (full grid: 40,824 rows).
"""

from __future__ import annotations

import importlib
import json
import os

from absl import app, flags, logging

flags.DEFINE_string("out", None, "Output folder (created if missing).")
flags.DEFINE_bool("quick", False, "Small grid (4 arrays, T=2, B=2), for tests.")
flags.DEFINE_list("networks", ["fc_small", "conv_medium", "vgg_large"],
                  "Network configs (configs/<name>.py) to sweep.")
flags.DEFINE_integer("vector_lanes", 0, "Vector-unit lanes; 0 = one per array column.")
FLAGS = flags.FLAGS


def run(out: str, *, quick: bool, networks: list[str], vector_lanes: int = 0) -> dict:
    """Runs the sweep and writes its outputs into ``out``; returns ``{name: path}``."""
    import matplotlib.pyplot as plt

    from spikepipe_jax import spec
    from spikepipe_jax.hardware import sweep
    from spikepipe_jax.io import atomic_save_figure, atomic_write_text

    os.makedirs(out, exist_ok=True)
    nets = {}
    for name in networks:
        config = importlib.import_module(f"configs.{name}").get_config()
        nets[name] = spec.parse_spec(config.model.layers, config.model.input_shape)
    grid = sweep.default_grid(quick)
    result = sweep.sweep(nets, grid, vector_lanes=vector_lanes)
    ref = sweep.reference_point(grid)
    paths = {"csv": os.path.join(out, "cost_model_sweep.csv"),
             "grid": os.path.join(out, "grid.json")}
    atomic_write_text(paths["csv"], sweep.format_csv(result))
    atomic_write_text(paths["grid"], json.dumps(dict(grid._asdict(), networks=networks,
                                               vector_lanes=vector_lanes, plots=ref), indent=1))
    for name, plot in (("task_cycles", sweep.plot_task_cycles),
                       ("best_dataflow", sweep.plot_best_dataflow),
                       ("utilization", sweep.plot_utilization)):
        fig = plot(result, ref)
        paths[name] = os.path.join(out, f"{name}.png")
        atomic_save_figure(paths[name], fig, dpi=110)
        plt.close(fig)
    logging.info("%d rows; wrote %s", len(result["cycles"]), ", ".join(paths.values()))
    return paths


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
    run(FLAGS.out, quick=FLAGS.quick, networks=FLAGS.networks, vector_lanes=FLAGS.vector_lanes)


if __name__ == "__main__":
    flags.mark_flags_as_required(["out"])
    app.run(main)

"""Sweeps the systolic-array cost model of SNN training and writes a CSV and figures.

Networks x array shapes (8..256, square and not) x dataflows (os/ws/is) x T x batch, evaluated
in one jitted, vmapped call (:func:`spikepipe_jax.hardware.sweep.sweep`).

Command:  python -m scripts.sweep_cost_model --out=runs/cost_model [--quick]
Writes:   <out>/cost_model_sweep.csv (one row per network, T, batch, task, array, dataflow),
          <out>/task_cycles.png, <out>/best_dataflow.png, <out>/utilization.png, <out>/grid.json.
Bad input (an unknown network, an unwritable --out) ends with one ``error: ...`` line, exit 1.
Runtime:  a few seconds on 2 CPU cores (full grid: 40,824 rows).
"""

from __future__ import annotations

from absl import flags

flags.DEFINE_string("out", None, "Output folder (created if missing).")
flags.DEFINE_bool("quick", False, "Small grid (4 arrays, T=2, B=2), for tests.")
flags.DEFINE_list("networks", ["fc_small", "conv_medium", "vgg_large"],
                  "Network configs (configs/<name>.py) to sweep.")
flags.DEFINE_integer("vector_lanes", 0, "Vector-unit lanes; 0 = one per array column.")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {argv[1:]}")
    from spikepipe_jax import experiments
    experiments.write_cost_sweep(FLAGS.out, quick=FLAGS.quick, networks=FLAGS.networks,
                                 vector_lanes=FLAGS.vector_lanes)


if __name__ == "__main__":
    from spikepipe_jax.experiments import run_script
    flags.mark_flags_as_required(["out"])
    run_script(main)

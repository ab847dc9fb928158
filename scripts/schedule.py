"""Schedules pipelined SNN training on P processors: SpikePipe vs standard pipelining.

Commands:
  python -m scripts.schedule --config=configs/vgg_large.py --processors=8 --out=runs/sched
         [--rows=128 --cols=128 --dataflow=ws]        (array defaults: config.hardware)
  python -m scripts.schedule --graph=my_graph.json --processors=4 --out=runs/sched_graph
  python -m scripts.schedule --sweep --out=runs/sched_sweep   (3 nets x P x arrays x dataflows)

Writes:   <out>/schedules.json ({"graph", "processors", "lower_bound", "methods": {name: {"period",
          "placements", "bytes_communicated", "delays", ...}}}; periods and starts in cycles),
          <out>/gantt.png;  with --sweep: <out>/sweep.csv, <out>/sweep.md, <out>/sweep_summary.json,
          <out>/speedup_vs_P.png (SpikePipe with task splitting), <out>/speedup_nosplit_vs_P.png,
          <out>/pareto.png (speedup over 1F1B vs extra communication, per network and P).
          --comm_budget_pct (default 0.5, the paper's) caps the bytes SpikePipe moves beyond 1F1B's;
          --comm_budget_pct=-1 drops the cap (the schedules of earlier versions).
          --comm_time_budget_pct (default 0.5) keeps, where a candidate within the byte budget
          allows it, the communication time overhead (the period with the finite link over the
          period of the same placement with ideal links, minus 1) at most that percentage;
          --comm_time_budget_pct=-1 drops that limit.
Bad input (a graph file that is missing, truncated, has a zero-delay cycle or a negative duration;
a config file that cannot be loaded; --rows/--cols <= 0; an unwritable --out; a
--comm_budget_pct / --comm_time_budget_pct that is not a number or is NaN) ends with one
``error: ...`` line and exit status 1 (``experiments.run_script``).
Runtime:  a few seconds for one network and P; the full sweep (144 cases) a few minutes on one
          core, more with the budget (its trade-off candidates and bounds); see benchmarks/README.md.
"""

from __future__ import annotations

import math

from absl import flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Network config file (configs/<net>.py).",
                                 lock_config=False)
flags.DEFINE_string("graph", None, "Task graph JSON file (instead of --config).")
flags.DEFINE_integer("processors", 4, "Number of processors P.")
flags.DEFINE_integer("rows", None, "Systolic array rows R (default: config.hardware.rows).")
flags.DEFINE_integer("cols", None, "Systolic array columns C (default: config.hardware.cols).")
flags.DEFINE_enum("dataflow", None, ["os", "ws", "is"], "Dataflow (default: config.hardware.dataflow).")
flags.DEFINE_string("out", None, "Output folder (created if missing).")
flags.DEFINE_bool("sweep", False, "Run the study over networks x P x arrays x dataflows.")
flags.DEFINE_list("sweep_nets", ["fc_small", "conv_medium", "vgg_large"], "Networks of the sweep.")
flags.DEFINE_list("sweep_processors", ["2", "3", "4", "6", "8", "9", "12", "16"], "P values of the sweep.")
flags.DEFINE_list("sweep_arrays", ["32x32", "128x128"], "Arrays RxC of the sweep.")
flags.DEFINE_list("sweep_dataflows", ["os", "ws", "is"], "Dataflows of the sweep.")
flags.DEFINE_float("link_bytes_per_cycle", 64.0, "Inter-processor link bandwidth (0 = ideal).")
flags.DEFINE_integer("link_latency", 0, "Inter-processor link latency in cycles.")
flags.DEFINE_bool("split", True, "Let the SpikePipe scheduler split long GEMM tasks.")
flags.DEFINE_float("comm_budget_pct", 0.5, "Bytes the SpikePipe schedules may move beyond PipeDream "
                   "1F1B's, in percent of all training bytes (negative: no budget).")
flags.DEFINE_float("comm_time_budget_pct", 0.5, "Communication time overhead, in percent, the SpikePipe "
                   "schedules may have where a candidate within the byte budget allows it (period with "
                   "the finite link over the ideal-link period of the same placement, minus 1; "
                   "negative: no limit).")
flags.DEFINE_bool("gantt", True, "Draw the Gantt chart.")
FLAGS = flags.FLAGS


def main(argv):
    from spikepipe_jax import experiments

    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.processors <= 0:
        raise ValueError(f"--processors must be positive, got {FLAGS.processors}")
    for name in ("comm_budget_pct", "comm_time_budget_pct"):
        if math.isnan(getattr(FLAGS, name)):
            raise ValueError(f"--{name} must be a number (negative: off), got nan")
    budget = None if FLAGS.comm_budget_pct < 0 else FLAGS.comm_budget_pct
    time_budget = None if FLAGS.comm_time_budget_pct < 0 else FLAGS.comm_time_budget_pct
    if FLAGS.sweep:
        experiments.schedule_sweep(FLAGS.out, nets=FLAGS.sweep_nets,
                                   processors=experiments.parse_ints("--sweep_processors", FLAGS.sweep_processors),
                                   arrays=experiments.parse_arrays(FLAGS.sweep_arrays), dataflows=FLAGS.sweep_dataflows,
                                   link_bytes_per_cycle=FLAGS.link_bytes_per_cycle, link_latency=FLAGS.link_latency,
                                   split=FLAGS.split, comm_budget_pct=budget,
                                   comm_time_budget_pct=time_budget)
        return
    config = experiments.config_flag("config")
    if (config is None) == (FLAGS.graph is None):
        raise ValueError("give exactly one of --config=configs/<net>.py and --graph=FILE.json (or --sweep)")
    experiments.schedule_one(FLAGS.out, config=config, graph_path=FLAGS.graph,
                             processors=FLAGS.processors, rows=FLAGS.rows, cols=FLAGS.cols,
                             dataflow=FLAGS.dataflow, link_bytes_per_cycle=FLAGS.link_bytes_per_cycle,
                             link_latency=FLAGS.link_latency, split=FLAGS.split, gantt=FLAGS.gantt,
                             comm_budget_pct=budget, comm_time_budget_pct=time_budget)


if __name__ == "__main__":
    from spikepipe_jax.experiments import run_script
    flags.mark_flags_as_required(["out"])
    run_script(main)

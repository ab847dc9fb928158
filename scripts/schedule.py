"""Schedules pipelined SNN training on P processors: SpikePipe vs standard pipelining.

Commands:
  python -m scripts.schedule --config=configs/vgg_large.py --processors=8 --out=runs/sched
         [--rows=128 --cols=128 --dataflow=ws]        (array defaults: config.hardware)
  python -m scripts.schedule --graph=my_graph.json --processors=4 --out=runs/sched_graph
  python -m scripts.schedule --sweep --out=runs/sched_sweep   (3 nets x P x arrays x dataflows)

Writes:   <out>/schedules.json ({"graph", "processors", "lower_bound", "methods": {name: {"period",
          "placements", "bytes_communicated", "delays", ...}}}; periods and starts in cycles),
          <out>/gantt.png;  with --sweep: <out>/sweep.csv, <out>/sweep.md, <out>/sweep_summary.json,
          <out>/speedup_vs_P.png.
Runtime:  about a second per network and P; the full sweep (144 cases) a few minutes on 2 cores.
"""

from __future__ import annotations

import importlib
import json
import os
import time

from absl import app, flags, logging
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
flags.DEFINE_bool("gantt", True, "Draw the Gantt chart.")
FLAGS = flags.FLAGS


def _tasks_fn(net_or_config, rows, cols, dataflow, batch=None):
    from spikepipe_jax.hardware import mapping
    config = net_or_config
    if isinstance(net_or_config, str):
        config = importlib.import_module(f"configs.{net_or_config}").get_config()
    kw = dict(rows=rows, cols=cols, dataflow=dataflow)
    if batch is not None:
        kw["batch"] = batch
    return mapping.training_tasks_from_config(config, **kw)


def _gemm_cycles(m, k, n, rows, cols, dataflow):
    from spikepipe_jax.hardware import systolic
    return int(systolic.gemm_cost_exact(m, k, n, rows, cols, dataflow).cycles)


def run_one(out: str, *, config=None, graph_path: str | None = None, processors: int = 4,
            rows: int | None = None, cols: int | None = None, dataflow: str | None = None,
            link_bytes_per_cycle: float = 64.0, link_latency: int = 0, split: bool = True,
            gantt: bool = True) -> dict:
    """Schedules one network (``config``) or one JSON graph; writes schedules.json (+ Gantt)."""
    from spikepipe_jax.io import atomic_write_json
    from spikepipe_jax.schedule import CommModel, graph_from_json, study
    from spikepipe_jax.schedule.gantt import plot_gantt

    comm = CommModel(link_bytes_per_cycle, link_latency)
    if (config is None) == (graph_path is None):
        raise ValueError("give exactly one of --config and --graph")
    if graph_path is not None:
        with open(graph_path) as f:
            try:
                obj = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"{graph_path}: not valid JSON ({err})") from err
        result, scheds = study.compare_graph(graph_from_json(obj), processors, comm=comm)
        title = f"{os.path.basename(graph_path)}, P={processors}"
    else:
        hw = config.hardware
        rows, cols, dataflow = rows or hw.rows, cols or hw.cols, dataflow or hw.dataflow
        tasks = _tasks_fn(config, rows, cols, dataflow)
        bsz = config.train.batch_size

        def micro(m):
            return _tasks_fn(config, rows, cols, dataflow, batch=bsz // m) if bsz % m == 0 else None

        def gemm(m, k, n):
            return _gemm_cycles(m, k, n, rows, cols, dataflow)

        result, scheds = study.compare_training(tasks, processors, comm=comm, cols=cols,
                                                dataflow=dataflow, micro_tasks_fn=micro,
                                                gemm_cycles_fn=gemm, split=split)
        result.update(array={"rows": rows, "cols": cols, "dataflow": dataflow},
                      batch=bsz, num_steps=config.model.num_steps)
        title = f"{rows}x{cols} {dataflow}, B={bsz}, T={config.model.num_steps}, P={processors}"
    os.makedirs(out, exist_ok=True)
    atomic_write_json(os.path.join(out, "schedules.json"), result)
    if gantt:
        plot_gantt(scheds, os.path.join(out, "gantt.png"), title=title,
                   label_tasks=max(len(s.placements) for s in scheds.values()) <= 400)
    for name, e in result["methods"].items():
        logging.info("%-18s period %12s  bytes %14s  delays %s", name, f"{e['period']:,}",
                     f"{e['bytes_communicated']:,}", e["delays"])
    logging.info("lower bound %s; wrote %s", f"{result['lower_bound']:,}", out)
    return result


def run_sweep(out: str, *, nets, processors, arrays, dataflows, link_bytes_per_cycle: float = 64.0,
              link_latency: int = 0, split: bool = True) -> dict:
    """The study's table: writes sweep.csv, sweep.md, sweep_summary.json, speedup_vs_P.png."""
    from spikepipe_jax.io import atomic_write_json, atomic_write_text
    from spikepipe_jax.schedule import CommModel, study
    from spikepipe_jax.schedule.gantt import plot_speedups

    comm = CommModel(link_bytes_per_cycle, link_latency)
    t0 = time.time()

    def batch_of(net):
        return importlib.import_module(f"configs.{net}").get_config().train.batch_size

    rows = study.sweep(_tasks_fn, nets, processors, arrays, dataflows, comm=comm, batch_of=batch_of,
                       gemm_cycles_fn=_gemm_cycles, split=split, progress=logging.info)
    summary = study.summarize(rows)
    os.makedirs(out, exist_ok=True)
    atomic_write_text(os.path.join(out, "sweep.csv"), study.to_csv(rows))
    atomic_write_text(os.path.join(out, "sweep.md"), study.to_markdown(rows, summary))
    atomic_write_json(os.path.join(out, "sweep_summary.json"),
                      {"summary": summary, "comm": comm.to_json(), "nets": list(nets),
                       "processors": list(processors), "arrays": [f"{r}x{c}" for r, c in arrays],
                       "dataflows": list(dataflows), "seconds": round(time.time() - t0, 1)})
    plot_speedups(rows, os.path.join(out, "speedup_vs_P.png"))
    logging.info("%d cases in %.1f s; wrote %s", len(rows), time.time() - t0, out)
    return summary


def _arrays(items):
    out = []
    for a in items:
        try:
            r, c = (int(x) for x in a.lower().split("x"))
        except ValueError as err:
            raise ValueError(f"array must look like 128x128, got {a!r}") from err
        out.append((r, c))
    return out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
    if FLAGS.processors <= 0:
        raise app.UsageError(f"--processors must be positive, got {FLAGS.processors}")
    if FLAGS.sweep:
        run_sweep(FLAGS.out, nets=FLAGS.sweep_nets, processors=[int(p) for p in FLAGS.sweep_processors],
                  arrays=_arrays(FLAGS.sweep_arrays), dataflows=FLAGS.sweep_dataflows,
                  link_bytes_per_cycle=FLAGS.link_bytes_per_cycle, link_latency=FLAGS.link_latency,
                  split=FLAGS.split)
        return
    if (FLAGS.config is None) == (FLAGS.graph is None):
        raise app.UsageError("give exactly one of --config=configs/<net>.py and --graph=FILE.json "
                             "(or --sweep)")
    run_one(FLAGS.out, config=FLAGS.config, graph_path=FLAGS.graph, processors=FLAGS.processors,
            rows=FLAGS.rows, cols=FLAGS.cols, dataflow=FLAGS.dataflow,
            link_bytes_per_cycle=FLAGS.link_bytes_per_cycle, link_latency=FLAGS.link_latency,
            split=FLAGS.split, gantt=FLAGS.gantt)


if __name__ == "__main__":
    flags.mark_flags_as_required(["out"])
    app.run(main)

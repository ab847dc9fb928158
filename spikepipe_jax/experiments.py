"""Experiment runners that join configs, the cost model and the scheduler, and write results.

Scripts (``scripts/sweep_cost_model.py``, ``scripts/schedule.py``, ``scripts/reproduce.py``) and
tests call these; they are library functions so that no script imports another script (absl
flags are global). Outputs are written atomically (:mod:`spikepipe_jax.io`).
"""

from __future__ import annotations

import importlib
import json
import os
import time

from absl import logging


def load_config(net: str, arg: str = ""):
    """``configs/<net>.py:get_config(arg)`` with a clear error for an unknown name."""
    try:
        module = importlib.import_module(f"configs.{net}")
    except ModuleNotFoundError:
        raise ValueError(f"unknown network config {net!r}: no configs/{net}.py") from None
    return module.get_config(arg)


def exit_with_error(e: BaseException) -> None:
    """The scripts' bad-input exit: one ``error: ...`` line (the message's first line, or the
    exception type when it has none) on stderr, exit status 1, no traceback."""
    import sys
    msg = str(e).strip()
    print(f"error: {msg.splitlines()[0] if msg else type(e).__name__}", file=sys.stderr)
    sys.exit(1)


#: Exceptions that mean bad input (or an unusable path) rather than a bug: scripts end them with
#: one ``error:`` line. ``OSError`` covers unwritable ``--out`` folders and missing files.
BAD_INPUT = (ValueError, OSError, KeyError, FloatingPointError)


def parse_flags(argv):
    """absl flag parsing (``app.run(..., flags_parser=parse_flags)``) that ends a bad flag value
    or an unknown ``--config.<key>`` with one ``error:`` line instead of a traceback."""
    from absl import flags
    try:
        return flags.FLAGS(argv)
    except (KeyError, AttributeError) as e:
        keys = [a for a in argv[1:] if a.startswith("--config.")]
        exit_with_error(ValueError(f"unknown config key {str(e).strip() or type(e).__name__} in {keys}"))
    except (flags.Error, ValueError, TypeError) as e:
        exit_with_error(e)


def run_script(main) -> None:
    """``app.run(main)`` with the scripts' one error path: bad flags (:func:`parse_flags`), a
    usage error, or bad input raised by ``main`` (:data:`BAD_INPUT`) end with one ``error:`` line
    and exit status 1."""
    from absl import app

    def guarded(argv):
        try:
            return main(argv)
        except (app.UsageError, *BAD_INPUT) as e:
            exit_with_error(e)

    app.run(guarded, flags_parser=parse_flags)


def config_flag(name: str = "config"):
    """The value of a ``config_flags.DEFINE_config_file`` flag (``None`` when not given); a file
    that cannot be loaded is a ``ValueError`` naming it (ml_collections defers that failure to
    the first access and raises a multi-line ``OSError``)."""
    from absl import flags
    from ml_collections import config_flags
    import ml_collections
    holder = flags.FLAGS[name]
    try:
        value = holder.value
        if value is not None and not isinstance(value, ml_collections.ConfigDict):
            getattr(value, "model")  # a failed load is a stand-in that raises on first use
        return value
    except OSError as e:
        path = config_flags.get_config_filename(holder)
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise ValueError(f"--{name}={path}: cannot load the config file "
                         f"({lines[-1] if lines else type(e).__name__})") from None


def network_specs(names) -> dict:
    """``{name: parse_spec(...)}`` for network configs ``configs/<name>.py``."""
    from spikepipe_jax import spec
    out = {}
    for name in names:
        config = load_config(name)
        out[name] = spec.parse_spec(config.model.layers, config.model.input_shape)
    return out


def write_cost_sweep(out: str, *, quick: bool, networks: list[str], vector_lanes: int = 0) -> dict:
    """Runs the sweep and writes its outputs into ``out``; returns ``{name: path}``."""
    from spikepipe_jax.hardware import sweep
    from spikepipe_jax.io import atomic_save_figure, atomic_write_text
    from spikepipe_jax.report import cost_model_report as report

    os.makedirs(out, exist_ok=True)
    nets = network_specs(networks)
    grid = sweep.default_grid(quick)
    result = sweep.sweep(nets, grid, vector_lanes=vector_lanes)
    ref = sweep.reference_point(grid)
    paths = {"csv": os.path.join(out, "cost_model_sweep.csv"),
             "grid": os.path.join(out, "grid.json")}
    atomic_write_text(paths["csv"], report.format_csv(result))
    atomic_write_text(paths["grid"], json.dumps(dict(grid._asdict(), networks=networks,
                                               vector_lanes=vector_lanes, plots=ref), indent=1))
    for name, plot in (("task_cycles", report.plot_task_cycles),
                       ("best_dataflow", report.plot_best_dataflow),
                       ("utilization", report.plot_utilization)):
        fig = plot(result, ref)
        paths[name] = os.path.join(out, f"{name}.png")
        atomic_save_figure(paths[name], fig, dpi=110)  # a plain Figure (no pyplot state to close)
    logging.info("%d rows; wrote %s", len(result["cycles"]), ", ".join(paths.values()))
    return paths


def _tasks_fn(net_or_config, rows, cols, dataflow, batch=None):
    from spikepipe_jax.hardware import mapping
    config = net_or_config
    if isinstance(net_or_config, str):
        config = load_config(net_or_config)
    kw = dict(rows=rows, cols=cols, dataflow=dataflow)
    if batch is not None:
        kw["batch"] = batch
    return mapping.training_tasks_from_config(config, **kw)


def _gemm_cycles(m, k, n, rows, cols, dataflow):
    from spikepipe_jax.hardware import systolic
    return int(systolic.gemm_cost_exact(m, k, n, rows, cols, dataflow).cycles)



def schedule_one(out: str, *, config=None, graph_path: str | None = None, processors: int = 4,
            rows: int | None = None, cols: int | None = None, dataflow: str | None = None,
            link_bytes_per_cycle: float = 64.0, link_latency: int = 0, split: bool = True,
            gantt: bool = True, comm_budget_pct: float | None = 0.5,
            comm_time_budget_pct: float | None = 0.5) -> dict:
    """Schedules one network (``config``) or one JSON graph; writes schedules.json (+ Gantt)."""
    from spikepipe_jax.io import atomic_write_json
    from spikepipe_jax.report.schedule_report import plot_gantt
    from spikepipe_jax.schedule import CommModel, graph_from_json, study

    comm = CommModel(link_bytes_per_cycle, link_latency)
    if (config is None) == (graph_path is None):
        raise ValueError("give exactly one of --config and --graph")
    if graph_path is not None:
        with open(graph_path) as f:
            try:
                obj = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"{graph_path}: not valid JSON ({err})") from err
        result, scheds = study.compare_graph(graph_from_json(obj), processors, comm=comm,
                                             comm_budget_pct=comm_budget_pct,
                                             comm_time_budget_pct=comm_time_budget_pct)
        title = f"{os.path.basename(graph_path)}, P={processors}"
    else:
        hw = config.hardware
        rows = hw.rows if rows is None else rows
        cols = hw.cols if cols is None else cols
        dataflow = hw.dataflow if dataflow is None else dataflow
        for what, v in (("rows", rows), ("cols", cols)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{what} must be a positive integer, got {v!r}")
        tasks = _tasks_fn(config, rows, cols, dataflow)
        bsz = config.train.batch_size

        def micro(m):
            return _tasks_fn(config, rows, cols, dataflow, batch=bsz // m) if bsz % m == 0 else None

        def gemm(m, k, n):
            return _gemm_cycles(m, k, n, rows, cols, dataflow)

        result, scheds = study.compare_training(tasks, processors, comm=comm, cols=cols,
                                                dataflow=dataflow, micro_tasks_fn=micro,
                                                gemm_cycles_fn=gemm, split=split,
                                                comm_budget_pct=comm_budget_pct,
                                                comm_time_budget_pct=comm_time_budget_pct)
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


def schedule_sweep(out: str, *, nets, processors, arrays, dataflows, link_bytes_per_cycle: float = 64.0,
              link_latency: int = 0, split: bool = True, comm_budget_pct: float | None = 0.5,
              comm_time_budget_pct: float | None = 0.5) -> dict:
    """The study's table: writes sweep.csv, sweep.md, sweep_summary.json, the speedup plots and
    (with a budget) pareto.png, the trade-off of speedup over 1F1B vs extra communication."""
    from spikepipe_jax.io import atomic_write_json, atomic_write_text
    from spikepipe_jax.report import schedule_report as report
    from spikepipe_jax.schedule import CommModel, study

    comm = CommModel(link_bytes_per_cycle, link_latency)
    t0 = time.time()

    def batch_of(net):
        return load_config(net).train.batch_size

    rows = study.sweep(_tasks_fn, nets, processors, arrays, dataflows, comm=comm, batch_of=batch_of,
                       gemm_cycles_fn=_gemm_cycles, split=split, comm_budget_pct=comm_budget_pct,
                       comm_time_budget_pct=comm_time_budget_pct,
                       progress=logging.info)
    summary = study.summarize(rows)
    tradeoff = study.tradeoff_by_net_and_p(rows)
    os.makedirs(out, exist_ok=True)
    atomic_write_text(os.path.join(out, "sweep.csv"), report.to_csv(rows))
    atomic_write_text(os.path.join(out, "sweep.md"), report.to_markdown(rows, summary))
    atomic_write_json(os.path.join(out, "sweep_summary.json"),
                      {"summary": summary, "comm": comm.to_json(), "nets": list(nets),
                       "processors": list(processors), "arrays": [f"{r}x{c}" for r, c in arrays],
                       "dataflows": list(dataflows), "comm_budget_pct": comm_budget_pct,
                       "comm_time_budget_pct": comm_time_budget_pct,
                       "tradeoff_by_net_and_p": tradeoff, "seconds": round(time.time() - t0, 1)})
    report.plot_speedups(rows, os.path.join(out, "speedup_vs_P.png"))
    report.plot_speedups(rows, os.path.join(out, "speedup_nosplit_vs_P.png"), method="spikepipe_nosplit")
    if tradeoff:
        report.plot_tradeoff(tradeoff, os.path.join(out, "pareto.png"), budget_pct=comm_budget_pct)
    logging.info("%d cases in %.1f s; wrote %s", len(rows), time.time() - t0, out)
    return summary


def parse_ints(flag: str, items) -> list[int]:
    """``["2", "3"]`` -> ``[2, 3]``; a non-integer is a ``ValueError`` naming ``flag`` and the item."""
    try:
        return [int(x) for x in items]
    except ValueError:
        raise ValueError(f"{flag} takes integers, got {list(items)!r}") from None


def parse_arrays(items):
    out = []
    for a in items:
        try:
            r, c = (int(x) for x in a.lower().split("x"))
        except ValueError as err:
            raise ValueError(f"array must look like 128x128, got {a!r}") from err
        out.append((r, c))
    return out



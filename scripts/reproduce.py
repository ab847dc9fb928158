"""One command reproduces the SpikePipe study and writes OUT/REPORT.md with its figures.

    python -m scripts.reproduce --out=runs/reproduce                 # quick scale (~5 min, 2-core CPU)
    python -m scripts.reproduce --out=runs/reproduce_full --scale=full
    python -m scripts.reproduce --out=runs/reproduce --force         # recompute every stage
    python -m scripts.reproduce --out=runs/reproduce --real_data     # quick scale plus the Fashion-MNIST study

Stages (each cached in OUT/stages/<stage>-<hash>.json, keyed by its parameters; a re-run skips
finished stages unless --force):
  1. train        the default network (fc_digits) on the bundled digits
  2. delay_study  accuracy vs pipeline gradient delays, mitigations, pipeline simulator
     delay_study_real  the same on real Fashion-MNIST (fc_small, conv_medium at full scale); runs only
                  where Debian's dataset-fashion-mnist is installed, at quick scale only with
                  --real_data; otherwise REPORT.md says why it was skipped
  3. cost_model   SCALE-Sim agreement, per-task cycles of the three networks, the jitted sweep
  4. schedule     SpikePipe vs GPipe / 1F1B / ZB-H1 over P, arrays, dataflows; Gantt charts
"""

import functools
import hashlib
import json
import os
import platform
import sys
import time

from absl import app, flags

from spikepipe_jax import runtime
from spikepipe_jax.experiments import exit_with_error, run_script

runtime.configure_allocator()  # glibc malloc settings for XLA's per-step buffers (spikepipe_jax/runtime.py)

_OUT = flags.DEFINE_string("out", "runs/reproduce", "Output folder for REPORT.md and everything else.")
_SCALE = flags.DEFINE_enum("scale", "quick", ["smoke", "quick", "full"],
                           "quick: ~5 min on 2 CPU cores; full: about an hour; smoke: seconds (tests).")
_FORCE = flags.DEFINE_bool("force", False, "Recompute stages even if their cached results exist.")
_STAGES = flags.DEFINE_list("stages", ["train", "delay_study", "delay_study_real", "cost_model", "schedule"],
                            "Stages to run.")
_REAL_DATA = flags.DEFINE_bool("real_data", False, "At quick scale, also run delay_study_real (Fashion-MNIST; "
                               "~15+ min on 2 CPU cores). Smoke and full scales run it whenever the data are installed.")

# The real-data study reads Fashion-MNIST from its default folder (data.dir empty), the default of
# fc_small and conv_medium; it is set here too, so that any network added to the list reads it.
_FASHION = {"data.name": "fashion_mnist", "data.dir": ""}
_REAL_SETTINGS = ["none", "1f1b", "fully_pipelined", "1f1b+weight_prediction"]

SCALES = {
    "smoke": dict(
        train=dict(config="fc_digits", arg="smoke"),
        delay_study=dict(nets=["fc_digits"], seeds=1, mitigate_nets=[], simulate_nets=[], arg="smoke",
                         settings=["none", "1f1b"]),
        delay_study_real=dict(nets=["fc_small"], seeds=1, mitigate_nets=[], simulate_nets=[], arg="smoke",
                              settings=["none", "1f1b"],
                              overrides=dict(_FASHION, **{"data.max_train": 64, "data.max_test": 64})),
        cost_model=dict(quick=True),
        schedule=dict(nets=["fc_small"], processors=[2], arrays=[[32, 32]], dataflows=["ws"],
                      gantt_net="fc_small", gantt_processors=2, comm_budget_pct=0.5),
    ),
    "quick": dict(
        train=dict(config="fc_digits"),
        delay_study=dict(nets=["fc_digits", "deep_digits"], seeds=2, mitigate_nets=["deep_digits"],
                         simulate_nets=["deep_digits"],
                         settings=["none", "1f1b", "fully_pipelined", "1f1b+weight_prediction",
                                   "1f1b+lr_scale_sqrt", "1f1b_pipeline_stash", "1f1b_pipeline_no_stash"]),
        delay_study_real=dict(nets=["fc_small"], seeds=3, mitigate_nets=["fc_small"], simulate_nets=[],
                              settings=_REAL_SETTINGS, overrides=_FASHION, opt_in=True),
        cost_model=dict(quick=True),
        schedule=dict(nets=["fc_small", "conv_medium", "vgg_large"], processors=[2, 4, 8, 16],
                      arrays=[[32, 32], [128, 128]], dataflows=["ws"], gantt_net="conv_medium",
                      gantt_processors=4, comm_budget_pct=0.5),
    ),
    "full": dict(
        train=dict(config="fc_digits"),
        delay_study=dict(nets=["fc_digits", "conv_digits", "deep_digits"], seeds=3,
                         mitigate_nets=["deep_digits"], simulate_nets=["deep_digits"], settings=[]),
        delay_study_real=dict(nets=["fc_small", "conv_medium"], seeds=3, mitigate_nets=["fc_small", "conv_medium"],
                              simulate_nets=[], settings=_REAL_SETTINGS, overrides=_FASHION),
        cost_model=dict(quick=False),
        schedule=dict(nets=["fc_small", "conv_medium", "vgg_large"], processors=[2, 3, 4, 6, 8, 9, 12, 16],
                      arrays=[[32, 32], [128, 128]], dataflows=["os", "ws", "is"], gantt_net="conv_medium",
                      gantt_processors=4, comm_budget_pct=0.5),
    ),
}


_START = time.time()  # the script's start, for elapsed times in progress lines


def _log(msg):
    print(f"[{time.time() - _START:7.1f}s] {msg}", flush=True)


def _stage(out, name, params, fn, force):
    """Runs ``fn(stage_dir)`` unless OUT/stages/<name>-<hash>.json exists; returns its result."""
    from spikepipe_jax.io import atomic_write_json
    key = hashlib.sha256(json.dumps([name, params], sort_keys=True).encode()).hexdigest()[:12]
    path = os.path.join(out, "stages", f"{name}-{key}.json")
    if os.path.exists(path) and not force:
        _log(f"stage {name}: cached ({path})")
        with open(path) as f:
            return json.load(f)
    _log(f"stage {name}: running")
    t = time.time()
    result = fn(os.path.join(out, name))
    result["stage_seconds"] = round(time.time() - t, 1)
    atomic_write_json(path, result)
    _log(f"stage {name}: done in {result['stage_seconds']} s")
    return result


def stage_train(params):
    def run(d):
        from spikepipe_jax import train
        from spikepipe_jax.experiments import load_config
        config = load_config(params["config"], params.get("arg", ""))
        summary = train.train_and_evaluate(config, os.path.join(d, "run"),
                                           log=lambda m: _log("  " + m) if "test_accuracy" in m else None)
        curve = train.eval_curve(os.path.join(d, "run"))
        from spikepipe_jax.io import atomic_write_bytes
        from spikepipe_jax.report import accuracy_curves_png
        atomic_write_bytes(os.path.join(d, "train_curve.png"), accuracy_curves_png(
            [dict(net=params["config"], setting="no delay", curve=curve)], "Default training run"))
        _log(f"  {params['config']}: final test accuracy {summary['test_accuracy']:.4f}")
        return dict(config=params["config"], test_accuracy=summary["test_accuracy"], wall_s=summary["wall_s"],
                    steps=summary["step"], epochs=config.train.epochs, num_steps=config.model.num_steps,
                    batch=config.train.batch_size, seed=config.seed, curve=curve)
    return run


def _apply_overrides(config, overrides):
    """Sets dotted ``config`` fields (``{"data.name": "fashion_mnist", ...}``) in place."""
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = config
        for p in parents:
            node = getattr(node, p)
        setattr(node, leaf, value)
    return config


def _delay_study(params, d):
    """The delay study of ``params`` (nets, seeds, settings, mitigate/simulate nets, config arg,
    config overrides) in folder ``d``: runs, summary rows and the study's files; returns the stage
    result (the summary, the total training time and the data each network read)."""
    from spikepipe_jax.experiments import load_config
    from spikepipe_jax.report import write_delay_study
    from spikepipe_jax.train import delay_study as ds

    settings_for = functools.partial(ds.settings_for, mitigate_nets=params["mitigate_nets"],
                                     simulate_nets=params["simulate_nets"], only=params["settings"] or ())
    overrides = params.get("overrides", {})
    records = ds.run_study(params["nets"], settings_for, range(params["seeds"]), d,
                           config_arg=params.get("arg", ""), log=lambda m: _log("  " + m),
                           overrides=lambda config, net: _apply_overrides(config, overrides))
    summary = ds.summarize(records)
    write_delay_study(records, summary, d)
    configs = {}
    for net in params["nets"]:
        c = _apply_overrides(load_config(net, params.get("arg", "")), overrides)
        configs[net] = dict(data=c.data.name, max_train=c.data.max_train, max_test=c.data.max_test,
                            epochs=c.train.epochs, batch=c.train.batch_size, num_steps=c.model.num_steps,
                            learning_rate=c.train.learning_rate)
    return dict(summary=summary, wall_s=round(sum(r["wall_s"] for r in records), 1), runs=len(records),
                seeds=params["seeds"], configs=configs)


def stage_delay_study(params):
    """The delay_study and delay_study_real stages (they differ in parameters only)."""
    return lambda d: _delay_study(params, d)


def real_data_skip_reason(params, real_data_flag):
    """Why the Fashion-MNIST study does not run (None: it runs): the data are not installed, or the
    scale runs it only on request (``--real_data``)."""
    from spikepipe_jax.data.idx import DEFAULT_DIRS
    folder, package = DEFAULT_DIRS["fashion_mnist"]
    if not os.path.isdir(folder):
        return f"Fashion-MNIST not installed in {folder} (apt-get install {package})"
    if params.get("opt_in") and not real_data_flag:
        return "not requested at this scale (about 15+ min on 2 CPU cores); pass --real_data to run it"
    return None


def stage_cost_model(params):
    def run(d):
        import numpy as np

        from spikepipe_jax import experiments, hardware
        from spikepipe_jax.experiments import load_config
        # SCALE-Sim agreement on the reference data shipped in tests/data
        agreement = []
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        for fname in ("scalesim_v3_calc.json", "scalesim_v3_calc_extra.json"):
            path = os.path.join(here, "tests", "data", fname)
            if not os.path.exists(path):
                continue
            with open(path) as f:
                cases = json.load(f)["cases"]
            exact = 0
            for c in cases:
                if c["mode"] == "gemm":
                    got = hardware.gemm_cost_exact(c["M"], c["K"], c["N"], c["rows"], c["cols"], c["dataflow"]).cycles
                else:
                    got = hardware.conv_cycles(**{k: c[k] for k in c if k in _CONV_KEYS},
                                               rows=c["rows"], cols=c["cols"], dataflow=c["dataflow"])
                exact += int(int(got) == int(c["compute_cycles"]))
            agreement.append(dict(file=fname, cases=len(cases), exact=exact))
        # per-task cycles of the three networks (config arrays: 128x128 ws)
        tasks = {}
        for net in ("fc_small", "conv_medium", "vgg_large"):
            config = load_config(net)
            tasks[net] = hardware.training_tasks_from_config(config)
        t = time.time()
        experiments.write_cost_sweep(d, quick=params["quick"], networks=["fc_small", "conv_medium", "vgg_large"])
        return dict(agreement=agreement, tasks=tasks, sweep_seconds=round(time.time() - t, 1),
                    rows_128_ws=dict(rows=128, cols=128, dataflow="ws"), np_version=np.__version__)
    return run


_CONV_KEYS = ("ifmap_h", "ifmap_w", "filt_h", "filt_w", "channels", "num_filt", "stride")


def stage_schedule(params):
    def run(d):
        from spikepipe_jax import experiments
        from spikepipe_jax.experiments import load_config
        summary = experiments.schedule_sweep(os.path.join(d, "sweep"), nets=params["nets"],
                                             processors=params["processors"],
                                             arrays=[tuple(a) for a in params["arrays"]],
                                             dataflows=params["dataflows"],
                                             comm_budget_pct=params.get("comm_budget_pct"))
        one = experiments.schedule_one(os.path.join(d, "gantt"), config=load_config(params["gantt_net"]),
                                       processors=params["gantt_processors"],
                                       comm_budget_pct=params.get("comm_budget_pct"))
        with open(os.path.join(d, "sweep", "sweep.md")) as f:
            table = f.read()
        return dict(summary=summary, table=table, gantt=dict(net=params["gantt_net"], result={
            k: v for k, v in one.items() if k != "graph"}))
    return run


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from spikepipe_jax.report.reproduce_report import write_report
    out, scale = _OUT.value, SCALES[_SCALE.value]
    unknown = set(_STAGES.value) - set(scale)
    if unknown:
        exit_with_error(ValueError(f"unknown stage(s) {sorted(unknown)}; expected {sorted(scale)}"))
    t0 = time.time()
    builders = dict(train=stage_train, delay_study=stage_delay_study, delay_study_real=stage_delay_study,
                    cost_model=stage_cost_model, schedule=stage_schedule)
    results = {}
    try:
        for name in _STAGES.value:
            skip = real_data_skip_reason(scale[name], _REAL_DATA.value) if name == "delay_study_real" else None
            if skip:  # not cached: installing the data or passing the flag runs it next time
                _log(f"stage {name}: skipped ({skip})")
                results[name] = dict(skipped=skip)
                continue
            results[name] = _stage(out, name, dict(scale[name], scale=_SCALE.value),
                                   builders[name](scale[name]), _FORCE.value)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        exit_with_error(e)
    header = dict(command=" ".join(["python -m scripts.reproduce"] + sys.argv[1:]), scale=_SCALE.value,
                  wall_s=round(time.time() - t0, 1), machine=f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                  f"{platform.system()} {platform.release()}", python=platform.python_version())
    path = write_report(out, results, header)
    if "train" in results:
        _log(f"default network {results['train']['config']}: final test accuracy "
             f"{results['train']['test_accuracy']:.4f}")
    _log(f"report: {os.path.abspath(path)}")


if __name__ == "__main__":
    run_script(main)

"""Throughput of the jitted, vmapped cost-model sweep; optional comparison with SCALE-Sim.

Command:  python -m benchmarks.cost_model [--repeats=7] [--array_step=8]
Prints one JSON line: GEMM evaluations per second of
:func:`spikepipe_jax.hardware.sweep.evaluate_grid_device` (compile excluded, median of repeats)
on all training-task GEMMs of fc_small, conv_medium, vgg_large (T in {4, 8, 25}, B in {1, 16,
64}) x every array R, C in {step, 2*step, ..., 256} x 3 dataflows. Goal: >= 1e7 evaluations/s on
a 2-core CPU. When ``scalesim`` (SCALE-Sim) can be imported and run, also the wall time of
SCALE-Sim (CALC mode) and of our model on the same small layer set (the forward GEMMs of the
three networks at batch 1, T = 1 on a 32x32 weight-stationary array), their ratio, and whether
the cycle counts agree; otherwise the reason it was skipped.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
import tempfile
import time

import jax
import numpy as np
from absl import app, flags

flags.DEFINE_integer("repeats", 7, "Timed repeats (median reported).")
flags.DEFINE_integer("array_step", 8, "Array sizes R, C swept in {step, 2 step, ..., 256}.")
flags.DEFINE_bool("scalesim", True, "Also time SCALE-Sim when it is importable.")
FLAGS = flags.FLAGS

NETWORKS = ("fc_small", "conv_medium", "vgg_large")

_SCALESIM_CFG = """[general]
run_name = bench

[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSramSzkB: 256
FilterSramSzkB: 256
OfmapSramSzkB: 128
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Dataflow: {df}
Bandwidth: 10
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: false
SparseRep: ellpack_block
OptimizedMapping: false
BlockSize: 8
RandomNumberGeneratorSeed: 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""


def _networks():
    from spikepipe_jax.experiments import network_specs
    return network_specs(NETWORKS)


def bench_model(repeats: int, step: int) -> dict:
    from spikepipe_jax.hardware import sweep

    sizes = list(range(step, 257, step))
    grid = sweep.SweepGrid(tuple((r, c) for r in sizes for c in sizes), ("os", "ws", "is"),
                           (4, 8, 25), (1, 16, 64))
    table = sweep.task_table(_networks(), grid)
    ar = np.asarray(grid.arrays, np.int32)
    args = [jax.device_put(np.asarray(x, np.int32)) for x in
            (table["m"], table["k"], table["n"], ar[:, 0], ar[:, 1], [0, 1, 2])]
    evals = len(table["m"]) * len(ar) * 3
    t0 = time.perf_counter()
    jax.block_until_ready(sweep.evaluate_grid_device(*args))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(sweep.evaluate_grid_device(*args))
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"evals_per_call": evals, "gemms": len(table["m"]), "arrays": len(ar), "dataflows": 3,
            "median_s": med, "min_s": min(times), "first_call_s": compile_s,
            "evals_per_s": evals / med, "goal_evals_per_s": 1e7, "meets_goal": evals / med >= 1e7}


def _scalesim_cycles(scalesim_cls, m, k, n, rows, cols, df, folder) -> int:
    cfg, topo, lay = (os.path.join(folder, x) for x in ("c.cfg", "t.csv", "l.csv"))
    with open(cfg, "w") as f:
        f.write(_SCALESIM_CFG.format(rows=rows, cols=cols, df=df))
    with open(topo, "w") as f:
        f.write(f"Layer, M, N, K,\nl0, {m}, {n}, {k},\n")
    with open(lay, "w") as f:
        f.write("Layer name, unused,\n")
    out = os.path.join(folder, "out")
    with contextlib.redirect_stdout(io.StringIO()):
        s = scalesim_cls(save_disk_space=True, verbose=False, config=cfg, topology=topo, layout=lay,
                         input_type_gemm=True)
        s.run_scale(top_path=out)
    with open(os.path.join(out, "bench", "COMPUTE_REPORT.csv")) as f:
        return int(float(f.read().strip().splitlines()[1].split(",")[2]))


def bench_scalesim(rows: int = 32, cols: int = 32, df: str = "ws") -> dict:
    try:
        from scalesim.scale_sim import scalesim as scalesim_cls
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        return {"skipped": f"scalesim not importable ({type(e).__name__}: {e})"}
    from spikepipe_jax.hardware import mapping, systolic

    layers = []
    for infos in _networks().values():
        for info in infos:
            layers.append(mapping.layer_gemms(info, 1, 1)["F"])
    m, k, n = (np.asarray(x, np.int32) for x in zip(*layers))
    code = systolic.dataflow_code(df)
    fn = jax.jit(lambda m, k, n: systolic.gemm_cost_unchecked(m, k, n, rows, cols, code).cycles)
    jax.block_until_ready(fn(m, k, n))
    t0 = time.perf_counter()
    ours = np.asarray(jax.block_until_ready(fn(m, k, n)))
    ours_s = time.perf_counter() - t0
    try:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            theirs = [_scalesim_cycles(scalesim_cls, *shape, rows, cols, df, d) for shape in layers]
            theirs_s = time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001 - SCALE-Sim 3.0.0 breaks on some numpy versions
        return {"skipped": f"scalesim failed to run ({type(e).__name__}: {e})"}
    return {"layers": len(layers), "array": f"{rows}x{cols}", "dataflow": df,
            "scalesim_s": theirs_s, "model_s": ours_s, "speedup": theirs_s / max(ours_s, 1e-9),
            "cycles_equal": bool(np.array_equal(ours, np.asarray(theirs)))}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
    result = {"benchmark": "cost_model", "backend": jax.default_backend(),
              "cpu_count": os.cpu_count()}
    result.update(bench_model(FLAGS.repeats, FLAGS.array_step))
    result["scalesim"] = bench_scalesim() if FLAGS.scalesim else {"skipped": "--noscalesim"}
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)

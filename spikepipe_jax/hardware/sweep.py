"""Cost-model sweeps: networks x array shapes x dataflows x T x batch in one jitted, vmapped call.

:func:`sweep` lists every training task's GEMM (see :mod:`spikepipe_jax.hardware.mapping`) for
every network, ``T`` and batch of a :class:`SweepGrid`, evaluates all of them on all array
shapes and dataflows with one call of :func:`evaluate_grid` (``jax.jit`` of a triple ``jax.vmap``
of :func:`spikepipe_jax.hardware.systolic.gemm_cost_unchecked`), and returns flat columns, one
entry per (network, T, batch, task, array, dataflow). The jitted part returns ``folds`` and
``fold_cycles`` (both fit int32 for any realistic layer); ``cycles = folds * fold_cycles - 1``
is formed on the host in int64, so results are exact without enabling x64.

The CSV and figures are made from the result by ``report/cost_model_report.py``.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import jax
import numpy as np

from spikepipe_jax.hardware import mapping
from spikepipe_jax.hardware.systolic import (DATAFLOWS, dataflow_code, gemm_cost,
                                             gemm_cost_unchecked)
from spikepipe_jax.spec import LayerInfo

_SIZES = (8, 16, 32, 64, 128, 256)


class SweepGrid(NamedTuple):
    """What to sweep. ``arrays`` are ``(rows, cols)`` pairs (square and not)."""

    arrays: tuple[tuple[int, int], ...]
    dataflows: tuple[str, ...]
    num_steps: tuple[int, ...]
    batches: tuple[int, ...]


def default_grid(quick: bool = False) -> SweepGrid:
    """Full grid: all R, C in {8, ..., 256} (36 shapes), 3 dataflows, T in {4, 8, 25}, B in
    {1, 16, 64}. ``quick``: 4 shapes, 3 dataflows, T = 2, B = 2 (for tests)."""
    if quick:
        return SweepGrid(((8, 8), (16, 8), (8, 32), (32, 32)), DATAFLOWS, (2,), (2,))
    return SweepGrid(tuple((r, c) for r in _SIZES for c in _SIZES), DATAFLOWS, (4, 8, 25),
                     (1, 16, 64))


def _gemm_eval(m, k, n, rows, cols, code):
    cost = gemm_cost_unchecked(m, k, n, rows, cols, code)
    return cost.folds, cost.fold_cycles, cost.mapping_efficiency, cost.compute_utilization


# [G] x [A] x [D] -> [G, A, D]: vmap over dataflows, then array shapes, then GEMMs.
_grid_eval = jax.vmap(
    jax.vmap(jax.vmap(_gemm_eval, in_axes=(None, None, None, None, None, 0)),
             in_axes=(None, None, None, 0, 0, None)),
    in_axes=(0, 0, 0, None, None, None))


@jax.jit
def evaluate_grid_device(m: jax.Array, k: jax.Array, n: jax.Array, rows: jax.Array,
                         cols: jax.Array, codes: jax.Array):
    """Jitted kernel: GEMMs ``m, k, n`` [G] x arrays ``rows, cols`` [A] x dataflow ``codes`` [D].

    Returns ``(folds, fold_cycles, mapping_eff, compute_util)``, each ``[G, A, D]``. Assumes
    valid input (positive sizes, codes 0..2); see :func:`evaluate_grid`.
    """
    return _grid_eval(m, k, n, rows, cols, codes)


def evaluate_grid(m, k, n, rows, cols, dataflows: Sequence[Any]) -> dict[str, np.ndarray]:
    """Validated :func:`evaluate_grid_device` with exact int64 cycles, on the host.

    Args:
      m, k, n: GEMM sizes, 1-D, length G.
      rows, cols: array shapes, 1-D, length A.
      dataflows: names or codes, length D.

    Returns:
      ``{"cycles", "folds", "fold_cycles", "mapping_eff", "compute_util"}``, each ``[G, A, D]``
      NumPy (cycles int64).

    Raises:
      ValueError: for non-positive sizes, sizes too large for int32 folds, unknown dataflows.
    """
    arrs = {}
    for name, v in (("m", m), ("k", k), ("n", n), ("rows", rows), ("cols", cols)):
        a = np.asarray(v)
        if a.ndim != 1 or a.dtype.kind not in "iu" or not np.all(a > 0):
            raise ValueError(f"{name} must be a 1-D array of positive integers, got {v!r}")
        if np.any(a > 2**30):
            raise ValueError(f"{name} has a size above 2**30: {a.max()}")
        arrs[name] = a.astype(np.int32)
    if len(arrs["m"]) != len(arrs["k"]) or len(arrs["m"]) != len(arrs["n"]):
        raise ValueError("m, k, n must have the same length")
    if len(arrs["rows"]) != len(arrs["cols"]):
        raise ValueError("rows and cols must have the same length")
    codes = np.asarray([dataflow_code(d) for d in dataflows], np.int32)
    # Folds only grow as R and C shrink: the smallest R and C bound them (exact int64 NumPy).
    worst = gemm_cost(arrs["m"][:, None], arrs["k"][:, None], arrs["n"][:, None],
                      arrs["rows"].min(), arrs["cols"].min(), codes[None, :]).folds
    if np.any(worst > 2**31 - 1):
        raise ValueError("too many folds for int32: GEMM sizes too large for these array shapes")
    folds, fold_cycles, eff, util = jax.device_get(evaluate_grid_device(
        arrs["m"], arrs["k"], arrs["n"], arrs["rows"], arrs["cols"], codes))
    folds, fold_cycles = np.asarray(folds, np.int64), np.asarray(fold_cycles, np.int64)
    return {"cycles": folds * fold_cycles - 1, "folds": folds, "fold_cycles": fold_cycles,
            "mapping_eff": np.asarray(eff), "compute_util": np.asarray(util)}


def task_table(networks: Mapping[str, Sequence[LayerInfo]], grid: SweepGrid) -> dict[str, np.ndarray]:
    """Every training task of every network x T x batch, as columns of length G.

    Columns: ``network, num_steps, batch, task, layer, kind, m, k, n, has_gemm, macs`` and
    ``vec_steps, vec_elems`` ([G, J] terms of :func:`mapping.vector_work`, zero-padded).
    Tasks without a GEMM (``B_0``) get ``m = k = n = 1`` and ``has_gemm = False``.
    """
    rows: list[dict[str, Any]] = []
    for net, infos in networks.items():
        for t in grid.num_steps:
            for b in grid.batches:
                order = ([(i, "F") for i in infos] + [(i, "B") for i in reversed(infos)]
                         + [(i, "W") for i in infos])
                for info, kind in order:
                    shape = mapping.layer_gemms(info, b, t)[kind]
                    rows.append(dict(
                        network=net, num_steps=t, batch=b, task=f"{kind}{info.index}",
                        layer=info.index, kind=kind, has_gemm=shape is not None,
                        shape=shape or (1, 1, 1),
                        macs=0 if shape is None else b * t * mapping.useful_macs_per_sample(info),
                        vec=mapping.vector_work(info, kind, b, t)))
    j = max([len(r["vec"]) for r in rows] + [1])
    out = {key: np.asarray([r[key] for r in rows]) for key in
           ("network", "num_steps", "batch", "task", "layer", "kind", "has_gemm", "macs")}
    shapes = np.asarray([r["shape"] for r in rows], np.int64).reshape(-1, 3)
    out["m"], out["k"], out["n"] = shapes[:, 0], shapes[:, 1], shapes[:, 2]
    steps = np.zeros((len(rows), j), np.int64)
    elems = np.zeros((len(rows), j), np.int64)
    for g, r in enumerate(rows):
        for i, (s, e) in enumerate(r["vec"]):
            steps[g, i], elems[g, i] = s, e
    out["vec_steps"], out["vec_elems"] = steps, elems
    return out


def sweep(networks: Mapping[str, Sequence[LayerInfo]], grid: SweepGrid, *,
          vector_lanes: int = 0) -> dict[str, np.ndarray]:
    """Costs of all training tasks over the grid (GEMMs in one jitted, vmapped call).

    Args:
      networks: ``{name: spec.parse_spec(...)}``.
      grid: what to sweep.
      vector_lanes: vector-unit lanes; 0 means one per array column.

    Returns:
      Flat columns (NumPy, length G*A*D, order: task-major, then array, then dataflow):
      ``network, num_steps, batch, task, layer, kind, rows, cols, dataflow, m, k, n, macs,
      gemm_cycles, vector_cycles, cycles, mapping_eff_pct, compute_util_pct``. Tasks without a
      GEMM have ``m = k = n = 0``, ``gemm_cycles = 0`` and NaN efficiencies.
    """
    if isinstance(vector_lanes, bool) or not isinstance(vector_lanes, int) or vector_lanes < 0:
        raise ValueError(f"vector_lanes must be a non-negative integer, got {vector_lanes!r}")
    if not networks:
        raise ValueError("no networks to sweep")
    table = task_table(networks, grid)
    ar = np.asarray(grid.arrays, np.int64).reshape(-1, 2)
    res = evaluate_grid(table["m"], table["k"], table["n"], ar[:, 0], ar[:, 1], grid.dataflows)
    g, a, d = res["cycles"].shape
    has = table["has_gemm"][:, None, None]
    gemm_cycles = np.where(has, res["cycles"], 0)
    lanes = np.where(vector_lanes > 0, vector_lanes, ar[:, 1])                      # [A]
    vec = (table["vec_steps"][:, None, :]
           * -(-table["vec_elems"][:, None, :] // lanes[None, :, None])).sum(-1)   # [G, A]
    vec = np.broadcast_to(vec[:, :, None], (g, a, d))

    def per_task(x):
        return np.broadcast_to(np.asarray(x).reshape((g,) + (1, 1)), (g, a, d)).reshape(-1)

    out = {key: per_task(table[key]) for key in
           ("network", "num_steps", "batch", "task", "layer", "kind", "macs")}
    for key in ("m", "k", "n"):
        out[key] = per_task(np.where(table["has_gemm"], table[key], 0))
    out["rows"] = np.broadcast_to(ar[None, :, 0, None], (g, a, d)).reshape(-1)
    out["cols"] = np.broadcast_to(ar[None, :, 1, None], (g, a, d)).reshape(-1)
    out["dataflow"] = np.broadcast_to(np.asarray(
        [DATAFLOWS[dataflow_code(x)] for x in grid.dataflows])[None, None, :], (g, a, d)).reshape(-1)
    out["gemm_cycles"] = gemm_cycles.reshape(-1)
    out["vector_cycles"] = vec.reshape(-1)
    out["cycles"] = (gemm_cycles + vec).reshape(-1)
    out["mapping_eff_pct"] = np.where(has, 100.0 * res["mapping_eff"], np.nan).reshape(-1)
    out["compute_util_pct"] = np.where(has, 100.0 * res["compute_util"], np.nan).reshape(-1)
    return out


def reference_point(grid: SweepGrid) -> dict[str, Any]:
    """The slice the plots show: largest square array (else the last), largest T and batch,
    weight stationary when swept (else the first dataflow)."""
    squares = [a for a in grid.arrays if a[0] == a[1]]
    rows, cols = max(squares) if squares else grid.arrays[-1]
    df = "ws" if "ws" in grid.dataflows else DATAFLOWS[dataflow_code(grid.dataflows[0])]
    return dict(rows=rows, cols=cols, dataflow=df, num_steps=max(grid.num_steps),
                batch=max(grid.batches))



r"""Closed-form GEMM cycle model of an R x C systolic array, exact against SCALE-Sim 3.0.0.

The model reproduces the ``Total Cycles`` column of SCALE-Sim 3.0.0's COMPUTE_REPORT in its
bandwidth-estimation mode (``InterfaceBandwidth: CALC``), together with its ``Mapping
Efficiency %`` and ``Compute Util %``. It was derived by reading the released source
(``scalesim/compute/systolic_compute_{os,ws,is}.py``, ``memory/double_buffered_scratchpad_mem.py``,
``topology_utils.py``), not by fitting, and is checked against cycle counts produced by
SCALE-Sim itself (``tests/data/scalesim_v3_calc.json``).

GEMM convention (SCALE-Sim's topology order): the layer computes ``O[M, N] = I[M, K] @ W[K, N]``
with ``M`` rows of the input operand (output pixels), ``K`` the reduction (window) size and ``N``
output columns (filters). Each dataflow maps two of the three sizes onto the array, the spatial
rows ``S_r`` onto the ``R`` array rows and ``S_c`` onto the ``C`` array columns, and streams the
third, ``T``, through time:

==========  =====  =====  =====  =================================
dataflow    S_r    S_c    T      cycles per fold, tau
==========  =====  =====  =====  =================================
``"os"``    M      N      K      ``R + C + T - 2``
``"ws"``    K      N      M      ``2R + C + T - 2``
``"is"``    K      M      N      ``2R + C + T - 2``
==========  =====  =====  =====  =================================

With ``F = ceil(S_r / R) * ceil(S_c / C)`` folds (partial folds are padded with idle PEs and
cost a whole fold), SCALE-Sim's total is

.. math::  \text{cycles} = F \cdot \tau - 1 .

Where the released code and the paper (Samajdar et al., "SCALE-Sim: Systolic CNN Accelerator
Simulator", arXiv:1811.02883, eq. for tau = 2 S_r + S_c + T - 2) disagree, this module follows
the code:

* Output stationary: the code's ofmap demand per fold is ``T - 1`` idle rows, then the ``R``
  output rows, skewed over ``C`` columns, i.e. ``R + C + T - 2`` rows. The ``R`` extra cycles the
  paper charges for draining the accumulators out of the array are not counted (the code lets
  the drain overlap the next fold). Weight/input stationary include the ``R``-cycle preload of
  the stationary operand (``2R + C + T - 2``), matching the paper.
* The "-1": SCALE-Sim reports ``max(cycle at which each ofmap demand row is served)``, and demand
  rows are served at cycles ``0, 1, ..., F * tau - 1`` when there are no stalls, so the count is
  0-indexed and one less than the number of cycles the array is busy (see
  :mod:`spikepipe_jax.hardware.simulator`, whose register-level count is exactly ``F * tau``).
  In CALC mode reads never stall (prefetch bandwidth is estimated, not imposed); no write stall
  was observed either, for any case we ran (outputs up to 320k words against a 128 kB ofmap
  SRAM), and the formula assumes ``Stall Cycles == 0``.

Mapping efficiency and compute utilisation are SCALE-Sim's per-fold averages (``used`` = PEs
holding a real element in that fold, ``tau_u`` = the per-fold "cycles_this_fold" of the code,
``R + C + T - 2`` for os and ``2R + 2C + T - 3`` for ws/is, which counts one more skew than tau):

.. math::
   \text{mapping\_eff} = \frac{1}{F}\sum_f \frac{\text{used}_f}{RC} = \frac{S_r S_c}{R C F},
   \qquad
   \text{compute\_util} = \frac{1}{F}\sum_f \frac{\text{used}_f\, T}{R C\, \tau_u}
                        = \text{mapping\_eff} \cdot \frac{T}{\tau_u}.

Conv layers: SCALE-Sim has no padding and uses ``E = ceil((H - f + s) / s)`` output rows
(:func:`scalesim_conv_to_gemm`); this equals ``floor((H - f) / s) + 1`` only when ``s`` divides
``H - f`` (otherwise SCALE-Sim counts one partial window more). The project's padded convs are
converted explicitly with the XLA/PyTorch floor convention by :func:`conv_to_gemm`.

Two levels of API:

* :func:`gemm_cost_unchecked` is the raw kernel: pure ``jax.numpy``, broadcasting, safe to
  ``jax.jit``/``jax.vmap`` (dataflow as an int code ``0/1/2`` = os/ws/is, traced or not). It
  assumes valid input (positive integer sizes, a valid code) and computes in the default integer
  dtype (int32 unless x64 is enabled), so ``F * tau`` may overflow for huge layers: sweeps use its
  ``folds`` and ``fold_cycles`` fields, which fit, and combine them in int64 on the host.
* :func:`gemm_cost` / :func:`gemm_cycles` / :func:`mapping_efficiency` /
  :func:`compute_utilization` validate concrete input (raising ``ValueError`` that names the bad
  argument) and then evaluate the same formula exactly in NumPy (int64, float64); under
  ``jit``/``vmap`` (traced arguments) they cannot raise and are the raw kernel.
  :func:`gemm_cost_exact` returns plain Python numbers for one GEMM.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

DATAFLOWS = ("os", "ws", "is")
"""Dataflow names; the int code of a dataflow is its index here."""

class GemmCost(NamedTuple):
    """Cost of one GEMM on the array (fields broadcast to a common shape).

    Attributes:
      cycles: SCALE-Sim "Total Cycles", ``folds * fold_cycles - 1``.
      folds: number of folds ``ceil(S_r / R) * ceil(S_c / C)``.
      fold_cycles: cycles per fold, tau.
      mapping_efficiency: fraction in [0, 1] (SCALE-Sim prints it x100).
      compute_utilization: fraction in [0, 1] (SCALE-Sim prints it x100).
    """

    cycles: Any
    folds: Any
    fold_cycles: Any
    mapping_efficiency: Any
    compute_utilization: Any


def dataflow_code(dataflow: Any) -> int:
    """Maps ``"os"``/``"ws"``/``"is"`` (any case) or an int 0/1/2 to the int code.

    Raises:
      ValueError: for anything else.
    """
    if isinstance(dataflow, str):
        key = dataflow.strip().lower()
        if key in DATAFLOWS:
            return DATAFLOWS.index(key)
    elif isinstance(dataflow, (int, np.integer)) and not isinstance(dataflow, bool):
        if 0 <= int(dataflow) < len(DATAFLOWS):
            return int(dataflow)
    raise ValueError(f"unknown dataflow {dataflow!r}; expected one of {DATAFLOWS} or a code 0..2")


def _select(code, os_val, ws_val, is_val, xp):
    return xp.where(code == 0, os_val, xp.where(code == 1, ws_val, is_val))


def _cost(m, k, n, rows, cols, code, xp) -> GemmCost:
    """The closed form, over an array module ``xp`` (numpy, jax.numpy, or :class:`_PyScalar` for
    Python scalars); no validation."""
    sr = _select(code, m, k, k, xp)
    sc = _select(code, n, n, m, xp)
    t = _select(code, k, m, n, xp)
    row_folds = -(-sr // rows)
    col_folds = -(-sc // cols)
    folds = row_folds * col_folds
    is_os = code == 0
    fold_cycles = rows + cols + t - 2 + xp.where(is_os, 0, rows)
    util_fold_cycles = xp.where(is_os, fold_cycles, fold_cycles + cols - 1)
    cycles = folds * fold_cycles - 1
    # Ratios are formed factor by factor so that float32 stays accurate for big layers.
    mapping_eff = (sr / (rows * row_folds)) * (sc / (cols * col_folds))
    compute_util = mapping_eff * (t / util_fold_cycles)
    return GemmCost(cycles, folds, fold_cycles, mapping_eff, compute_util)


class _PyScalar:
    """The part of an array namespace that :func:`_cost` uses, on Python scalars (exact ints)."""

    @staticmethod
    def where(cond, x, y):
        return x if cond else y


def gemm_cost_unchecked(m, k, n, rows, cols, code) -> GemmCost:
    """Raw jittable kernel of :func:`gemm_cost`: ``jax.numpy`` only, no validation.

    Args:
      m, k, n: GEMM sizes (SCALE-Sim order: output rows, reduction, output columns); int arrays
        or ints, broadcast together with the other arguments.
      rows, cols: array height R and width C.
      code: dataflow code (0 = os, 1 = ws, 2 = is), static int or int array.

    Returns:
      :class:`GemmCost` of jax arrays (ints in the default int dtype; floats float32 unless x64).
      Assumes valid input: non-positive sizes or codes outside 0..2 give meaningless numbers, and
      ``cycles`` wraps around past 2**31 - 1 without x64 (``folds``/``fold_cycles`` do not).
    """
    args = [jnp.asarray(a) for a in (m, k, n, rows, cols, code)]
    return _cost(*args, xp=jnp)


def _is_traced(*args) -> bool:
    return any(isinstance(a, jax.core.Tracer) for a in args)


def _check_sizes(**sizes) -> dict[str, np.ndarray]:
    """Checks concrete sizes are positive integers; returns them as int64 NumPy arrays."""
    out = {}
    for name, value in sizes.items():
        if isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        arr = np.asarray(value)
        if arr.dtype == bool or arr.dtype.kind not in "iuf":
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.floor(arr)):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if arr.size and not np.all(arr > 0):
            bad = arr[~(arr > 0)].reshape(-1)[0]
            raise ValueError(f"{name} must be a positive integer, got {bad!r}")
        out[name] = arr.astype(np.int64)
    return out


def _check_code(dataflow) -> Any:
    """Validates a concrete dataflow (name, code or int array of codes); returns the code(s)."""
    if isinstance(dataflow, str) or np.ndim(dataflow) == 0:
        if isinstance(dataflow, (np.ndarray, jax.Array)):
            dataflow = dataflow.item()
        return dataflow_code(dataflow)
    arr = np.asarray(dataflow)
    if arr.dtype.kind not in "iu" or not np.all((arr >= 0) & (arr < len(DATAFLOWS))):
        raise ValueError(f"unknown dataflow code(s) {dataflow!r}; expected ints 0..2 {DATAFLOWS}")
    return arr.astype(np.int64)


def gemm_cost(m, k, n, rows, cols, dataflow: Any = "os") -> GemmCost:
    """SCALE-Sim 3.0.0 (CALC mode) cost of ``[M, K] @ [K, N]`` on an R x C array.

    See the module docstring for the formulas. Broadcasts over array arguments. With concrete
    (non-traced) arguments the input is validated and the closed form is evaluated exactly in
    NumPy (int64 cycles, float64 ratios, so the percentages round like SCALE-Sim's). Under
    ``jax.jit``/``jax.vmap`` (any argument traced) the same formula runs in ``jax.numpy`` via
    :func:`gemm_cost_unchecked`, unvalidated, in the default dtypes (int32/float32 unless x64).

    Args:
      m: output rows M (output pixels, e.g. ``batch * T * Ho * Wo``).
      k: reduction size K (fan-in).
      n: output columns N (filters / features).
      rows, cols: array height R and width C.
      dataflow: ``"os"``, ``"ws"``, ``"is"``, or int code(s) 0/1/2 (may be an array).

    Returns:
      :class:`GemmCost`: NumPy values for concrete input, jax arrays for traced input.

    Raises:
      ValueError: for concrete input with a non-positive or non-integer size or an unknown
        dataflow, naming the argument. Traced input cannot be validated.
    """
    if _is_traced(m, k, n, rows, cols, dataflow):
        code = dataflow_code(dataflow) if isinstance(dataflow, str) else dataflow
        return gemm_cost_unchecked(m, k, n, rows, cols, code)
    sizes = _check_sizes(m=m, k=k, n=n, rows=rows, cols=cols)
    code = _check_code(dataflow)
    return _cost(*sizes.values(), np.asarray(code), xp=np)


def gemm_cycles(m, k, n, rows, cols, dataflow: Any = "os"):
    """SCALE-Sim 3.0.0 "Total Cycles" of the GEMM (see :func:`gemm_cost`)."""
    return gemm_cost(m, k, n, rows, cols, dataflow).cycles


def mapping_efficiency(m, k, n, rows, cols, dataflow: Any = "os"):
    """SCALE-Sim mapping efficiency as a fraction (see :func:`gemm_cost`)."""
    return gemm_cost(m, k, n, rows, cols, dataflow).mapping_efficiency


def compute_utilization(m, k, n, rows, cols, dataflow: Any = "os"):
    """SCALE-Sim compute utilisation as a fraction (see :func:`gemm_cost`)."""
    return gemm_cost(m, k, n, rows, cols, dataflow).compute_utilization


def gemm_cost_exact(m: int, k: int, n: int, rows: int, cols: int,
                    dataflow: Any = "os") -> GemmCost:
    """:func:`gemm_cost` for scalars, as Python ``int``/``float`` (exact for any size).

    Raises:
      ValueError: as :func:`gemm_cost`, or for array arguments.
    """
    sizes = _check_sizes(m=m, k=k, n=n, rows=rows, cols=cols)
    if any(v.ndim for v in sizes.values()):
        raise ValueError("gemm_cost_exact takes scalars; use gemm_cost for arrays")
    return _cost(*(int(v) for v in sizes.values()), dataflow_code(dataflow), xp=_PyScalar)


def best_dataflow(m: int, k: int, n: int, rows: int, cols: int) -> str:
    """The dataflow with the fewest cycles for this GEMM (ties: os, then ws, then is)."""
    cycles = [gemm_cost_exact(m, k, n, rows, cols, d).cycles for d in DATAFLOWS]
    return DATAFLOWS[int(np.argmin(cycles))]


def positive_int(name: str, value: Any) -> int:
    """``int(value)`` for a positive integer (NumPy integers included); ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def scalesim_conv_to_gemm(ifmap_h: int, ifmap_w: int, filt_h: int, filt_w: int, channels: int,
                          num_filt: int, stride: int) -> tuple[int, int, int]:
    """SCALE-Sim's conv-to-GEMM: ``(M, K, N)`` of a conv topology row (no padding, batch 1).

    ``E_h = ceil((H - f_h + s) / s)``, ``E_w`` likewise, ``M = E_h * E_w``, ``K = f_h * f_w * C``,
    ``N = num_filt`` (``topology_utils.topo_calc_hyperparams``; same stride in both directions).

    Raises:
      ValueError: if a size is not a positive integer, the filter is larger than the input, or
        the stride is larger than the input.
    """
    h, w = positive_int("ifmap_h", ifmap_h), positive_int("ifmap_w", ifmap_w)
    fh, fw = positive_int("filt_h", filt_h), positive_int("filt_w", filt_w)
    c, f, s = positive_int("channels", channels), positive_int("num_filt", num_filt), positive_int("stride", stride)
    if fh > h or fw > w:
        raise ValueError(f"filter {fh}x{fw} larger than the input {h}x{w}")
    if s > h or s > w:
        raise ValueError(f"stride {s} larger than the input {h}x{w}")
    eh = math.ceil((h - fh + s) / s)
    ew = math.ceil((w - fw + s) / s)
    return eh * ew, fh * fw * c, f


def conv_to_gemm(in_h: int, in_w: int, channels: int, features: int, kernel: int,
                 stride: int = 1, padding: int = 0) -> tuple[int, int, int]:
    """``(M, K, N)`` per sample of the project's padded conv (XLA/PyTorch floor convention).

    The input is zero-padded by ``padding`` on each side and lowered by im2col:
    ``Ho = floor((H + 2p - k) / s) + 1`` (likewise ``Wo``), ``M = Ho * Wo``, ``K = k * k * C``,
    ``N = features``. Multiply ``M`` by batch x time steps for a whole task.

    Raises:
      ValueError: if a size is not a positive integer, padding is negative, or the kernel or
        stride is larger than the padded input.
    """
    h, w = positive_int("in_h", in_h), positive_int("in_w", in_w)
    c, f = positive_int("channels", channels), positive_int("features", features)
    kk, s = positive_int("kernel", kernel), positive_int("stride", stride)
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ValueError(f"padding must be a non-negative integer, got {padding!r}")
    hp, wp = h + 2 * int(padding), w + 2 * int(padding)
    if kk > hp or kk > wp:
        raise ValueError(f"kernel {kk} larger than the padded input {hp}x{wp}")
    if s > hp or s > wp:
        raise ValueError(f"stride {s} larger than the padded input {hp}x{wp}")
    return ((hp - kk) // s + 1) * ((wp - kk) // s + 1), kk * kk * c, f


def conv_cost(ifmap_h: int, ifmap_w: int, filt_h: int, filt_w: int, channels: int,
              num_filt: int, stride: int, rows: int, cols: int, dataflow: Any = "os") -> GemmCost:
    """Cost of a SCALE-Sim conv topology row (via :func:`scalesim_conv_to_gemm`), exact ints."""
    m, k, n = scalesim_conv_to_gemm(ifmap_h, ifmap_w, filt_h, filt_w, channels, num_filt, stride)
    return gemm_cost_exact(m, k, n, rows, cols, dataflow)


def conv_cycles(ifmap_h: int, ifmap_w: int, filt_h: int, filt_w: int, channels: int,
                num_filt: int, stride: int, rows: int, cols: int, dataflow: Any = "os") -> int:
    """SCALE-Sim "Total Cycles" of a conv topology row (no padding, batch 1)."""
    return conv_cost(ifmap_h, ifmap_w, filt_h, filt_w, channels, num_filt, stride, rows, cols,
                     dataflow).cycles

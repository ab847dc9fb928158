"""Cycle-level (register-transfer) simulator of a systolic array, in NumPy, for small GEMMs.

It moves data through an R x C grid of processing elements one register hop per cycle, every PE
doing at most one multiply-accumulate per cycle, computes the real product ``A @ B`` and counts
the cycles. It exists to explain (and test) the closed form of
:mod:`spikepipe_jax.hardware.systolic`; it is slow (a Python loop over cycles) and meant for
sizes up to a few dozen.

Folds run back to back; a partial fold is fed zero padding and runs the same fixed schedule as a
full one (the controller does not shorten it), which is what SCALE-Sim charges.

Output stationary (``"os"``), fold = R x C tile of the output: row ``i`` of ``A``'s tile enters
the left edge of array row ``i`` skewed by ``i`` cycles and moves right one PE per cycle; column
``j`` of ``B``'s tile enters the top of array column ``j`` skewed by ``j`` and moves down. PE
``(i, j)`` meets ``A[i, k]`` and ``B[k, j]`` at cycle ``k + i + j`` and accumulates; the last
MAC is at cycle ``K + R + C - 3``, so the fold takes ``R + C + K - 2`` cycles. The accumulators
are then shifted down and out of the bottom edge, ``R`` more cycles, reported separately as
``drain_cycles`` (SCALE-Sim's code does not charge them; its paper does: ``2R + C + K - 2``).

Weight stationary (``"ws"``), fold = R x C tile of ``B``: the tile is shifted in from the top,
one row per cycle (``R`` cycles, last row first). Then column ``k`` of ``A``'s slice streams into
the left edge of array row ``k`` skewed by ``k`` (``A[m, k]`` reaches PE ``(k, j)`` at cycle
``R + m + k + j``) while partial sums move down one PE per cycle; the sum for ``(m, j)`` leaves
the bottom at cycle ``2R + m + j - 1``, the last one at ``2R + C + M - 3``: ``2R + C + M - 2``
cycles per fold. Partial sums of the K folds are added in the output buffer.

Input stationary (``"is"``) is the same machine with the roles of the operands swapped: the
``A^T`` tile is held and ``B^T`` streams, i.e. weight stationary on ``B^T @ A^T``
(``2R + C + N - 2`` cycles per fold).

Offset to the closed form: the simulator's ``cycles`` (sum of the folds' busy cycles) is exactly
``systolic.gemm_cycles(...) + 1`` for every dataflow. SCALE-Sim reports the 0-indexed cycle of
its last output row, hence one less.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from spikepipe_jax.hardware.systolic import DATAFLOWS, positive_int, dataflow_code


class SimResult(NamedTuple):
    """Result of :func:`simulate_gemm`.

    Attributes:
      out: ``[M, N]`` product computed by the PE grid.
      cycles: busy cycles of the folds run back to back (operand fill, MACs, partial-sum
        skew), ``== systolic.gemm_cycles(M, K, N, R, C, dataflow) + 1``.
      fold_cycles: busy cycles of each fold, in execution order.
      drain_cycles: cycles to shift the output-stationary accumulators out of the array (``R``
        per fold for os, 0 for ws/is whose sums leave during the fold); not in ``cycles``.
      macs: useful MACs performed (both operands real, not padding): ``M * K * N``.
      pe_macs: ``[R, C]`` MACs (including on padding zeros) each PE performed.
    """

    out: np.ndarray
    cycles: int
    fold_cycles: tuple[int, ...]
    drain_cycles: int
    macs: int
    pe_macs: np.ndarray


def _tile(x: np.ndarray, r0: int, nr: int, c0: int, nc: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-padded ``[nr, nc]`` tile of ``x`` at ``(r0, c0)`` and its mask of real elements."""
    t = np.zeros((nr, nc), dtype=x.dtype)
    real = np.zeros((nr, nc), dtype=bool)
    part = x[r0:r0 + nr, c0:c0 + nc]
    t[:part.shape[0], :part.shape[1]] = part
    real[:part.shape[0], :part.shape[1]] = True
    return t, real


def _os_fold(a_t, a_real, b_t, b_real, rows, cols):
    """One output-stationary fold: ``a_t [R, K]``, ``b_t [K, C]``; returns acc, cycles, stats."""
    k = a_t.shape[1]
    dtype = np.result_type(a_t, b_t)
    a_reg = np.zeros((rows, cols), dtype)
    a_val = np.zeros((rows, cols), bool)   # an operand (real or padding zero) is present
    a_rl = np.zeros((rows, cols), bool)    # ... and it is a real element
    b_reg, b_val, b_rl = np.zeros_like(a_reg), np.zeros_like(a_val), np.zeros_like(a_rl)
    acc = np.zeros((rows, cols), dtype)
    pe_macs = np.zeros((rows, cols), np.int64)
    useful = 0
    last_mac = -1
    ii, jj = np.arange(rows), np.arange(cols)
    t = 0
    while True:
        # Edge feeders (skewed): row i gets A[i, t - i], column j gets B[t - j, j].
        ka, kb = t - ii, t - jj
        fa, fb = (ka >= 0) & (ka < k), (kb >= 0) & (kb < k)
        if t > 0 and not (fa.any() or fb.any() or a_val.any() or b_val.any()):
            break
        a_reg, a_val, a_rl = (np.roll(x, 1, axis=1) for x in (a_reg, a_val, a_rl))
        b_reg, b_val, b_rl = (np.roll(x, 1, axis=0) for x in (b_reg, b_val, b_rl))
        kac, kbc = np.clip(ka, 0, k - 1), np.clip(kb, 0, k - 1)
        a_reg[:, 0] = np.where(fa, a_t[ii, kac], 0)
        a_val[:, 0], a_rl[:, 0] = fa, fa & a_real[ii, kac]
        b_reg[0, :] = np.where(fb, b_t[kbc, jj], 0)
        b_val[0, :], b_rl[0, :] = fb, fb & b_real[kbc, jj]
        fire = a_val & b_val
        if fire.any():
            acc += np.where(fire, a_reg * b_reg, 0)
            pe_macs += fire
            useful += int(np.sum(fire & a_rl & b_rl))
            last_mac = t
        t += 1
    # Drain: shift the accumulators down, one row leaves the bottom edge per cycle.
    drained = np.zeros_like(acc)
    reg = acc.copy()
    for step in range(rows):
        drained[rows - 1 - step] = reg[rows - 1]
        reg = np.roll(reg, 1, axis=0)
        reg[0] = 0
    return drained, last_mac + 1, rows, pe_macs, useful


def _ws_fold(a_t, a_real, w_t, w_real, rows, cols, out_acc):
    """One weight-stationary fold: ``a_t [M, R]`` streams, ``w_t [R, C]`` is held.

    Adds the partial sums leaving the bottom edge into ``out_acc [M, C]``; returns cycles, stats.
    """
    m = a_t.shape[0]
    dtype = np.result_type(a_t, w_t)
    # Phase 1: shift the weight tile in from the top, last row first (R cycles).
    w_reg = np.zeros((rows, cols), dtype)
    w_rl = np.zeros((rows, cols), bool)
    for t in range(rows):
        w_reg, w_rl = np.roll(w_reg, 1, axis=0), np.roll(w_rl, 1, axis=0)
        w_reg[0], w_rl[0] = w_t[rows - 1 - t], w_real[rows - 1 - t]
    # Phase 2: stream A (skewed) left to right, partial sums top to bottom.
    a_reg = np.zeros((rows, cols), dtype)
    a_tag = np.full((rows, cols), -1)      # which output row m the operand belongs to
    a_rl = np.zeros((rows, cols), bool)
    p_reg = np.zeros((rows, cols), dtype)
    p_tag = np.full((rows, cols), -1)
    pe_macs = np.zeros((rows, cols), np.int64)
    useful = 0
    last_mac = -1
    ii = np.arange(rows)
    u = 0
    while True:
        ma = u - ii                         # row i of the array gets A[u - i, i]
        fa = (ma >= 0) & (ma < m)
        if u > 0 and not (fa.any() or (a_tag >= 0).any() or (p_tag >= 0).any()):
            break
        a_reg, a_tag, a_rl = (np.roll(x, 1, axis=1) for x in (a_reg, a_tag, a_rl))
        mac = np.clip(ma, 0, m - 1)
        a_reg[:, 0] = np.where(fa, a_t[mac, ii], 0)
        a_tag[:, 0] = np.where(fa, ma, -1)
        a_rl[:, 0] = fa & a_real[mac, ii]
        # Partial sums from the PE above (row 0 starts a new sum from 0).
        p_in = np.roll(p_reg, 1, axis=0)
        t_in = np.roll(p_tag, 1, axis=0)
        p_in[0], t_in[0] = 0, a_tag[0]
        fire = a_tag >= 0
        if not np.array_equal(t_in[fire], a_tag[fire]) or np.any((t_in >= 0) & ~fire):
            raise AssertionError("partial sum and operand out of step")  # schedule invariant
        p_reg = np.where(fire, p_in + a_reg * w_reg, 0)
        p_tag = np.where(fire, a_tag, -1)
        if fire.any():
            pe_macs += fire
            useful += int(np.sum(fire & a_rl & w_rl))
            last_mac = rows + u
        # Sums complete at the bottom row leave the array into the output buffer.
        done = p_tag[rows - 1] >= 0
        out_acc[p_tag[rows - 1][done], np.nonzero(done)[0]] += p_reg[rows - 1][done]
        u += 1
    return last_mac + 1, pe_macs, useful


def _simulate_ws(a: np.ndarray, b: np.ndarray, rows: int, cols: int):
    m, k = a.shape
    n = b.shape[1]
    out = np.zeros((m, n), np.result_type(a, b))
    fold_cycles, pe_macs, useful = [], np.zeros((rows, cols), np.int64), 0
    for c0 in range(0, n, cols):
        for r0 in range(0, k, rows):
            a_t, a_real = _tile(a, 0, m, r0, rows)           # [M, R] slice of A
            w_t, w_real = _tile(b, r0, rows, c0, cols)       # [R, C] tile of B
            acc = np.zeros((m, cols), out.dtype)
            cyc, pm, us = _ws_fold(a_t, a_real, w_t, w_real, rows, cols, acc)
            out[:, c0:c0 + cols] += acc[:, :min(cols, n - c0)]
            fold_cycles.append(cyc)
            pe_macs += pm
            useful += us
    return out, tuple(fold_cycles), 0, useful, pe_macs


def _simulate_os(a: np.ndarray, b: np.ndarray, rows: int, cols: int):
    m, k = a.shape
    n = b.shape[1]
    out = np.zeros((m, n), np.result_type(a, b))
    fold_cycles, drain, pe_macs, useful = [], 0, np.zeros((rows, cols), np.int64), 0
    for c0 in range(0, n, cols):
        for r0 in range(0, m, rows):
            a_t, a_real = _tile(a, r0, rows, 0, k)           # [R, K]
            b_t, b_real = _tile(b, 0, k, c0, cols)           # [K, C]
            acc, cyc, dr, pm, us = _os_fold(a_t, a_real, b_t, b_real, rows, cols)
            out[r0:r0 + rows, c0:c0 + cols] = acc[:min(rows, m - r0), :min(cols, n - c0)]
            fold_cycles.append(cyc)
            drain += dr
            pe_macs += pm
            useful += us
    return out, tuple(fold_cycles), drain, useful, pe_macs


def simulate_gemm(a: np.ndarray, b: np.ndarray, rows: int, cols: int,
                  dataflow: str = "os") -> SimResult:
    """Runs ``a @ b`` through an R x C systolic array cycle by cycle.

    Args:
      a: ``[M, K]`` input operand (rows = output pixels).
      b: ``[K, N]`` weights.
      rows, cols: array height R and width C.
      dataflow: ``"os"``, ``"ws"`` or ``"is"``.

    Returns:
      :class:`SimResult`; ``result.cycles - 1`` equals SCALE-Sim's "Total Cycles".

    Raises:
      ValueError: for non-2-D or mismatched operands, empty sizes, non-positive array sizes or
        an unknown dataflow.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"need a [M, K] and b [K, N], got shapes {a.shape} and {b.shape}")
    if min(a.shape + b.shape) <= 0:
        raise ValueError(f"empty operand: shapes {a.shape} and {b.shape}")
    rows, cols = positive_int("rows", rows), positive_int("cols", cols)
    code = dataflow_code(dataflow)
    if DATAFLOWS[code] == "os":
        out, folds, drain, useful, pe_macs = _simulate_os(a, b, rows, cols)
    elif DATAFLOWS[code] == "ws":
        out, folds, drain, useful, pe_macs = _simulate_ws(a, b, rows, cols)
    else:  # input stationary = weight stationary on B^T @ A^T (A^T held, B^T streams)
        out_t, folds, drain, useful, pe_macs = _simulate_ws(b.T, a.T, rows, cols)
        out = out_t.T
    return SimResult(out=out, cycles=int(sum(folds)), fold_cycles=folds, drain_cycles=int(drain),
                     macs=int(useful), pe_macs=pe_macs)

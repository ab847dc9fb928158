"""Tests of the cycle-level systolic simulator: exact products, cycle counts vs the closed form."""

import json
import pathlib

import numpy as np
import pytest

from spikepipe_jax.hardware import simulator, systolic

DATA = pathlib.Path(__file__).parent / "data"


def _random_cases(n, seed):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        m, k, n_ = (int(x) for x in rng.integers(1, 11, 3))
        r, c = (int(x) for x in rng.integers(1, 6, 2))
        yield m, k, n_, r, c


@pytest.mark.parametrize("dataflow", systolic.DATAFLOWS)
def test_product_is_exact_and_cycles_are_closed_form_plus_one(dataflow):
    rng = np.random.default_rng(7)
    for m, k, n, r, c in _random_cases(25, seed=systolic.DATAFLOWS.index(dataflow)):
        a = rng.integers(-9, 10, (m, k))
        b = rng.integers(-9, 10, (k, n))
        res = simulator.simulate_gemm(a, b, r, c, dataflow)
        np.testing.assert_array_equal(res.out, a @ b)
        closed = systolic.gemm_cost_exact(m, k, n, r, c, dataflow)
        assert res.cycles == closed.cycles + 1, (m, k, n, r, c)
        assert len(res.fold_cycles) == closed.folds
        assert set(res.fold_cycles) == {closed.fold_cycles}
        assert res.macs == m * k * n
        # Each PE does at most one MAC per cycle.
        assert res.pe_macs.max() <= res.cycles


def test_float_product():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 9)), rng.normal(size=(9, 5))
    for df in systolic.DATAFLOWS:
        res = simulator.simulate_gemm(a, b, 3, 4, df)
        np.testing.assert_allclose(res.out, a @ b, rtol=1e-12, atol=1e-12)


def test_per_fold_schedules_from_first_principles():
    # os: last MAC at PE(R-1, C-1) with k = K-1 at cycle (K-1)+(R-1)+(C-1).
    res = simulator.simulate_gemm(np.ones((3, 6)), np.ones((6, 2)), 3, 2, "os")
    assert res.fold_cycles == (6 + 3 + 2 - 2,)
    assert res.drain_cycles == 3
    # Paper's os fold (with the drain): 2R + C + K - 2.
    assert res.fold_cycles[0] + res.drain_cycles == 2 * 3 + 2 + 6 - 2
    # ws: R cycles of weight loading, then the sum for (m=M-1, j=C-1) leaves at 2R+M+C-3.
    res = simulator.simulate_gemm(np.ones((5, 3)), np.ones((3, 2)), 3, 2, "ws")
    assert res.fold_cycles == (2 * 3 + 2 + 5 - 2,)
    assert res.drain_cycles == 0
    # Every PE of a full fold does exactly one MAC per streamed element.
    np.testing.assert_array_equal(res.pe_macs, np.full((3, 2), 5))


def test_partial_fold_runs_the_full_schedule_but_counts_only_real_macs():
    # M = 5 on R = 4: the second row fold uses 1 of 4 rows but takes a whole fold.
    a, b = np.arange(5 * 3).reshape(5, 3), np.arange(3 * 2).reshape(3, 2)
    res = simulator.simulate_gemm(a, b, 4, 2, "os")
    assert res.fold_cycles == (4 + 2 + 3 - 2,) * 2
    assert res.macs == 5 * 3 * 2
    assert res.pe_macs.sum() == 2 * 4 * 2 * 3   # padding PEs multiply zeros too


def test_reference_shapes_small_enough_to_simulate():
    # The smallest GEMM cases of the SCALE-Sim reference, simulated with random data.
    cases = [c for c in json.loads((DATA / "scalesim_v3_calc.json").read_text())["cases"]
             if c["mode"] == "gemm" and c["M"] * c["K"] * c["N"] <= 8000]
    assert cases
    rng = np.random.default_rng(3)
    for c in cases:
        a = rng.integers(-3, 4, (c["M"], c["K"]))
        b = rng.integers(-3, 4, (c["K"], c["N"]))
        res = simulator.simulate_gemm(a, b, c["rows"], c["cols"], c["dataflow"])
        np.testing.assert_array_equal(res.out, a @ b)
        assert res.cycles - 1 == c["compute_cycles"]


def test_bad_input():
    with pytest.raises(ValueError, match="shapes"):
        simulator.simulate_gemm(np.ones((2, 3)), np.ones((4, 2)), 2, 2)
    with pytest.raises(ValueError, match="rows"):
        simulator.simulate_gemm(np.ones((2, 3)), np.ones((3, 2)), 0, 2)
    with pytest.raises(ValueError, match="dataflow"):
        simulator.simulate_gemm(np.ones((2, 3)), np.ones((3, 2)), 2, 2, "xs")
    with pytest.raises(ValueError, match="empty"):
        simulator.simulate_gemm(np.ones((0, 3)), np.ones((3, 2)), 2, 2)

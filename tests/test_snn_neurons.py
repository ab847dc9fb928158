"""LIF neurons and surrogates against snnTorch 1.0 and a hand-written reverse-time BPTT."""
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spikepipe_jax import snn

REF = pathlib.Path(__file__).parent / "data" / "snntorch_leaky_ref.npz"
SURR = {"atan": lambda: snn.arctan(2.0), "fast_sigmoid": lambda: snn.fast_sigmoid(25.0)}


def _run(currents, beta, reset, surrogate):
    def f(cur):
        spk, mem = snn.lif_scan(cur, beta=beta, threshold=1.0, reset=reset, surrogate=surrogate)
        return spk, mem
    return f


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("beta_kind", ["scalar", "vector"])
@pytest.mark.parametrize("sname", ["atan", "fast_sigmoid"])
def test_matches_snntorch_reference(reset, beta_kind, sname):
    ref = np.load(REF)
    cur = jnp.asarray(ref["currents"])
    beta = 0.85 if beta_kind == "scalar" else jnp.asarray(ref["beta_vec"])
    f = _run(cur, beta, reset, SURR[sname]())
    spk, mem = jax.jit(f)(cur)
    key = f"{reset}_{beta_kind}_{sname}"
    np.testing.assert_array_equal(np.asarray(spk), ref[f"{key}_spk"])
    np.testing.assert_allclose(np.asarray(mem), ref[f"{key}_mem"], rtol=1e-5, atol=1e-6)
    g_spk, g_mem = jnp.asarray(ref["g_spk"]), jnp.asarray(ref["g_mem"])
    grad = jax.grad(lambda c: jnp.sum(f(c)[0] * g_spk) + jnp.sum(f(c)[1] * g_mem))(cur)
    np.testing.assert_allclose(np.asarray(grad), ref[f"{key}_grad"], rtol=1e-4, atol=1e-5)
    assert np.asarray(spk).sum() > 0 and (np.asarray(spk) == 0).sum() > 0  # the reference exercises both


def test_live_snntorch_triangle_and_step():
    """Runs snnTorch itself when installed (benchmarks/requirements.txt); skipped otherwise."""
    torch = pytest.importorskip("torch")
    snntorch = pytest.importorskip("snntorch")
    from snntorch import surrogate
    rng = np.random.default_rng(0)
    cur = rng.normal(0.5, 1.0, (12, 2, 5)).astype(np.float32)
    lif = snntorch.Leaky(beta=0.7, reset_mechanism="zero", spike_grad=surrogate.triangular(1.0))
    c = torch.tensor(cur, requires_grad=True)
    mem, spks, mems = lif.init_leaky(), [], []
    for t in range(cur.shape[0]):
        s, mem = lif(c[t], mem)
        spks.append(s)
        mems.append(mem)
    loss = torch.stack(spks).sum() + 0.5 * torch.stack(mems).sum()
    loss.backward()
    f = _run(None, 0.7, "zero", snn.triangle(1.0))
    spk, m = f(jnp.asarray(cur))
    np.testing.assert_array_equal(np.asarray(spk), torch.stack(spks).detach().numpy())
    np.testing.assert_allclose(np.asarray(m), torch.stack(mems).detach().numpy(), rtol=1e-5, atol=1e-6)
    g = jax.grad(lambda x: jnp.sum(f(x)[0]) + 0.5 * jnp.sum(f(x)[1]))(jnp.asarray(cur))
    np.testing.assert_allclose(np.asarray(g), c.grad.numpy(), rtol=1e-4, atol=1e-5)


def _numpy_bptt(cur, beta, thr, slope, g_spk, g_mem, reset):
    """Forward then reverse-time BPTT written out by hand (reset detached, fast-sigmoid)."""
    t_steps = cur.shape[0]
    u = np.zeros((t_steps + 1,) + cur.shape[1:], np.float64)  # u[0] = U_{-1} = 0
    r = np.zeros_like(cur, np.float64)
    for t in range(t_steps):
        r[t] = (u[t] - thr > 0)
        if reset == "subtract":
            u[t + 1] = beta * u[t] + cur[t] - r[t] * thr
        else:  # zero
            u[t + 1] = beta * (1 - r[t]) * u[t] + cur[t]
    dsurr = 1.0 / (slope * np.abs(u[1:] - thr) + 1.0) ** 2
    d_u = np.zeros_like(cur, np.float64)
    d_beta = np.zeros(cur.shape[-1])
    carry = np.zeros(cur.shape[1:])
    for t in reversed(range(t_steps)):
        d_u[t] = g_mem[t] + g_spk[t] * dsurr[t] + carry
        keep = 1.0 if reset == "subtract" else (1 - r[t])
        d_beta += (d_u[t] * keep * u[t]).reshape(-1, cur.shape[-1]).sum(0)
        next_keep = 1.0 if reset == "subtract" else (1 - r[t])
        carry = d_u[t] * beta * next_keep
    return u[1:], d_u, d_beta


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_grad_matches_numpy_reverse_time_bptt(reset):
    rng = np.random.default_rng(7)
    t_steps, b, n = 20, 4, 6
    cur = rng.normal(0.3, 0.9, (t_steps, b, n)).astype(np.float32)
    beta = rng.uniform(0.6, 0.95, n).astype(np.float32)
    g_spk = rng.normal(size=cur.shape).astype(np.float32)
    g_mem = rng.normal(size=cur.shape).astype(np.float32)
    u_ref, d_ref, dbeta_ref = _numpy_bptt(cur.astype(np.float64), beta.astype(np.float64), 1.0, 25.0,
                                          g_spk, g_mem, reset)

    def loss(c, bt):
        spk, mem = snn.lif_scan(c, beta=bt, reset=reset, surrogate=snn.fast_sigmoid(25.0))
        return jnp.sum(spk * g_spk) + jnp.sum(mem * g_mem), mem

    with jax.enable_x64(True):
        (_, mem), (d_cur, d_beta) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
            jnp.asarray(cur, jnp.float64), jnp.asarray(beta, jnp.float64))
    np.testing.assert_allclose(np.asarray(mem), u_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(d_cur), d_ref, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(d_beta), dbeta_ref, rtol=1e-5)
    # float32 path agrees too
    (_, _), (d32, _) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(jnp.asarray(cur), jnp.asarray(beta))
    np.testing.assert_allclose(np.asarray(d32), d_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("factory,deriv", [
    (lambda: snn.fast_sigmoid(10.0), lambda x: 1 / (10 * np.abs(x) + 1) ** 2),
    (lambda: snn.arctan(3.0), lambda x: 1.5 / (1 + (np.pi / 2 * 3 * x) ** 2)),
    (lambda: snn.triangle(0.5), lambda x: np.where(x >= 0, -0.5, 0.5)),
    (lambda: snn.straight_through(), lambda x: np.ones_like(x)),
])
def test_surrogates_forward_exact_backward_formula(factory, deriv):
    fn = factory()
    x = jnp.linspace(-2, 2, 41, dtype=jnp.float32)
    y = fn(x)
    assert y.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(y), (np.asarray(x) > 0).astype(np.float32))
    g = jax.vmap(jax.grad(fn))(x)
    np.testing.assert_allclose(np.asarray(g), deriv(np.asarray(x)), rtol=1e-6)
    assert fn(jnp.zeros((), jnp.bfloat16)).dtype == jnp.bfloat16


def test_reset_grad_option_changes_gradient_only():
    cur = jnp.asarray(np.random.default_rng(1).normal(0.6, 0.8, (10, 3)).astype(np.float32))
    f = lambda c, rg: snn.lif_scan(c, beta=0.9, surrogate=snn.fast_sigmoid(), reset_grad=rg)
    s0, m0 = f(cur, False)
    s1, m1 = f(cur, True)
    np.testing.assert_array_equal(np.asarray(s0), np.asarray(s1))
    g0 = jax.grad(lambda c: f(c, False)[1].sum())(cur)
    g1 = jax.grad(lambda c: f(c, True)[1].sum())(cur)
    assert not np.allclose(np.asarray(g0), np.asarray(g1))


def test_step_equals_scan_and_jit_equals_eager(key):
    cur = jax.random.normal(key, (9, 2, 4)) + 0.5
    spk, mem = snn.lif_scan(cur, beta=0.8)
    m = jnp.zeros((2, 4))
    for t in range(9):
        m, s = snn.lif_step(m, cur[t], beta=0.8)
        np.testing.assert_array_equal(np.asarray(s), np.asarray(spk[t]))
        np.testing.assert_allclose(np.asarray(m), np.asarray(mem[t]), rtol=1e-6)
    sj, mj = jax.jit(lambda c: snn.lif_scan(c, beta=0.8))(cur)
    np.testing.assert_array_equal(np.asarray(sj), np.asarray(spk))
    sr, mr = snn.lif_scan(cur, beta=0.8, remat=True)
    np.testing.assert_array_equal(np.asarray(sr), np.asarray(spk))


def test_bad_reset_and_empty_time_axis():
    with pytest.raises(ValueError, match="unknown reset 'soft'"):
        snn.lif_scan(jnp.ones((3, 2)), beta=0.9, reset="soft")
    with pytest.raises(ValueError, match="time axis"):
        snn.lif_scan(jnp.ones((0, 2)), beta=0.9)
    with pytest.raises(ValueError, match="unknown surrogate"):
        snn.make_surrogate("relu")


@pytest.mark.parametrize("reset", ["subtract", "none"])
@pytest.mark.parametrize("beta", [0.8, 1.0, 1.3])
def test_matrix_bptt_equals_scan_bptt(reset, beta):
    """The scalar-beta fast path (BPTT as one [T, T] GEMM) against differentiating the scan
    (a plain ``lax.scan`` over the public ``lif_step``): gradients w.r.t. currents, beta and mem0."""
    rng = np.random.default_rng(3)
    cur = jnp.asarray(rng.normal(0.4, 0.9, (12, 3, 5)).astype(np.float32))
    mem0 = jnp.asarray(rng.normal(0.0, 0.5, (3, 5)).astype(np.float32))
    g_spk = jnp.asarray(rng.normal(size=cur.shape).astype(np.float32))
    g_mem = jnp.asarray(rng.normal(size=cur.shape).astype(np.float32))

    def loss(c, b, m0, fast):
        if fast:
            spk, mem = snn.lif_scan(c, beta=b, reset=reset, mem0=m0, surrogate=snn.fast_sigmoid())
        else:
            def body(m, cur):
                m, s = snn.lif_step(m, cur, beta=b, reset=reset, surrogate=snn.fast_sigmoid())
                return m, (s, m)
            spk, mem = jax.lax.scan(body, m0, c)[1]
        return jnp.sum(spk * g_spk) + jnp.sum(mem * g_mem)

    fast = jax.grad(loss, argnums=(0, 1, 2))(cur, jnp.float32(beta), mem0, True)
    ref = jax.grad(loss, argnums=(0, 1, 2))(cur, jnp.float32(beta), mem0, False)
    for a, b in zip(fast, ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-5)
    if beta > 1.0:
        assert float(fast[1]) == 0.0  # clipped: no gradient, as snnTorch's clamp


@pytest.mark.parametrize("reset,remat", [("subtract", False), ("none", False), ("zero", False),
                                         ("subtract", True)])
@pytest.mark.parametrize("bias_shape", [(5,), (1, 5), ()])
def test_bias_inside_loop_equals_bias_added_to_currents(reset, remat, bias_shape):
    """``lif_scan(c, bias=b)`` == ``lif_scan(c + b)``: values and gradients w.r.t. currents, bias,
    beta (the matrix-BPTT path for subtract/none, with or without remat; the plain scan for zero)."""
    rng = np.random.default_rng(7)
    cur = jnp.asarray(rng.normal(0.3, 0.9, (10, 3, 5)).astype(np.float32))
    bias = jnp.asarray(rng.normal(0.2, 0.5, bias_shape).astype(np.float32))
    g_spk = jnp.asarray(rng.normal(size=cur.shape).astype(np.float32))
    g_mem = jnp.asarray(rng.normal(size=cur.shape).astype(np.float32))

    def loss(c, b, beta, fused):
        kw = dict(beta=beta, reset=reset, surrogate=snn.fast_sigmoid(), remat=remat)
        spk, mem = snn.lif_scan(c, bias=b, **kw) if fused else snn.lif_scan(c + b, **kw)
        return jnp.sum(spk * g_spk) + jnp.sum(mem * g_mem), (spk, mem)

    vg = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)
    (_, (s_f, m_f)), g_f = vg(cur, bias, jnp.float32(0.85), True)
    (_, (s_r, m_r)), g_r = vg(cur, bias, jnp.float32(0.85), False)
    np.testing.assert_array_equal(np.asarray(s_f), np.asarray(s_r))
    np.testing.assert_allclose(np.asarray(m_f), np.asarray(m_r), rtol=1e-6, atol=1e-6)
    for a, b in zip(g_f, g_r):
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-5)
    assert float(jnp.abs(g_f[1]).sum()) > 0.0


def test_bias_of_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match=r"bias of shape \(4,\)"):
        snn.lif_scan(jnp.ones((3, 2, 5)), beta=0.9, bias=jnp.ones((4,)))

"""The fused LIF + dense readout kernels (spikepipe_jax/native, snn/fused.py) against the
op-by-op XLA path and an independent float64 NumPy BPTT."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spikepipe_jax import native, snn
from spikepipe_jax.snn import fused, layers, neurons, surrogate as surrogate_lib

needs_native = pytest.mark.skipif(not native.available(), reason=f"native kernels unavailable: {native.load().reason}")

SURROGATES = [("fast_sigmoid", 25.0), ("arctan", 2.0), ("triangle", 1.0), ("straight_through", None)]


def _inputs(shape, f, seed=0):
    rng = np.random.default_rng(seed)
    cur = (rng.standard_normal(shape) * 0.6 + 0.3).astype(np.float32)
    bias = (rng.standard_normal(shape[-1]) * 0.1).astype(np.float32)
    w = (rng.standard_normal((int(np.prod(shape[2:])), f)) * 0.1).astype(np.float32)
    g = rng.standard_normal(shape[:2] + (f,)).astype(np.float32)
    return cur, bias, w, g


def _reference(cur, bias, w, *, beta, threshold, reset, surrogate, scale):
    """The op-by-op path of models.apply: lif_scan then layers.dense."""
    spike_fn = surrogate_lib.make_surrogate(surrogate, scale)
    spk, _ = neurons.lif_scan(cur, beta=beta, threshold=threshold, reset=reset, surrogate=spike_fn, bias=bias)
    t, b = cur.shape[:2]
    return layers.dense(spk.reshape(t * b, -1), w).reshape(t, b, -1)


def _vjp(fn, cur, bias, w, g):
    y, pullback = jax.vjp(fn, cur, bias, w)
    return (y,) + pullback(g)


def _numpy_bptt(cur, bias, w, g, *, beta, threshold, reset, derivative):
    """Independent float64 reference: forward recurrence, then the reverse-time adjoint loop."""
    t_len, b = cur.shape[:2]
    c = cur.reshape(t_len, b, -1).astype(np.float32)
    bias_n = np.broadcast_to(bias, cur.shape[2:]).reshape(-1).astype(np.float32)
    m = np.zeros(c.shape[1:], np.float32)
    mems = []
    for t in range(t_len):  # float32, the order of lif_step, so that the spikes are the same
        r = (m > threshold).astype(np.float32) if reset == "subtract" else np.zeros_like(m)
        m = (np.float32(beta) * m + (c[t] + bias_n)) - r * np.float32(threshold)
        mems.append(m)
    u = np.stack(mems).astype(np.float64)
    s = (u > threshold).astype(np.float64)
    w64, g64 = w.astype(np.float64), g.astype(np.float64)
    y = s @ w64
    local = (g64 @ w64.T) * derivative(u - threshold)
    delta = np.zeros_like(local)
    carry = np.zeros(local.shape[1:])
    for t in reversed(range(t_len)):
        carry = local[t] + beta * carry
        delta[t] = carry
    d_bias = delta.sum((0, 1)).reshape(cur.shape[2:]).sum(tuple(range(len(cur.shape) - 3)))
    d_w = np.einsum("tbn,tbf->nf", s, g64)
    return y, delta.reshape(cur.shape), d_bias, d_w


_DERIVATIVES = {
    "fast_sigmoid": lambda k: (lambda x: 1.0 / (k * np.abs(x) + 1.0) ** 2),
    "arctan": lambda a: (lambda x: (a / 2.0) / (1.0 + (np.pi / 2.0 * a * x) ** 2)),
    "triangle": lambda th: (lambda x: np.where(x >= 0, -th, th)),
    "straight_through": lambda _: (lambda x: np.ones_like(x)),
}


def _assert_close(got, want, rtol, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(np.max(np.abs(want)), 1e-6)
    err = np.max(np.abs(got - want)) / scale
    assert err < rtol, f"{what}: max error {err:.3g} of scale {scale:.3g}"


@needs_native
@pytest.mark.parametrize("surrogate,scale", SURROGATES)
@pytest.mark.parametrize("reset", ["subtract", "none"])
def test_matches_op_by_op_path_and_numpy_bptt(surrogate, scale, reset):
    shape, f = (9, 5, 37), 10  # N = 37: a vector tail; B = 5: uneven thread split
    cur, bias, w, g = _inputs(shape, f)
    kw = dict(beta=0.9, threshold=1.0, reset=reset, surrogate=surrogate, scale=scale)
    got = _vjp(lambda c, b, w_: fused.lif_dense(c, b, w_, **kw), cur, bias, w, g)
    ref = _vjp(lambda c, b, w_: _reference(c, b, w_, **kw), cur, bias, w, g)
    deriv = _DERIVATIVES[surrogate](scale if scale is not None else 1.0)
    bptt = _numpy_bptt(cur, bias, w, g, beta=0.9, threshold=1.0, reset=reset, derivative=deriv)
    for name, a, r, n in zip(("y", "d_currents", "d_bias", "d_w"), got, ref, bptt):
        _assert_close(a, r, 2e-5, f"{name} vs op-by-op")
        _assert_close(a, n, 1e-5, f"{name} vs NumPy BPTT")
    assert float(jnp.sum(got[0] != 0)) > 0, "test inputs should make the hidden layer spike"


@needs_native
@pytest.mark.parametrize("f", [1, 16, 17, 40, 64])
def test_readout_widths(f):
    """F from 1 to 64: one to four 16-lane vectors per neuron, padding sliced away."""
    cur, bias, w, g = _inputs((6, 3, 50), f, seed=f)
    kw = dict(beta=0.8, threshold=0.7, reset="subtract", surrogate="fast_sigmoid", scale=25.0)
    got = _vjp(lambda c, b, w_: fused.lif_dense(c, b, w_, **kw), cur, bias, w, g)
    ref = _vjp(lambda c, b, w_: _reference(c, b, w_, **kw), cur, bias, w, g)
    assert got[0].shape == (6, 3, f) and got[3].shape == (50, f)
    for name, a, r in zip(("y", "d_currents", "d_bias", "d_w"), got, ref):
        _assert_close(a, r, 2e-5, name)


@needs_native
def test_conv_shaped_hidden_layer_and_single_step():
    """[T, B, H, W, C] currents with a per-channel bias (conv_medium's last hidden layer); T = 1."""
    for shape in [(4, 2, 3, 3, 5), (1, 4, 2, 2, 3)]:
        cur, bias, w, g = _inputs(shape, 7)
        kw = dict(beta=0.95, threshold=1.0, reset="subtract", surrogate="arctan", scale=2.0)
        got = _vjp(lambda c, b, w_: fused.lif_dense(c, b, w_, **kw), cur, bias, w, g)
        ref = _vjp(lambda c, b, w_: _reference(c, b, w_, **kw), cur, bias, w, g)
        assert got[2].shape == bias.shape
        for name, a, r in zip(("y", "d_currents", "d_bias", "d_w"), got, ref):
            _assert_close(a, r, 2e-5, f"{name} {shape}")


@needs_native
def test_jit_vmap_and_determinism():
    cur, bias, w, g = _inputs((5, 4, 20), 3)
    kw = dict(beta=0.9, threshold=1.0, reset="subtract", surrogate="fast_sigmoid", scale=25.0)
    fn = jax.jit(lambda c, b, w_: _vjp(lambda c_, b_, ww: fused.lif_dense(c_, b_, ww, **kw), c, b, w_, g))
    a, b = fn(cur, bias, w), fn(cur, bias, w)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # vmap over a leading axis of independent problems: per-problem results
    stacked = np.stack([cur, cur * 0.5])
    out = jax.vmap(lambda c: fused.lif_dense(c, bias, w, **kw))(stacked)
    for i in range(2):
        _assert_close(out[i], fused.lif_dense(jnp.asarray(stacked[i]), bias, w, **kw), 1e-6, f"vmap {i}")


def _model(native_mode, learn_beta=False, conv=False):
    from configs import conv_digits, fc_digits
    cfg = (conv_digits if conv else fc_digits).get_config()
    cfg.model.num_steps = 4
    cfg.model.native = native_mode
    cfg.model.learn_beta = learn_beta
    cfg.model.init_gain = 3.0  # enough drive that the hidden layers spike
    return snn.model_from_config(cfg.model), cfg


@needs_native
@pytest.mark.parametrize("conv", [False, True])
def test_model_apply_fused_equals_unfused(conv):
    results = []
    for mode in ("on", "off"):
        model, cfg = _model(mode, conv=conv)
        params = snn.init_params(jax.random.key(1), model)
        x = (jax.random.uniform(jax.random.key(2), (4, 3) + tuple(cfg.model.input_shape)) < 0.4).astype(jnp.float32)

        def loss(p):
            out = snn.apply(p, model, x)
            return jnp.sum(out.logits * jnp.arange(1, out.logits.shape[-1] + 1)), out.logits

        (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(params)
        results.append((logits, grads))
    (la, ga), (lb, gb) = results
    _assert_close(la, lb, 1e-6, "logits")
    assert float(jnp.sum(jnp.abs(la))) > 0
    for path, a in jax.tree_util.tree_leaves_with_path(ga):
        b = gb
        for k in path:
            b = b[k.key]
        _assert_close(a, b, 2e-5, jax.tree_util.keystr(path))


def test_modes_and_structure(monkeypatch):
    with pytest.raises(ValueError, match="model.native 'sometimes'"):
        _model("sometimes")
    structure = dict(hidden_reset="subtract", learn_beta=False, readout_kind="dense", readout_pools=(),
                     readout_features=10, dtype=jnp.float32)
    assert fused.fits(**structure)
    for bad in (dict(hidden_reset="zero"), dict(learn_beta=True), dict(readout_kind="conv"),
                dict(readout_pools=("maxpool",)), dict(readout_features=fused.MAX_FEATURES + 1),
                dict(dtype=jnp.bfloat16)):
        assert not fused.fits(**{**structure, **bad}), bad
    assert not native.usable("off")
    assert native.usable("auto") == native.available()  # tests run on one CPU device
    with monkeypatch.context() as m:  # the data-parallel path: a sharded batch
        m.setattr(jax, "local_device_count", lambda: 4)
        assert not native.usable("auto")
        with pytest.raises(ValueError, match="4 local devices"):
            native.usable("on")
    # without the library: auto falls back, on names the reason
    monkeypatch.setattr(native, "load", lambda: native.Native(None, None, "no C++ compiler (g++) on PATH"))
    assert not native.usable("auto")
    with pytest.raises(ValueError, match="no C\\+\\+ compiler"):
        native.usable("on")
    with pytest.raises(RuntimeError, match="not available"):
        fused.lif_dense(jnp.zeros((2, 2, 3)), jnp.zeros(3), jnp.zeros((3, 2)), beta=0.9)
    model, cfg = _model("auto")
    x = jnp.ones((4, 2) + tuple(cfg.model.input_shape))
    logits = snn.apply(snn.init_params(jax.random.key(0), model), model, x).logits  # the XLA path
    assert logits.shape == (2, 10)


def test_learnable_beta_keeps_op_by_op_path():
    model, cfg = _model("auto", learn_beta=True)
    params = snn.init_params(jax.random.key(0), model)
    x = jnp.ones((4, 2) + tuple(cfg.model.input_shape))
    jaxpr = str(jax.make_jaxpr(lambda p: snn.apply(p, model, x).logits)(params))
    assert "spikepipe_lif_dense" not in jaxpr
    if native.available():
        model, _ = _model("auto")
        jaxpr = str(jax.make_jaxpr(lambda p: snn.apply(p, model, x).logits)(snn.init_params(jax.random.key(0), model)))
        assert "spikepipe_lif_dense_fwd" in jaxpr


@needs_native
def test_bad_arguments_name_the_problem():
    cur, bias, w, _ = _inputs((3, 2, 8), 4)
    with pytest.raises(ValueError, match="do not fit 8 hidden neurons"):
        fused.lif_dense(cur, bias, w[:5], beta=0.9)
    with pytest.raises(ValueError, match="reset 'subtract' or 'none'"):
        fused.lif_dense(cur, bias, w, beta=0.9, reset="zero")
    with pytest.raises(ValueError, match="beta must be a number in"):
        fused.lif_dense(cur, bias, w, beta=1.5)
    with pytest.raises(ValueError, match="float32"):
        fused.lif_dense(cur.astype(np.float16), bias, w, beta=0.9)


def test_build_is_keyed_and_atomic(tmp_path, monkeypatch):
    """A build lands under a name keyed by source, flags, compiler and CPU, or not at all."""
    compiler = native._compiler()
    if compiler is None:
        pytest.skip("no C++ compiler")
    monkeypatch.setenv("SPIKEPIPE_NATIVE_DIR", str(tmp_path))
    path = native.library_path(compiler)
    assert path.parent == tmp_path and path.name.startswith("libspikepipe-") and path.suffix == ".so"
    monkeypatch.setenv("SPIKEPIPE_NATIVE_FLAGS", "-DSPIKEPIPE_TEST_FLAG")
    assert native.library_path(compiler) != path
    monkeypatch.setenv("SPIKEPIPE_NATIVE_FLAGS", "-this-flag-does-not-exist")
    with pytest.raises(RuntimeError, match="building the native kernels failed"):
        native.build(compiler)
    assert list(tmp_path.iterdir()) == []  # no half-written library left behind


@pytest.mark.skipif(native._compiler() is None, reason="no C++ compiler")
@pytest.mark.skipif("-mno-avx512f" in os.environ.get("SPIKEPIPE_NATIVE_FLAGS", ""), reason="already the portable build")
def test_portable_loops_without_avx512(tmp_path, repo_root):
    """The kernels' non-AVX-512 loops (other CPUs), built with -mno-avx512f, pass the value tests."""
    env = dict(os.environ, SPIKEPIPE_NATIVE="1", SPIKEPIPE_NATIVE_DIR=str(tmp_path),
               SPIKEPIPE_NATIVE_FLAGS="-mno-avx512f")
    selected = "matches_op_by_op or readout_widths or conv_shaped or model_apply_fused"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", selected,
                           "tests/test_fused.py"], cwd=repo_root, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-500:]
    assert len(list(tmp_path.glob("libspikepipe-*.so"))) == 1  # the portable build was made and used

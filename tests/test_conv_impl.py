"""The im2col convolution (``conv_impl="im2col"``) against ``lax.conv`` and a NumPy im2col."""
import importlib
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spikepipe_jax import native, snn, spec
from spikepipe_jax.snn import layers

# the input-gradient fold in XLA, and (where the kernels build) in the native col2im kernel
NATIVE = (False, True) if native.available() else (False,)

# (H, W, C, F, k, stride, padding): odd sizes, stride 1 and 2, padding 0, 1 and 2.
GEOMETRIES = [(7, 9, 3, 5, 3, 1, 0), (7, 9, 3, 5, 3, 2, 1), (8, 6, 2, 4, 4, 2, 2), (5, 5, 1, 2, 5, 1, 0),
              (6, 7, 2, 3, 1, 2, 0), (11, 10, 2, 3, 5, 1, 1), (9, 9, 1, 4, 3, 1, 1)]


def _conv_info(h, w, c, f, k, s, p, pools=()):
    layers_spec = [dict(kind="conv", features=f, kernel=k, stride=s, padding=p)]
    layers_spec += [dict(kind=kind, window=win) for kind, win in pools]
    layers_spec += [dict(kind="dense", features=2)]
    return spec.parse_spec(layers_spec, (h, w, c))[0]


def _numpy_conv(x, w, s, p):
    """Direct loops over output pixels and taps (float64): the independent reference."""
    x = np.pad(x.astype(np.float64), ((0, 0), (p, p), (p, p), (0, 0)))
    k = w.shape[0]
    ho, wo = (x.shape[1] - k) // s + 1, (x.shape[2] - k) // s + 1
    y = np.zeros((x.shape[0], ho, wo, w.shape[3]))
    for a in range(k):
        for b in range(k):
            y += np.einsum("nijc,cf->nijf", x[:, a:a + s * (ho - 1) + 1:s, b:b + s * (wo - 1) + 1:s, :], w[a, b])
    return y


def _value_and_vjp(conv):
    @jax.jit
    def f(x, w, dy):
        y, vjp = jax.vjp(conv, x, w)
        return (y, *vjp(dy))
    return f


@pytest.mark.parametrize("geom,blocks", [(g, (1, 2, 3) if i < 4 else (1, 2)) for i, g in enumerate(GEOMETRIES)])
def test_values_and_gradients_equal_lax_conv(geom, blocks):
    h, w, c, f, k, s, p = geom
    rng = np.random.default_rng(sum(geom))
    x = rng.normal(size=(3, h, w, c)).astype(np.float32)
    wt = rng.normal(size=(k, k, c, f)).astype(np.float32)
    y_ref = layers._conv_xla(jnp.asarray(x), jnp.asarray(wt), s, p)
    dy = rng.normal(size=y_ref.shape).astype(np.float32)
    _, gx_ref, gw_ref = _value_and_vjp(lambda a, b: layers._conv_xla(a, b, s, p))(x, wt, dy)
    np.testing.assert_allclose(np.asarray(y_ref), _numpy_conv(x, wt, s, p), rtol=1e-5, atol=1e-4)
    for block, nat in [(b, n) for b in blocks for n in NATIVE]:
        y, gx, gw = _value_and_vjp(lambda a, b: layers._conv_im2col(a, b, s, p, block, nat))(x, wt, dy)
        assert y.shape == y_ref.shape, (block, nat)
        np.testing.assert_allclose(np.asarray(y), _numpy_conv(x, wt, s, p), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(np.asarray(gx), np.asarray(gx_ref), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.asarray(gw), np.asarray(gw_ref), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("geom", GEOMETRIES[:4])
def test_apply_op_public_switch(geom):
    h, w, c, f, k, s, p = geom
    info = _conv_info(h, w, c, f, k, s, p)
    params = layers.init_layer(jax.random.key(1), info)
    x = jax.random.normal(jax.random.key(2), (2, h, w, c))
    ref = layers.apply_op(params, x, info)  # default: lax.conv
    for impl in ("im2col", "auto", "xla"):
        out = jax.jit(lambda prm, xx: layers.apply_op(prm, xx, info, conv_impl=impl))(params, x)
        assert out.shape == (2, *info.op_shape)
        np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)


def test_patch_indices_match_numpy_im2col():
    h, w, c, k, s = 6, 7, 2, 3, 2
    x = np.arange(h * w * c).reshape(h, w, c)
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    expect = np.stack([x[s * i:s * i + k, s * j:s * j + k, :].reshape(-1)
                       for i in range(ho) for j in range(wo)])
    np.testing.assert_array_equal(x.reshape(-1)[layers._patch_indices(h, w, c, k, s)], expect)


@pytest.mark.parametrize("pools,shape,conv", [
    ((("maxpool", 2),), (12, 12, 1), (4, 5, 1, 0)),            # 2x2 blocks, pool fused on the block axis
    ((("avgpool", 2), ("maxpool", 2)), (8, 8, 2), (3, 3, 1, 1)),  # blocks + a second pool
    ((("maxpool", 2),), (12, 12, 12), (5, 5, 1, 0)),           # no blocks (k*k*C >= 64): pool, then bias
    ((("maxpool", 3),), (11, 11, 1), (2, 3, 1, 0)),            # blocks of 2 but a window of 3
])
def test_apply_synapse_with_pools_equals_xla(pools, shape, conv):
    f, k, s, p = conv
    info = _conv_info(*shape, f, k, s, p, pools)
    params = layers.init_layer(jax.random.key(3), info)
    params["b"] = params["b"] + 0.3
    # Binary inputs, as in an SNN: many exact ties inside the max-pool windows.
    x = (jax.random.uniform(jax.random.key(4), (3, *shape)) < 0.3).astype(jnp.float32)

    def run(impl, nat=False, binary=False):
        return lambda prm, xx: layers.apply_synapse(prm, xx, info, conv_impl=impl, native=nat,
                                                    binary_input=binary)

    g = jax.random.normal(jax.random.key(5), (3, *info.out_shape))
    ref = _value_and_vjp(run("xla"))(params, x, g)
    # binary_input: the backward pass keeps the 0/1 input as uint8, the same gradients
    for nat, binary in [(n, b) for n in NATIVE for b in (False, True)]:
        out = _value_and_vjp(run("im2col", nat, binary))(params, x, g)
        assert out[0].shape == (3, *info.out_shape)
        np.testing.assert_allclose(np.asarray(out[0]), np.asarray(ref[0]), rtol=1e-5, atol=1e-5)
        for a, b in zip(out[1:], ref[1:]):  # d params, d x
            for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
                np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-4, atol=1e-4)


def test_backward_keeps_the_input_not_the_patches():
    """What the im2col VJP keeps for the backward pass is x (uint8 when the caller promises
    binary input), never the ``k*k`` times larger patch matrix; the gradients are those of
    plain autodiff of the same gather + GEMM, which does keep the patches."""
    n, k, c, f = 64, 5, 12, 16
    x = (jax.random.uniform(jax.random.key(0), (n, 12, 12, c)) < 0.3).astype(jnp.float32)
    w = jax.random.normal(jax.random.key(1), (k, k, c, f))
    dy = jax.random.normal(jax.random.key(2), (n, 8, 8, f))

    def keeping_patches(a, b):
        cols, _ = layers._gather_patches(a, k, 1, 0, 1)
        return (cols.reshape(-1, cols.shape[-1]) @ b.reshape(-1, f)).reshape(n, 8, 8, f)

    patch_bytes = n * 8 * 8 * k * k * c * 4
    _, ref_vjp = jax.vjp(keeping_patches, x, w)
    assert max(l.nbytes for l in jax.tree.leaves(ref_vjp)) >= patch_bytes  # the reference keeps them
    for binary in (False, True):
        _, vjp = jax.vjp(lambda a, b: layers._conv_im2col(a, b, 1, 0, 1, False, binary), x, w)
        kept = jax.tree.leaves(vjp)
        assert max(l.nbytes for l in kept) < patch_bytes / 10, [(l.dtype, l.shape) for l in kept]
        assert any(l.dtype == jnp.uint8 and l.shape == x.shape for l in kept) == binary
        for u, v in zip(jax.jit(vjp)(dy), jax.jit(ref_vjp)(dy)):
            np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("geom", [(12, 12, 12, 16, 5, 1, 0), (9, 9, 8, 6, 3, 2, 1)])
def test_image_chunks_equal_one_pass(geom, monkeypatch):
    """Long patches over many images: the forward pass (and with remat the backward pass)
    loops over image chunks; the values and gradients are those of lax.conv."""
    h, w, c, f, k, s, p = geom
    monkeypatch.setattr(layers, "_WGRAD_ROWS", 200)  # small chunks at test sizes
    x = (jax.random.uniform(jax.random.key(0), (40, h, w, c)) < 0.3).astype(jnp.float32)
    assert layers._image_chunks(x.shape, k, c, s, p, 1) > 1
    wt = jax.random.normal(jax.random.key(1), (k, k, c, f))
    y_ref = layers._conv_xla(x, wt, s, p)
    dy = jax.random.normal(jax.random.key(2), y_ref.shape)
    ref = _value_and_vjp(lambda a, b: layers._conv_xla(a, b, s, p))(x, wt, dy)
    for nat, binary, remat in [(n, b, r) for n in NATIVE for b in (False, True) for r in (False, True)]:
        out = _value_and_vjp(lambda a, b: layers._conv_im2col(a, b, s, p, 1, nat, binary, remat))(x, wt, dy)
        for u, v in zip(out, ref):
            np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-4, atol=1e-3)


def test_large_patches_chunk_the_backward_pass_without_remat(monkeypatch):
    """A backward pass whose patches would exceed ``_BWD_CHUNK_BYTES`` loops over image chunks
    as with ``model.remat``; smaller ones run in one pass. Gradients are lax.conv's either way."""
    monkeypatch.setattr(layers, "_WGRAD_ROWS", 200)
    x = (jax.random.uniform(jax.random.key(0), (40, 12, 12, 12)) < 0.3).astype(jnp.float32)
    wt = jax.random.normal(jax.random.key(1), (5, 5, 12, 16))
    dy = jax.random.normal(jax.random.key(2), (40, 8, 8, 16))
    ref = _value_and_vjp(lambda a, b: layers._conv_xla(a, b, 1, 0))(x, wt, dy)
    assert layers._patch_bytes(x.shape, 5, 1, 0, 1, jnp.float32) == 40 * 64 * 300 * 4
    for limit, chunked in ((1 << 30, False), (40 * 64 * 300 * 4 - 1, True)):
        monkeypatch.setattr(layers, "_BWD_CHUNK_BYTES", limit)
        _, vjp = jax.vjp(lambda a, b: layers._conv_im2col(a, b, 1, 0, 1, False, True), x, wt)
        assert ("scan" in str(jax.make_jaxpr(vjp)(dy))) == chunked
        out = _value_and_vjp(lambda a, b: layers._conv_im2col(a, b, 1, 0, 1, False, True))(x, wt, dy)
        for u, v in zip(out, ref):
            np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-4, atol=1e-3)


def test_block_choice_and_impl_resolution():
    small = _conv_info(12, 12, 1, 4, 5, 1, 0)
    wide = _conv_info(12, 12, 12, 4, 5, 1, 0)
    assert layers._im2col_block(small) == 2 and layers._im2col_block(wide) == 1
    assert layers.resolve_conv_impl("auto") == ("im2col" if jax.default_backend() == "cpu" else "xla")
    assert layers.resolve_conv_impl("xla") == "xla"
    with pytest.raises(ValueError, match="'winograd'"):
        layers.resolve_conv_impl("winograd")


def test_model_config_switch_and_whole_network_agreement():
    c = importlib.import_module("configs.conv_digits").get_config("smoke")
    assert c.model.conv_impl == "auto"
    models = {}
    for impl in ("xla", "im2col"):
        c.model.conv_impl = impl
        models[impl] = snn.model_from_config(c.model)
        assert models[impl].conv_impl == impl
    params = snn.init_params(jax.random.key(0), models["xla"])
    x = snn.encode("rate", jax.random.uniform(jax.random.key(1), (3, *c.model.input_shape)), 3,
                   jax.random.key(2))

    def loss(prm, model):
        out = snn.apply(prm, model, x)
        return jnp.sum(out.out_mem ** 2), out

    vg = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    (_, out_x), g_x = vg(params, models["xla"])
    (_, out_i), g_i = vg(params, models["im2col"])
    np.testing.assert_allclose(np.asarray(out_i.out_mem), np.asarray(out_x.out_mem), rtol=1e-4, atol=1e-5)
    for u, v in zip(jax.tree.leaves(g_i), jax.tree.leaves(g_x)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-3, atol=1e-4)
    c.model.conv_impl = "fft"
    with pytest.raises(ValueError, match="model.conv_impl 'fft'"):
        snn.model_from_config(c.model)
    # A ModelDef built by hand (without the field) keeps working and picks "auto".
    assert models["xla"]._replace(conv_impl="auto").conv_impl == "auto"
    assert snn.ModelDef._field_defaults["conv_impl"] == "auto"


def _numpy_maxpool_first(x, w):
    """PyTorch ``MaxPool2d`` (stride = window) forward and its input gradient for an all-ones
    upstream gradient, with PyTorch's CPU rule: scan each window row by row, move the argmax
    only on a strictly greater value."""
    n, h, wd, c = x.shape
    ho, wo = h // w, wd // w
    y = np.zeros((n, ho, wo, c), x.dtype)
    grad = np.zeros_like(x)
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                for ch in range(c):
                    best, at = -np.inf, None
                    for a in range(w):
                        for d in range(w):
                            v = x[b, i * w + a, j * w + d, ch]
                            if at is None or v > best:
                                best, at = v, (i * w + a, j * w + d)
                    y[b, i, j, ch] = best
                    grad[b, at[0], at[1], ch] += 1.0
    return y, grad


@pytest.mark.parametrize("window,shape", [(2, (3, 6, 8, 2)), (3, (2, 7, 9, 3)), (2, (2, 5, 5, 1))])
def test_maxpool_gradient_goes_to_first_maximum(window, shape):
    rng = np.random.default_rng(window)
    # Few distinct values: most windows hold ties (as conv outputs on binary spikes do).
    x = rng.integers(0, 3, size=shape).astype(np.float32)
    y_ref, g_ref = _numpy_maxpool_first(x, window)
    pool = lambda v: layers.pool(v, spec.Pool("maxpool", window))  # noqa: E731
    y, vjp = jax.vjp(pool, jnp.asarray(x))
    (g,) = vjp(jnp.ones_like(y))
    np.testing.assert_array_equal(np.asarray(y), y_ref)
    np.testing.assert_array_equal(np.asarray(g), g_ref)
    # Every window passes its whole gradient to exactly one element, the same as without ties.
    assert float(g.sum()) == y.size
    # Upstream gradients are routed to the chosen element, not just counted.
    dy = rng.normal(size=y.shape).astype(np.float32)
    (g2,) = jax.jit(lambda d: jax.vjp(pool, jnp.asarray(x))[1](d))(dy)
    up = np.zeros_like(x)
    up[:, :y.shape[1] * window, :y.shape[2] * window] = np.repeat(np.repeat(dy, window, 1), window, 2)
    np.testing.assert_array_equal(np.asarray(g2), g_ref * up)


def test_max_first_block_axis_and_nan():
    inf = jnp.inf
    x = jnp.asarray([[1.0, 3.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0], [jnp.nan, 1.0, 2.0, 0.5],
                     [1.0, jnp.nan, 5.0, jnp.nan], [-inf, -inf, -inf, -inf], [2.0, inf, inf, 1.0]])
    y, vjp = jax.vjp(lambda v: layers.max_first(v, (1,)), x)
    (g,) = vjp(jnp.asarray([10.0, 20.0, 30.0, 40.0, 50.0, 60.0]))
    y = np.asarray(y)
    np.testing.assert_array_equal(y[[0, 1, 4, 5]], [3.0, 0.0, -inf, inf])
    assert np.isnan(y[2]) and np.isnan(y[3])
    # PyTorch's MaxPool2d: first of equal maxima; a NaN wins, the last NaN of a window
    expected = [[0, 10, 0, 0], [20, 0, 0, 0], [30, 0, 0, 0], [0, 0, 0, 40], [50, 0, 0, 0], [0, 60, 0, 0]]
    np.testing.assert_array_equal(np.asarray(g), expected)
    # a window over two axes (row-major order: the same windows) takes the elementwise path
    y2, vjp2 = jax.vjp(lambda v: layers.max_first(v, (1, 2)), x.reshape(6, 2, 2))
    (g2,) = vjp2(jnp.asarray([10.0, 20.0, 30.0, 40.0, 50.0, 60.0]))
    np.testing.assert_array_equal(np.asarray(y2), y)
    np.testing.assert_array_equal(np.asarray(g2).reshape(6, 4), expected)
    with pytest.raises(ValueError, match="window of 256"):
        layers.max_first(jnp.zeros((2, 256)), (1,))


@pytest.mark.parametrize("conv_impl", ["xla", "im2col"])
def test_fused_bias_equals_bias_in_synapse(conv_impl):
    """``snn.apply`` (each bias added inside its LIF loop, after the pools) against the same net
    whose synapse adds the bias before pooling (``apply_synapse(bias=True)``, model biases
    zeroed), on conv + pools and dense layers: outputs and all gradients, biases included."""
    c = importlib.import_module("configs.conv_digits").get_config("smoke")
    c.model.conv_impl = conv_impl
    model = snn.model_from_config(c.model)
    params = snn.init_params(jax.random.key(0), model)
    params = jax.tree.map(lambda p: p + 0.05, params)  # non-trivial biases
    x = snn.encode("rate", jax.random.uniform(jax.random.key(1), (3, *c.model.input_shape)), 4,
                   jax.random.key(2))

    def loss(prm, bias_in_synapse):
        if bias_in_synapse:  # the layers composed by hand: bias in the synapse, zero bias in the LIF
            zeroed = {n: {**p, "b": jnp.zeros_like(p["b"])} for n, p in prm.items()}
            out = x
            for i, info in enumerate(model.infos):
                t, b = out.shape[:2]
                cur = layers.apply_synapse(prm[info.name], out.reshape((t * b,) + out.shape[2:]), info,
                                           conv_impl=conv_impl, bias=True)
                out = snn.layer_neurons(zeroed, model, cur.reshape((t, b) + cur.shape[1:]), i)
        else:
            out = snn.apply(prm, model, x)
        return jnp.sum(out.out_mem ** 2) + jnp.sum(out.logits), out

    vg = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    (l_f, out_f), g_f = vg(params, False)
    (l_s, out_s), g_s = vg(params, True)
    np.testing.assert_allclose(np.asarray(out_f.out_mem), np.asarray(out_s.out_mem), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(l_f), float(l_s), rtol=1e-5)
    for (path, u), v in zip(jax.tree_util.tree_leaves_with_path(g_f), jax.tree.leaves(g_s)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-4, atol=1e-5, err_msg=str(path))
    assert float(jnp.abs(g_f["layer_0"]["b"]).sum()) > 0.0


@pytest.mark.parametrize("geom", [(9, 9, 8, 5, 3, 1, 1), (10, 8, 12, 6, 3, 2, 0)])
def test_chunked_weight_gradient_equals_lax_conv(geom, monkeypatch):
    """Long patches (k*k*C >= 64) take the chunked weight gradient (``_wgrad_chunks``); small
    chunk sizes make it kick in on small inputs here."""
    # conv_medium: its second conv in 16 chunks of 12,800 rows, its first (K = 36) in one piece
    assert layers._wgrad_chunks(204800, 300) == 16 and layers._wgrad_chunks(460800, 36) == 1
    assert layers._wgrad_chunks(1500, 300) == 1  # too small to split
    monkeypatch.setattr(layers, "_WGRAD_ROWS", 100)
    monkeypatch.setattr(layers, "_WGRAD_MIN_ROWS", 16)
    h, w, c, f, k, s, p = geom
    n = 6
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    g = layers._wgrad_chunks(n * ho * wo, k * k * c)
    assert g > 1 and (n * ho * wo) % g == 0
    rng = np.random.default_rng(k * c)
    x = (rng.random((n, h, w, c)) < 0.3).astype(np.float32)
    wt = rng.normal(size=(k, k, c, f)).astype(np.float32)
    dy = rng.normal(size=(n, ho, wo, f)).astype(np.float32)
    ref = _value_and_vjp(lambda a, b: layers._conv_xla(a, b, s, p))(x, wt, dy)
    for nat in NATIVE:
        out = _value_and_vjp(lambda a, b: layers._conv_im2col(a, b, s, p, 1, nat))(x, wt, dy)
        for u, v in zip(out, ref):
            np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(37, 50, 3), (37, 3, 50), (8, 16, 16)])
def test_dense_matches_matmul(shape):
    """``layers.dense`` (custom VJP choosing the weight-gradient GEMM's layout) against plain
    ``x @ w``: values, and both gradients, for narrow (F < K), wide and square weights."""
    m, k, f = shape
    rng = np.random.default_rng(0)
    x, w, g = (jnp.asarray(rng.normal(size=s).astype(np.float32)) for s in ((m, k), (k, f), (m, f)))
    y, vjp = jax.vjp(layers.dense, x, w)
    y_ref, vjp_ref = jax.vjp(lambda a, b: a @ b, x, w)
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=1e-6, atol=1e-6)
    for got, ref in zip(jax.jit(vjp)(g), vjp_ref(g)):
        assert got.shape == ref.shape
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not native.available(), reason="native kernels not built")
@pytest.mark.parametrize("shape,density", [((300, 784, 1000), 0.3),  # fc_small-like: several row chunks, tiles, K blocks
                                           ((37, 50, 3), 0.5),       # fewer columns than a vector
                                           ((5, 130, 77), 0.0),      # no spikes at all
                                           ((9, 7, 130), 1.0)])      # every input spiking
def test_binary_dense_matches_matmul(shape, density):
    """``layers.binary_dense`` (the native kernels for 0/1 inputs: sums of the weight rows the
    spikes select, and of the gradient rows for the weight gradient) against ``x @ w``: values
    and both gradients, bit-identical on a second call."""
    m, k, f = shape
    rng = np.random.default_rng(1)
    x = jnp.asarray((rng.random((m, k)) < density).astype(np.float32))
    w, g = (jnp.asarray(rng.normal(size=s).astype(np.float32)) for s in ((k, f), (m, f)))
    y, vjp = jax.vjp(jax.jit(layers.binary_dense), x, w)
    y_ref, vjp_ref = jax.vjp(lambda a, b: a @ b, x, w)
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=1e-5, atol=1e-4)
    got = jax.jit(vjp)(g)
    for a, b in zip(got, vjp_ref(g)):
        assert a.shape == b.shape and a.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(jax.jit(layers.binary_dense)(x, w)), np.asarray(y))
    np.testing.assert_array_equal(np.asarray(jax.jit(vjp)(g)[1]), np.asarray(got[1]))


@pytest.mark.skipif(not native.available(), reason="native kernels not built")
def test_rate_coded_dense_layer_runs_on_the_binary_kernel():
    """``model.binary_input`` (set by the training loop for rate / latency coding) puts a dense
    first layer on the binary kernel when native kernels are on, not otherwise; the currents
    and their weight gradient equal the GEMM path's."""
    model = snn.ModelDef(infos=spec.parse_spec([dict(kind="dense", features=70), dict(kind="dense", features=10)],
                                               (9, 9, 1)),
                         beta=0.9, threshold=1.0, reset="subtract", surrogate="fast_sigmoid", surrogate_scale=25.0,
                         readout="spike", learn_beta=False, remat=False)
    params = snn.init_params(jax.random.key(0), model)
    x = (jax.random.uniform(jax.random.key(1), (4, 6, 9, 9, 1)) < 0.3).astype(jnp.float32)

    def currents(m, nat):
        return lambda p: snn.models.layer_currents(p, m, x, 0, native=nat).sum()

    hlo = lambda m, nat: jax.jit(jax.value_and_grad(currents(m, nat))).lower(params).as_text()
    binary = model._replace(binary_input=True)
    assert "spikepipe_binary_dense_fwd" in hlo(binary, True) and "spikepipe_binary_dense_wgrad" in hlo(binary, True)
    assert "spikepipe_binary_dense" not in hlo(model, True) and "spikepipe_binary_dense" not in hlo(binary, False)
    for a, b in zip(jax.tree.leaves(jax.grad(currents(binary, True))(params)),
                    jax.tree.leaves(jax.grad(currents(model, False))(params))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-4)
    assert snn.encoders.is_binary("rate") and snn.encoders.is_binary("latency")
    assert not snn.encoders.is_binary("direct") and not snn.encoders.is_binary("rate", temporal=True)


@pytest.mark.skipif(native._compiler() is None, reason="no C++ compiler")
def test_binary_kernels_portable_build(tmp_path, repo_root):
    """The binary kernels built without AVX2 (the portable bit-mask loop, vectors on SSE) pass
    the same value and gradient tests."""
    env = dict(os.environ, SPIKEPIPE_NATIVE="1", SPIKEPIPE_NATIVE_DIR=str(tmp_path),
               SPIKEPIPE_NATIVE_FLAGS="-mno-avx512f -mno-avx2")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k",
                           "binary_dense_matches or rate_coded", "tests/test_conv_impl.py"],
                          cwd=repo_root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "5 passed" in proc.stdout, proc.stdout[-500:]
    assert len(list(tmp_path.glob("libspikepipe-*.so"))) == 1  # the portable build was made and used


@pytest.mark.skipif(not native.available(), reason="native kernels not built")
@pytest.mark.parametrize("geom", [(10, 10, 8, 6, 3, 1, 1, 2), (11, 9, 8, 5, 3, 2, 1, 2), (7, 7, 16, 70, 3, 1, 0, 1)])
def test_binary_conv_from_the_image_equals_lax_conv(geom):
    """Spikes into an im2col conv with the native kernels: the patch products are computed from
    the padded image (no patch matrix), with output blocks, strides and padding; values and
    both gradients are lax.conv's, and the kernels are in the program."""
    h, w, c, f, k, s, p, block = geom
    x = (jax.random.uniform(jax.random.key(0), (6, h, w, c)) < 0.3).astype(jnp.float32)
    wt = jax.random.normal(jax.random.key(1), (k, k, c, f))
    y_ref = layers._conv_xla(x, wt, s, p)
    dy = jax.random.normal(jax.random.key(2), y_ref.shape)
    fn = lambda a, b: layers._conv_im2col(a, b, s, p, block, True, True)
    assert layers._binary_patches(True, True, layers._block_weights(wt, block, s))
    hlo = jax.jit(lambda a, b: jax.vjp(fn, a, b)[1](dy)).lower(x, wt).as_text()
    assert "spikepipe_binary_conv_wgrad" in hlo and "spikepipe_binary_conv_fwd" in jax.jit(fn).lower(x, wt).as_text()
    out = _value_and_vjp(fn)(x, wt, dy)
    ref = _value_and_vjp(lambda a, b: layers._conv_xla(a, b, s, p))(x, wt, dy)
    for u, v in zip(out, ref):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-4, atol=1e-4)

"""Synaptic layers (dense, conv2d NHWC) and pooling as pure functions over per-layer params.

Parameters of weight layer ``l`` are ``{"w": ..., "b": ...}`` (plus ``"beta"`` when the decay is
learnable): dense ``w`` is ``[K, F]``, conv ``w`` is ``[k, k, C, F]`` (HWIO). Initialisation is
PyTorch's default for ``nn.Linear``/``nn.Conv2d`` (uniform in ±1/sqrt(fan_in) for weight and
bias), so networks start where their snnTorch counterparts start.

These layers have no recurrent synapses, so the synaptic op of a layer can be applied to all T
time steps at once with time folded into the batch axis (the F_l task of the cost model); only
the LIF recurrence is sequential in time.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from spikepipe_jax import native as native_lib
from spikepipe_jax.spec import LayerInfo, Pool


def init_layer(key: jax.Array, info: LayerInfo, dtype=jnp.float32, gain: float = 1.0) -> dict[str, jax.Array]:
    """PyTorch-default init: ``w, b ~ U(-g/sqrt(fan_in), g/sqrt(fan_in))`` with gain ``g`` (default 1).

    Deep SNNs need ``g > 1`` so that spikes reach the last layers at initialisation
    (``config.model.init_gain``; see ``configs/deep_digits.py``).
    """
    w_key, b_key = jax.random.split(key)
    bound = gain / math.sqrt(info.fan_in)
    if info.kind == "dense":
        w_shape = (info.fan_in, info.features)
    else:
        w_shape = (info.kernel, info.kernel, info.in_shape[-1], info.features)
    # drawn flat and reshaped: the same numbers (threefry counts over the flat index), but XLA:CPU
    # compiles some 2-D draws (e.g. [1000, 10]) ~5x slower, seconds of every run's start-up
    w = jax.random.uniform(w_key, (math.prod(w_shape),), dtype, -bound, bound).reshape(w_shape)
    b = jax.random.uniform(b_key, (info.features,), dtype, -bound, bound)
    return {"w": w, "b": b}


CONV_IMPLS = ("auto", "xla", "im2col")


def resolve_conv_impl(conv_impl: str) -> str:
    """``"auto"`` -> ``"im2col"`` on CPU (measured fastest there), ``"xla"`` on other backends."""
    if conv_impl not in CONV_IMPLS:
        raise ValueError(f"unknown conv_impl {conv_impl!r}; expected one of {CONV_IMPLS}")
    if conv_impl == "auto":
        return "im2col" if jax.default_backend() == "cpu" else "xla"
    return conv_impl


def _conv_xla(x: jax.Array, w: jax.Array, stride: int, padding: int) -> jax.Array:
    """``lax.conv_general_dilated`` in NHWC/HWIO."""
    return jax.lax.conv_general_dilated(
        x, w, window_strides=(stride, stride), padding=((padding, padding), (padding, padding)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _patch_indices(h: int, w: int, c: int, k: int, stride: int) -> np.ndarray:
    """Flat indices into one ``[h, w, c]`` sample of the patch matrix: ``[Ho*Wo, k*k*c]``."""
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    i = np.arange(ho).reshape(ho, 1, 1, 1, 1) * stride + np.arange(k).reshape(1, 1, k, 1, 1)
    j = np.arange(wo).reshape(1, wo, 1, 1, 1) * stride + np.arange(k).reshape(1, 1, 1, k, 1)
    idx = (i * w + j) * c + np.arange(c).reshape(1, 1, 1, 1, c)  # [ho, wo, a, b, c]
    return idx.reshape(ho * wo, k * k * c).astype(np.int32)


def _width_patches(xr: jax.Array, p: int, stride: int, nw: int) -> jax.Array:
    """``[N, R, W, C] -> [N, R, nw, p*C]``: the ``p`` strided width taps side by side."""
    n, r, _, c = xr.shape
    taps = [jax.lax.slice(xr, (0, 0, v, 0), (n, r, v + stride * (nw - 1) + 1, c), (1, 1, stride, 1))
            for v in range(p)]
    return taps[0] if p == 1 else jnp.concatenate(taps, axis=-1)


def _block_weights(w: jax.Array, block: int, stride: int = 1) -> jax.Array:
    """HWIO ``w`` -> ``[p*p*C, b*b*F]`` weights of a ``b x b`` output block, ``p = (b-1)s + k``.

    ``Wb[(u, v, c), (i, j, f)] = w[u - s*i, v - s*j, c, f]`` where that tap exists, else 0.
    """
    k, _, c, f = w.shape
    if block == 1:
        return w.reshape(k * k * c, f)
    p = (block - 1) * stride + k
    wb = jnp.zeros((p, p, c, block, block, f), w.dtype)
    for i in range(block):
        for j in range(block):
            wb = wb.at[stride * i:stride * i + k, stride * j:stride * j + k, :, i, j, :].set(w)
    return wb.reshape(p * p * c, block * block * f)


def _unblock_weight_grad(dwb: jax.Array, k: int, c: int, f: int, block: int, stride: int = 1) -> jax.Array:
    """Transpose of :func:`_block_weights`: sums the ``b*b`` shifted copies back onto ``w``."""
    if block == 1:
        return dwb.reshape(k, k, c, f)
    p = (block - 1) * stride + k
    dwb = dwb.reshape(p, p, c, block, block, f)
    return sum(dwb[stride * i:stride * i + k, stride * j:stride * j + k, :, i, j, :]
               for i in range(block) for j in range(block))


def _im2col_geometry(x_shape, k: int, stride: int, padding: int, block: int):
    """Output size and the bottom/right zero padding that makes the output a whole number of blocks."""
    _, h, wd, _ = x_shape
    ho, wo = (h + 2 * padding - k) // stride + 1, (wd + 2 * padding - k) // stride + 1
    nbh, nbw = -(-ho // block), -(-wo // block)
    extra_h = (nbh * block - 1) * stride + k - (h + 2 * padding)  # >= 0 only matters for block > 1
    extra_w = (nbw * block - 1) * stride + k - (wd + 2 * padding)
    return ho, wo, nbh, nbw, max(extra_h, 0), max(extra_w, 0)


def _padded_shape(x_shape, k, stride, padding, block):
    """Shape of the zero-padded input the patches are gathered from."""
    n, h, wd, c = x_shape
    _, _, _, _, eh, ew = _im2col_geometry(x_shape, k, stride, padding, block)
    return (n, h + 2 * padding + eh, wd + 2 * padding + ew, c)


def _pad_input(x, k, stride, padding, block):
    """``x`` zero-padded as the patches read it (:func:`_padded_shape`)."""
    _, _, _, _, eh, ew = _im2col_geometry(x.shape, k, stride, padding, block)
    if padding or eh or ew:
        return jnp.pad(x, ((0, 0), (padding, padding + eh), (padding, padding + ew), (0, 0)))
    return x


def _gather_patches(x, k, stride, padding, block, row_chunks=True):
    """The patch matrix of ``x`` ``[N, H, W, C]``: ``[M, K]``, or (``row_chunks``) ``[g, M/g, K]``
    in the weight gradient's row chunks (:func:`_wgrad_chunks`), and the padded input's shape."""
    c, n = x.shape[3], x.shape[0]
    _, _, nbh, nbw, _, _ = _im2col_geometry(x.shape, k, stride, padding, block)
    xp = _pad_input(x, k, stride, padding, block)
    _, hp, wp, _ = xp.shape
    pk = (block - 1) * stride + k  # patch side: a b x b block of outputs sees pk x pk inputs
    idx = _patch_indices(hp, wp, c, pk, block * stride)
    cols = jnp.take(xp.reshape(n, hp * wp * c), idx, axis=1, mode="clip")  # gather: one fused pass
    m, kc = n * nbh * nbw, pk * pk * c
    g = _wgrad_chunks(m, kc) if row_chunks else 1
    return cols.reshape((g, m // g, kc) if g > 1 else (m, kc)), xp.shape


def _image_chunks(x_shape, k: int, c: int, stride: int, padding: int, block: int) -> int:
    """Number of image chunks ``G`` the conv's passes loop over (1 = one pass over all).

    Long patches (``K = p*p*C >= 64``) over many images are gathered and multiplied ``N/G``
    images at a time (a loop over ``G``, ``G`` the smallest divisor of ``N`` giving at most
    ``_WGRAD_ROWS`` patch rows per chunk), so that the patch matrix exists one chunk at a
    time: conv_medium's second conv at T*B = 3200 images holds 245 MB of patches at once
    otherwise, vgg_large's second 604 MB. The backward pass loops over the same chunks with
    ``model.remat`` only (it measured ~1.3x slower for conv_medium's step).
    """
    n = x_shape[0]
    _, _, nbh, nbw, _, _ = _im2col_geometry(x_shape, k, stride, padding, block)
    pk = (block - 1) * stride + k
    rows = nbh * nbw
    if pk * pk * c < 64 or n * rows <= _WGRAD_ROWS:
        return 1
    lo = -(-n * rows // _WGRAD_ROWS)
    return next(g for g in range(lo, n + 1) if n % g == 0)


# Backward passes whose patch matrix would be larger than this run over image chunks even
# without ``model.remat`` (vgg_large's convs at T*B = 1024: patches of up to 576 MiB, and as
# much again for their gradient); smaller ones in one pass, which is faster. conv_medium's
# second conv (234 MiB) is chunked too: a smaller temporary buffer per step, for a slower step
# (the trade is measured in benchmarks/README.md, section 10).
_BWD_CHUNK_BYTES = 128 << 20


def _patch_bytes(x_shape, k: int, stride: int, padding: int, block: int, dtype) -> int:
    """Bytes of the patch matrix of an im2col conv of ``x_shape`` (all images at once)."""
    _, _, nbh, nbw, _, _ = _im2col_geometry(x_shape, k, stride, padding, block)
    pk = (block - 1) * stride + k
    return x_shape[0] * nbh * nbw * pk * pk * x_shape[3] * jnp.dtype(dtype).itemsize


def _im2col_fwd(x, w, stride, padding, block, native=False, binary=False, remat=False):
    k, f = w.shape[0], w.shape[3]
    n = x.shape[0]
    _, _, nbh, nbw, _, _ = _im2col_geometry(x.shape, k, stride, padding, block)
    # Materialise x first: XLA would otherwise fuse x's producer (e.g. the rate encoder's
    # hash) into the gather and recompute it for each of the ~p*p/(b*b) patches that read it.
    x = jax.lax.optimization_barrier(x)
    wb = _block_weights(w, block, stride)
    if _binary_patches(native, binary, wb):  # spikes: sums of the weight rows they select
        x8 = x.astype(jnp.uint8)
        pk = (block - 1) * stride + k
        y = _binary_conv(_pad_input(x8, k, stride, padding, block), wb, pk, block * stride, nbh, nbw)
        return y.reshape(n, nbh, nbw, block * block, f), (x8, wb, _padded_shape(x.shape, k, stride, padding, block))
    chunks = _image_chunks(x.shape, k, x.shape[3], stride, padding, block)
    if chunks > 1:  # N/G images at a time: the patches of one chunk exist at once
        def chunk(xc):
            cols, _ = _gather_patches(xc, k, stride, padding, block, row_chunks=False)
            return cols @ wb

        y = jax.lax.map(chunk, x.reshape((chunks, n // chunks) + x.shape[1:]))
        xp_shape = _padded_shape(x.shape, k, stride, padding, block)
        y = y.reshape(n, nbh, nbw, block * block, f)
        return y, (x.astype(jnp.uint8) if binary else x, wb, xp_shape)
    cols, xp_shape = _gather_patches(x, k, stride, padding, block)
    g = cols.shape[0] if cols.ndim == 3 else 1
    # With a chunked weight gradient the forward GEMM is a batched product over the same
    # [g, M/g, K] patches: given two shapes of it, XLA wrote the gather out in its own layout
    # and transposed it once per shape (it doubled conv_medium's step; benchmarks/README.md section 5).
    if g > 1:
        y = jax.lax.dot_general(cols, jnp.broadcast_to(wb, (g,) + wb.shape), (((2,), (1,)), ((0,), (0,))))
    else:
        y = cols @ wb
    y = y.reshape(n, nbh, nbw, block * block, f)
    # The backward pass gathers the patches again from x (k*k/(s*s) times smaller than
    # them) instead of keeping them from here to there; binary x (spikes) is kept in 1 byte.
    return y, (x.astype(jnp.uint8) if binary else x, wb, xp_shape)


def _binary_conv(xp: jax.Array, a: jax.Array, patch: int, step: int, nbh: int, nbw: int,
                 weight_grad: bool = False) -> jax.Array:
    """The im2col conv's patch products on the binary kernels without the patch matrix: for the
    zero-padded ``uint8`` 0/1 input ``xp`` ``[N, Hp, Wp, C]`` and its ``nbh x nbw`` patches of
    ``patch x patch`` pixels every ``step`` pixels per image (the rows of :func:`_gather_patches`),
    ``P @ a`` ``[N*nbh*nbw, F]`` for block weights ``a`` ``[p*p*C, F]``, or with ``weight_grad``
    ``P^T @ a`` ``[p*p*C, F]`` for ``a = dY`` ``[N*nbh*nbw, F]``. The kernel reads each patch row's
    ``p`` runs of ``p*C`` contiguous bytes straight from ``xp``."""
    native_lib.require("binary_dense")
    n, _, _, c = xp.shape
    shape = (patch * patch * c, a.shape[1]) if weight_grad else (n * nbh * nbw, a.shape[1])
    target = "spikepipe_binary_conv_wgrad" if weight_grad else "spikepipe_binary_conv_fwd"
    return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(shape, jnp.float32), vmap_method="sequential")(
        xp, a.astype(jnp.float32), patch=np.int64(patch), step=np.int64(step), nbh=np.int64(nbh), nbw=np.int64(nbw))


def _binary_patches(native: bool, binary: bool, wb: jax.Array) -> bool:
    """Whether an im2col conv multiplies its patches on the binary kernels
    (:func:`_binary_conv`, straight from the input image): native kernels on, 0/1 input, float32
    weights, and patches of at least 64 values (shorter ones gain too little over the GEMM)."""
    return native and binary and wb.dtype == jnp.float32 and wb.shape[0] >= 64


_WGRAD_ROWS = 16384     # target rows per chunk of a chunked conv weight gradient
_WGRAD_MIN_ROWS = 1024  # no chunks smaller than this


def _wgrad_chunks(m: int, kc: int) -> int:
    """Number of row chunks ``g`` of the patch matrix ``[M, K]`` (1 = not chunked).

    The weight gradient ``P^T dY`` contracts over the long ``M = T*B*Ho*Wo`` axis. XLA:CPU
    gives that single product to Eigen, which ran ``conv_medium``'s second conv (``[204800,
    300]^T x [204800, 64]``) at 63 ms; as a batch of ``[F, c] x [c, K]`` products over
    chunks of ``c ~ 16k`` rows, summed, it takes 52-54 ms. Short patches (the first conv,
    ``K = 36``) are faster in one product (14 vs 17 ms) and are not chunked. ``g`` is the
    smallest divisor of ``M`` giving chunks of at most ``_WGRAD_ROWS`` rows, if those chunks
    have at least ``_WGRAD_MIN_ROWS``.
    """
    if kc < 64:
        return 1
    lo = max(2, -(-m // _WGRAD_ROWS))
    return next((g for g in range(lo, m // _WGRAD_MIN_ROWS + 1) if m % g == 0), 1)


def _patch_weight_grad(cols: jax.Array, dyb: jax.Array) -> jax.Array:
    """``P^T dY`` ``[K, F]`` from ``cols`` ``[M, K]`` or chunked ``[g, M/g, K]`` and ``dyb``
    ``[M, F]``."""
    if cols.ndim == 2:
        return cols.T @ dyb
    g, c, kc = cols.shape
    dwt = jax.lax.dot_general(dyb.reshape(g, c, -1), cols, (((1,), (1,)), ((0,), (0,))))  # [g, F, K]
    return dwt.sum(axis=0).T


def _im2col_bwd(stride, padding, block, native, binary, remat, res, dy):
    x, wb, _ = res
    x_shape = x.shape
    n = x_shape[0]
    f = dy.shape[-1]
    c = x_shape[3]
    pk = math.isqrt(wb.shape[0] // c)
    k = pk - (block - 1) * stride
    # This gather must not be merged with the forward pass's (that would keep the patches
    # alive across the step again; XLA:CPU drops optimisation barriers before CSE). A uint8
    # x differs from the forward's operand anyway; a float x gets a data dependency on dy:
    # + 0 * dy[0] (not folded for floats), exact but for the sign of a zero, and NaN where
    # dy has a NaN (the gradients have one there anyway).
    chunks = _image_chunks(x_shape, k, c, stride, padding, block) if remat or _patch_bytes(
        x_shape, k, stride, padding, block, dy.dtype) > _BWD_CHUNK_BYTES else 1
    keep8 = _binary_patches(native, binary, wb)  # x stays uint8: the binary conv kernel reads it
    if chunks > 1:  # N/G images at a time (see _image_chunks): patches and their gradient
        def chunk(dw, xs):
            xc, dyc = xs
            xc = xc if keep8 else xc.astype(dy.dtype)
            dxc, dwc = _im2col_bwd_images(xc, dyc, wb, stride, padding, block, native, row_chunks=False)
            return dw + dwc, dxc

        dw0 = jnp.zeros((k, k, c, f), dy.dtype)
        dw, dx = jax.lax.scan(chunk, dw0, (x.reshape((chunks, n // chunks) + x_shape[1:]),
                                           dy.reshape((chunks, n // chunks) + dy.shape[1:])))
        return dx.reshape(x_shape), dw
    if binary and not keep8:
        x = x.astype(dy.dtype)
    elif not binary:
        x = x + 0 * dy.reshape(-1)[0].astype(x.dtype)
    return _im2col_bwd_images(x, dy, wb, stride, padding, block, native)


def _im2col_bwd_images(x, dy, wb, stride, padding, block, native, row_chunks=True):
    """``(dx, dw)`` of the im2col conv for the images ``x`` and their ``dy``: ``x`` float, or
    ``uint8`` 0/1 for the binary kernel's weight gradient (:func:`_binary_patches`)."""
    x_shape = x.shape
    n, nbh, nbw, _, f = dy.shape
    c = x_shape[3]
    pk = math.isqrt(wb.shape[0] // c)
    k = pk - (block - 1) * stride
    dyb = dy.reshape(n * nbh * nbw, block * block * f)
    if x.dtype == jnp.uint8:
        xp = _pad_input(x, k, stride, padding, block)
        xp_shape = xp.shape
        dw = _unblock_weight_grad(_binary_conv(xp, dyb, pk, block * stride, nbh, nbw, weight_grad=True),
                                  k, c, f, block, stride)
        g = 1
    else:
        cols, xp_shape = _gather_patches(x, k, stride, padding, block, row_chunks)
        dw = _unblock_weight_grad(_patch_weight_grad(cols, dyb), k, c, f, block, stride)
        g = cols.shape[0] if cols.ndim == 3 else 1
    # the input gradient after the weight gradient (a barrier orders them), so that the
    # patches are freed before the patch gradient, as large as they, is made
    dyb, dw = jax.lax.optimization_barrier((dyb, dw))
    dyg = dyb.reshape(g, -1, dyb.shape[1])  # the weight gradient's chunks: one layout of dy
    if native and dy.dtype == jnp.float32:
        # dx = col2im(dyb @ wb^T): one GEMM over the same chunks, then the fold in a native
        # kernel, one image at a time in cache (spikepipe_jax/native/col2im.cc; timings in
        # benchmarks/README.md section 8)
        dp = jax.lax.dot_general(dyg, jnp.broadcast_to(wb, (g,) + wb.shape), (((2,), (2,)), ((0,), (0,))))
        return _native_col2im(dp.reshape(n, nbh, nbw, -1), x_shape, xp_shape, pk, block * stride, padding), dw
    # dx = col2im(dyb @ wb^T), one patch row u at a time: the [M, p*C] slice of the patch
    # gradient is folded back along the width (the transpose of its strided slices: pads and
    # adds that XLA fuses) and added into the input rows u, u + b*s, ...; a scatter-add (the
    # transpose of the gather) is ~5x slower on XLA:CPU, and one [M, p*p*C] GEMM + col2im is
    # ~1.5x slower.
    _, hp, wp, _ = xp_shape
    bs = block * stride
    wb_rows = wb.reshape(pk, pk * c, block * block * f)
    dxp = None
    for u in range(pk):
        wu = jnp.broadcast_to(wb_rows[u], (g,) + wb_rows[u].shape)
        dcu = jax.lax.dot_general(dyg, wu, (((2,), (2,)), ((0,), (0,)))).reshape(n, nbh, nbw, pk * c)
        _, vjp = jax.vjp(lambda xr: _width_patches(xr, pk, bs, nbw), jnp.zeros((n, nbh, wp, c), dy.dtype))
        (ru,) = vjp(dcu)  # [n, nbh, wp, c]: gradient of input rows u + bs * I
        ru = jax.lax.pad(ru, jnp.zeros((), ru.dtype),
                         ((0, 0, 0), (u, hp - u - (bs * (nbh - 1) + 1), bs - 1), (0, 0, 0), (0, 0, 0)))
        dxp = ru if dxp is None else dxp + ru
    return dxp[:, padding:padding + x_shape[1], padding:padding + x_shape[2], :], dw


def _native_col2im(dp: jax.Array, x_shape, xp_shape, patch: int, step: int, padding: int) -> jax.Array:
    """The native fold: ``dp`` ``[N, nbh, nbw, p*p*C]`` (patch gradients) -> ``dx`` ``x_shape``."""
    native_lib.require("col2im")
    return jax.ffi.ffi_call("spikepipe_col2im", jax.ShapeDtypeStruct(tuple(x_shape), jnp.float32),
                            vmap_method="sequential")(
        dp, patch=np.int64(patch), step=np.int64(step), pad=np.int64(padding),
        hp=np.int64(xp_shape[1]), wp=np.int64(xp_shape[2]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6, 7))
def _conv_im2col_blocks(x: jax.Array, w: jax.Array, stride: int, padding: int, block: int,
                        native: bool = False, binary: bool = False, remat: bool = False) -> jax.Array:
    r"""Convolution as GEMMs over explicitly gathered patches, output in block layout.

    Returns ``[N, nbh, nbw, b*b, F]``: output pixel ``(b*I + i, b*J + j)`` at
    ``[:, I, J, b*i + j]`` (blocks past ``Ho``, ``Wo`` hold the convolution of the zero
    padding added to complete them). See :func:`_conv_im2col` for the maths. ``native``: fold
    the input gradient in the native kernel (float32; :func:`_native_col2im`). ``binary``:
    the caller promises ``x`` holds only 0 and 1 (spikes), so the backward pass keeps it as
    ``uint8`` (wrong gradients otherwise; the values are unaffected). ``remat``: the backward
    pass too runs over image chunks (:func:`_image_chunks`; the forward always does), so
    that the patches and their gradient exist one chunk at a time (less memory, slower).
    ``native`` and ``binary`` with long patches: both directions multiply the patches on the
    binary kernels (:func:`_binary_patches`).
    """
    return _im2col_fwd(x, w, stride, padding, block, native, binary)[0]


_conv_im2col_blocks.defvjp(_im2col_fwd, _im2col_bwd)


def _conv_im2col(x: jax.Array, w: jax.Array, stride: int, padding: int, block: int = 1,
                 native: bool = False, binary: bool = False, remat: bool = False) -> jax.Array:
    r"""The same convolution as GEMMs over explicitly gathered patches (im2col).

    With :math:`x_p` the zero-padded input, the patch matrix has one row per output pixel
    :math:`(n, i, j)` and one column per kernel tap and input channel :math:`(a, b, c)`:

    .. math:: P[(n,i,j), (a,b,c)] = x_p[n, s i + a, s j + b, c], \qquad
              y = P \, W, \quad W = \mathrm{reshape}(w, [k^2 C, F]),

    so the column order matches the HWIO weight layout. The gradients are GEMMs too
    (custom VJP): :math:`\partial W = P^\top \partial y` and
    :math:`\partial P = \partial y \, W^\top`, scattered back onto :math:`x_p` (col2im) as
    the transpose of the strided slices that build :math:`P`. ``P`` itself is built with one
    gather (XLA:CPU fuses it into a single pass; the concatenation of slices costs ~3x more)
    and kept for the weight gradient: ``N*Ho*Wo*k*k*C`` floats.

    ``block = b > 1`` computes a ``b x b`` block of output pixels per GEMM row: the patch
    grows to :math:`p = (b-1)s + k` per side and the weights to the block-Toeplitz matrix
    :math:`W_b[(u,v,c),(i,j,f)] = w[u - s i, v - s j, c, f]` (zero outside the kernel), so
    ``P`` has :math:`b^2` times fewer rows and :math:`p^2/(b^2 k^2)` of the elements, at
    :math:`p^2/k^2` times the multiply-adds. That pays off where the layer is memory-bound
    (few input channels: ``conv_medium``'s first conv), not for convs with many channels.
    """
    k, f = w.shape[0], w.shape[3]
    n = x.shape[0]
    ho, wo, nbh, nbw, _, _ = _im2col_geometry(x.shape, k, stride, padding, block)
    y = _conv_im2col_blocks(x, w, stride, padding, block, native, binary, remat)
    if block == 1:
        return y.reshape(n, ho, wo, f)
    y = y.reshape(n, nbh, nbw, block, block, f).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(n, nbh * block, nbw * block, f)[:, :ho, :wo]


def _im2col_block(info: LayerInfo) -> int:
    """Output block side for :func:`_conv_im2col`: 2 where the patch is short (``k*k*C < 64``).

    Measured on XLA:CPU (``benchmarks/README.md``): ``conv_medium``'s first conv (5x5x1)
    trains 1.3x faster with 2x2 blocks; its second (5x5x12) 1.1x slower.
    """
    return 2 if info.kernel * info.kernel * info.in_shape[-1] < 64 else 1


def apply_op(layer_params: dict[str, jax.Array], x: jax.Array, info: LayerInfo, *,
             conv_impl: str = "xla") -> jax.Array:
    """The synaptic op of one weight layer (before pooling).

    Args:
      layer_params: ``{"w", "b"}`` of the layer.
      x: ``[N, *info.in_shape]`` (dense inputs may also be ``[N, ...]`` of any trailing shape).
      info: the layer's resolved spec.
      conv_impl: how a conv layer is computed: ``"xla"`` (``lax.conv_general_dilated``, the
        default here), ``"im2col"`` (patch matrix + one GEMM, :func:`_conv_im2col`) or
        ``"auto"`` (im2col on CPU, xla elsewhere). All give the same values up to float
        rounding; dense layers ignore it.

    Returns:
      ``[N, *info.op_shape]``.
    """
    return _apply_weights(layer_params["w"], x, info, conv_impl) + layer_params["b"]


def _apply_weights(w: jax.Array, x: jax.Array, info: LayerInfo, conv_impl: str, native: bool = False,
                   binary: bool = False, remat: bool = False) -> jax.Array:
    """:func:`apply_op` without the bias."""
    if info.kind == "dense":
        x2 = x.reshape(x.shape[0], -1)
        if native and binary and x2.dtype == jnp.float32 and w.dtype == jnp.float32:
            return binary_dense(x2, w)
        return dense(x2, w)
    if resolve_conv_impl(conv_impl) == "im2col":
        return _conv_im2col(x, w, info.stride, info.padding, _im2col_block(info), native, binary, remat)
    return _conv_xla(x, w, info.stride, info.padding)


@jax.custom_vjp
def dense(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x @ w`` for ``x: [M, K]``, ``w: [K, F]``, with the weight gradient's product laid out
    for the CPU's GEMM.

    The same values and gradients as ``x @ w``; only the layout of the weight-gradient GEMM
    differs. Autodiff computes ``dw = x^T g`` as an ``[K, M] x [M, F]`` product, whose output
    rows are ``F`` wide: for a readout layer (``F = 10``, ``K = 1000``, ``M = T*B = 3200``)
    that product runs on Eigen at ~2.0 ms, while ``g^T x`` (``[F, K]``, rows ``K`` wide) takes
    ~0.75 ms and its ``[F, K] -> [K, F]`` transpose is tiny. So when ``F < K`` the gradient is
    computed as ``(g^T x)^T``, with an optimisation barrier between the product and the
    transpose (XLA would otherwise fold the transpose back into the product's layout).
    """
    return x @ w


def _dense_fwd(x, w):
    return x @ w, (x, w)


def _dense_bwd(res, g):
    x, w = res
    dx = g @ w.T
    if w.shape[1] < w.shape[0]:
        dw = jax.lax.optimization_barrier(g.T @ x).T
    else:
        dw = x.T @ g
    return dx.astype(x.dtype), dw.astype(w.dtype)


dense.defvjp(_dense_fwd, _dense_bwd)


@jax.custom_vjp
def binary_dense(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x @ w`` for spikes ``x`` ``[M, K]`` (float32 holding only 0 and 1) and ``w`` ``[K, F]``,
    on the native kernels (``spikepipe_jax/native/binary_dense.cc``).

    With binary ``x`` the product and the weight gradient ``x^T g`` are sums of the rows the
    spikes select, ``y[m] = sum_{k: x[m,k]=1} w[k]`` and ``dw[k] = sum_{m: x[m,k]=1} g[m]``: the
    spike density times the adds of the dense GEMMs and no multiplies. ``x`` is kept for the
    backward pass in 1 byte per element. The input gradient ``g w^T`` is an ordinary GEMM.
    Values are those of :func:`dense` up to float32 summation order (each sum runs in ascending
    ``k`` or ``m``); non-binary ``x`` gives wrong results (every non-zero counts as 1), so the
    caller promises it (:func:`apply_synapse` ``binary_input=True``).
    """
    return _binary_dense_fwd(x, w)[0]


def _binary_matmul(xb: jax.Array, w: jax.Array) -> jax.Array:
    """``xb @ w`` for ``xb`` ``[M, K]`` ``uint8`` 0/1 on the native kernel."""
    native_lib.require("binary_dense")
    return jax.ffi.ffi_call("spikepipe_binary_dense_fwd", jax.ShapeDtypeStruct((xb.shape[0], w.shape[1]), jnp.float32),
                            vmap_method="sequential")(xb, w.astype(jnp.float32))


def _binary_weight_grad(xb: jax.Array, g: jax.Array) -> jax.Array:
    """``xb^T g`` ``[K, F]`` for ``xb`` ``[M, K]`` ``uint8`` 0/1 on the native kernel."""
    native_lib.require("binary_dense")
    return jax.ffi.ffi_call("spikepipe_binary_dense_wgrad", jax.ShapeDtypeStruct((xb.shape[1], g.shape[1]), jnp.float32),
                            vmap_method="sequential")(xb, g.astype(jnp.float32))


def _binary_dense_fwd(x, w):
    xb = x.astype(jnp.uint8)
    return _binary_matmul(xb, w), (xb, w)


def _binary_dense_bwd(res, g):
    xb, w = res
    return (g @ w.T).astype(jnp.float32), _binary_weight_grad(xb, g)


binary_dense.defvjp(_binary_dense_fwd, _binary_dense_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_first(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """``x.max(axis=axes)`` whose gradient goes to the *first* maximum of each window.

    The window's elements are ordered row-major over ``axes``; among equal maxima the first
    one gets the whole gradient, as in PyTorch's ``MaxPool2d`` (and so snnTorch), which
    scans a window row by row and moves its argmax only on a strictly greater value. (The
    gradient of ``jnp.max`` instead splits ties evenly, which is both different from the
    reference frameworks and slower: it keeps a float mask of the input's size.) The
    forward pass keeps only the argmax, as ``uint8`` (windows of at most 255 elements).
    With a NaN in a window the max is NaN and the gradient goes to the window's last NaN,
    as in PyTorch (whose scan moves the argmax to every NaN it meets).
    """
    return _max_first_fwd(x, axes)[0]


def _window_slices(x: jax.Array, axes: tuple[int, ...]):
    """The elements of each window as separate arrays (``x`` indexed at each window offset)."""
    sizes = [x.shape[a] for a in axes]
    for offsets in np.ndindex(*sizes):
        index = [slice(None)] * x.ndim
        for a, o in zip(axes, offsets):
            index[a] = o
        yield x[tuple(index)]


def _window_index(shape: tuple[int, ...], axes: tuple[int, ...]) -> np.ndarray:
    """``uint8`` row-major position of each element in its window, broadcastable to ``shape``."""
    size = math.prod(shape[a] for a in axes)
    return np.arange(size, dtype=np.uint8).reshape([shape[a] if a in axes else 1 for a in range(len(shape))])


def _first_max_better(a, b):
    """Reduction comparator of :func:`_max_first_fwd`: ``(value, index)`` pairs ordered as
    PyTorch's ``MaxPool2d`` scan picks them (a NaN beats every number, the later of two NaNs
    wins; among equal numbers the earlier index wins). A total order, so the reduction is
    deterministic whatever order XLA combines the elements in."""
    (va, ia), (vb, ib) = a, b
    na, nb = jnp.isnan(va), jnp.isnan(vb)
    take_b = jnp.where(na | nb, nb & (~na | (ib > ia)), (vb > va) | ((vb == va) & (ib < ia)))
    return jnp.where(take_b, vb, va), jnp.where(take_b, ib, ia)


def _max_first_fwd(x, axes):
    size = math.prod(x.shape[a] for a in axes)
    if size > 255:
        raise ValueError(f"max_first: window of {size} elements (at most 255)")
    if len(axes) == 1:
        # One variadic reduction gives the max and its window index (uint8) in one pass. XLA
        # does not fuse a reduction into its consumers, so the backward select reads this small
        # index instead of recomputing it from x (it did with the elementwise form below:
        # conv_medium's first pool, over the im2col block axis, read its 88 MB input again in
        # the backward pass; benchmarks/README.md section 6). Over two window axes (``pool``) XLA:CPU emits
        # this reduction ~10x slower than the elementwise form, so those keep the latter.
        init = (jnp.array(-jnp.inf, x.dtype), jnp.array(255, jnp.uint8))
        window = jnp.broadcast_to(_window_index(x.shape, axes), x.shape)
        m, idx = jax.lax.reduce((x, window), init, _first_max_better, axes)
        return m, (idx, x.shape)
    # PyTorch's scan over the window, elementwise: the argmax moves on a greater value or a NaN
    parts = list(_window_slices(x, axes))
    m, idx = parts[0], jnp.zeros(parts[0].shape, jnp.uint8)
    for k in range(1, size):
        take = (parts[k] > m) | jnp.isnan(parts[k])
        m, idx = jnp.where(take, parts[k], m), jnp.where(take, jnp.uint8(k), idx)
    return m, (idx, x.shape)


def _max_first_bwd(axes, res, g):
    idx, shape = res
    keep = [1 if a in axes else s for a, s in enumerate(shape)]
    return (jnp.where(_window_index(shape, axes) == idx.reshape(keep), g.reshape(keep),
                      jnp.zeros((), g.dtype)),)


max_first.defvjp(_max_first_fwd, _max_first_bwd)


def pool(x: jax.Array, spec: Pool) -> jax.Array:
    """Max or average pooling over H, W of ``[N, H, W, C]`` with stride = window, floor sizes.

    Max pooling sends each window's gradient to its first maximum (:func:`max_first`).
    """
    w = spec.window
    n, h, wd, c = x.shape
    ho, wo = h // w, wd // w
    x = x[:, : ho * w, : wo * w, :].reshape(n, ho, w, wo, w, c)
    if spec.kind == "maxpool":
        return max_first(x, (2, 4))
    return x.mean(axis=(2, 4))


def apply_synapse(layer_params: dict[str, jax.Array], x: jax.Array, info: LayerInfo, *,
                  conv_impl: str = "xla", bias: bool = True, native: bool = False,
                  binary_input: bool = False, remat: bool = False) -> jax.Array:
    """Op followed by the layer's pooling: ``[N, *in_shape] -> [N, *out_shape]``.

    ``native=True`` lets an im2col conv fold its input gradient in the native kernel
    (float32; the caller decides, :func:`spikepipe_jax.native.usable`). ``binary_input=True``
    promises that ``x`` holds only 0 and 1 (a previous layer's spikes, or rate-coded input): an
    im2col conv then keeps its input for the backward pass in 1 byte per element (``uint8``)
    instead of 4, and with ``native=True`` a dense layer runs on :func:`binary_dense` (sums of the
    rows the spikes select instead of GEMMs).
    ``remat=True`` (``model.remat``): an im2col conv's backward pass runs over chunks of
    images too, like its forward pass, so that its patches and their gradient exist one
    chunk at a time.

    ``bias=False`` leaves the bias out; the caller adds it to the pooled output
    (:func:`spikepipe_jax.snn.models.apply` passes it to ``lif_scan(bias=...)``, which adds it
    inside the time loop instead of in a pass of its own). Pooling commutes with the bias:
    ``max(y + b) == max(y) + b`` exactly (rounding is monotonic) and ``mean(y + b) ==
    mean(y) + b`` up to rounding, so the values are those of :func:`pool` on
    :func:`apply_op`'s output and so are the gradients, except that max-pool ties are decided
    on ``y`` rather than on ``y + b`` (two values closer than an ulp of ``b`` tie only in the
    latter). For the same reason the im2col conv always adds its bias after its first pool
    (one pass over the pooled instead of the full output, forward and backward). With
    ``b x b`` output blocks and a first pool of window ``b`` over a whole number of blocks,
    that pool is taken over the block axis of :func:`_conv_im2col_blocks` directly (the same
    window elements), without transposing the output and its gradient to and from NHWC.
    """
    pools, w = info.pools, layer_params["w"]
    if info.kind == "conv" and pools and resolve_conv_impl(conv_impl) == "im2col":
        block = _im2col_block(info)
        ho, wo = info.op_shape[0], info.op_shape[1]
        if block > 1 and pools[0].window == block and ho % block == 0 and wo % block == 0:
            yb = _conv_im2col_blocks(x, w, info.stride, info.padding, block, native, binary_input, remat)
            y = max_first(yb, (3,)) if pools[0].kind == "maxpool" else yb.mean(axis=3)
        else:
            y = pool(_conv_im2col(x, w, info.stride, info.padding, block, native, binary_input, remat),
                     pools[0])
        pools = pools[1:]
    else:
        y = _apply_weights(w, x, info, conv_impl, native, binary_input, remat)
    if bias:
        y = y + layer_params["b"]
    for p in pools:
        y = pool(y, p)
    return y

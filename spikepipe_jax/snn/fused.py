r"""A LIF layer fused with the narrow dense layer that reads its spikes (native XLA:CPU kernels).

In a classifier the last hidden LIF layer feeds a readout of a few units (``F`` = 10 here)
through ``Y[t] = S[t] W``. Computed op by op, that boundary costs XLA several memory-bound
passes over the hidden layer's ``[T, B, N]`` tensors: the membrane loop, the spike pass, the
readout GEMM forward; the readout's input-gradient GEMM, the surrogate multiply, the BPTT
product and the bias-gradient reduction backward. :func:`lif_dense` does each direction in
one pass of a C++ kernel (``spikepipe_jax/native/lif_dense.cc``), per batch row over time,
with the same equations as :func:`spikepipe_jax.snn.neurons.lif_scan` (scalar ``beta``, reset
``"subtract"`` or ``"none"``, reset detached, ``U[-1] = 0``) followed by
:func:`spikepipe_jax.snn.layers.dense`:

.. math::
    U_t = \beta U_{t-1} + (I_t + b) - \theta\,\Theta(U_{t-1} - \theta), \quad
    S_t = \Theta(U_t - \theta), \quad Y_t = S_t W,

and backward :math:`\delta_t = (\bar Y_t W^\top)\,\sigma'(U_t - \theta) + \beta\,\delta_{t+1}`,
:math:`\bar I_t = \delta_t`, :math:`\bar b = \sum_{t,b} \delta_t`,
:math:`\bar W = \sum_{t,b} S_t^\top \bar Y_t`. Values agree with the op-by-op path to float32
rounding (summation order differs; ``tests/test_fused.py``).

:func:`spikepipe_jax.snn.models.apply` uses it for the last hidden layer when :func:`fits` and
``native.usable(model.native)`` (``"auto"``: CPU backend, one device, kernels built). It is first-order only (no
``grad`` of ``grad``) and runs per example under ``vmap`` (``vmap_method="sequential"``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from spikepipe_jax import native
from spikepipe_jax.snn import surrogate as surrogate_lib

MAX_FEATURES = 64  # readouts up to this width; wider dense layers are GEMM-bound anyway

# surrogate name -> the kernel's code (lif_dense.cc: enum Surrogate)
_SURROGATE_CODES = {"fast_sigmoid": 0, "arctan": 1, "atan": 1, "triangle": 2, "straight_through": 3}


def _fwd_call(cur, bias, w, beta, threshold, subtract):
    t, b, n = cur.shape
    out = (jax.ShapeDtypeStruct((t, b, n), jnp.float32),
           jax.ShapeDtypeStruct((t, b, w.shape[1]), jnp.float32))
    return jax.ffi.ffi_call("spikepipe_lif_dense_fwd", out, vmap_method="sequential")(
        cur, bias, w, beta=np.float32(beta), theta=np.float32(threshold), subtract=np.int32(subtract))


def _bwd_call(mem, g, w, beta, threshold, code, scale):
    out = (jax.ShapeDtypeStruct(mem.shape, jnp.float32),
           jax.ShapeDtypeStruct(mem.shape[-1:], jnp.float32),
           jax.ShapeDtypeStruct(w.shape, jnp.float32))
    return jax.ffi.ffi_call("spikepipe_lif_dense_bwd", out, vmap_method="sequential")(
        mem, g, w, beta=np.float32(beta), theta=np.float32(threshold), surrogate=np.int32(code),
        scale=np.float32(scale))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6, 7))
def _lif_dense(cur, bias, w, beta, threshold, subtract, code, scale):
    return _fwd_call(cur, bias, w, beta, threshold, subtract)[1]


def _lif_dense_fwd(cur, bias, w, beta, threshold, subtract, code, scale):
    mem, y = _fwd_call(cur, bias, w, beta, threshold, subtract)
    return y, (mem, w)


def _lif_dense_bwd(beta, threshold, subtract, code, scale, res, g):
    mem, w = res
    return _bwd_call(mem, g, w, beta, threshold, code, scale)


_lif_dense.defvjp(_lif_dense_fwd, _lif_dense_bwd)


def lif_dense(currents: jax.Array, bias: jax.Array, w: jax.Array, *, beta: float, threshold: float = 1.0,
              reset: str = "subtract", surrogate: str = "fast_sigmoid", scale: float | None = None
              ) -> jax.Array:
    """``dense(lif_scan(currents, bias=bias)[0], w)`` in two native kernels (module docstring).

    Args:
      currents: ``[T, B, *hidden]`` float32 input currents of the LIF layer (without bias).
      bias: the LIF layer's bias, broadcastable to ``hidden`` (e.g. a conv layer's ``[C]``).
      w: the dense layer's weights ``[prod(hidden), F]`` (float32), ``F <= MAX_FEATURES``.
      beta: scalar decay in [0, 1] (a Python number: not learnable on this path).
      threshold: scalar firing threshold.
      reset: ``"subtract"`` or ``"none"``.
      surrogate, scale: the spike function by name and scale (``surrogate.make_surrogate``).

    Returns:
      the dense layer's currents ``[T, B, F]`` (without its bias).
    """
    native.require("lif_dense")
    if reset not in ("subtract", "none"):
        raise ValueError(f"lif_dense supports reset 'subtract' or 'none', got {reset!r}")
    if surrogate not in _SURROGATE_CODES:
        raise ValueError(f"unknown surrogate {surrogate!r}; expected one of {sorted(_SURROGATE_CODES)}")
    if not 0.0 <= float(beta) <= 1.0:
        raise ValueError(f"beta must be a number in [0, 1], got {beta!r}")
    if currents.ndim < 3:
        raise ValueError(f"currents must be [T, B, ...], got shape {currents.shape}")
    t, b = currents.shape[:2]
    hidden = currents.shape[2:]
    n = int(np.prod(hidden))
    if w.ndim != 2 or w.shape[0] != n:
        raise ValueError(f"dense weights of shape {w.shape} do not fit {n} hidden neurons {hidden}")
    if w.shape[1] > MAX_FEATURES:
        raise ValueError(f"lif_dense is for narrow readouts (F <= {MAX_FEATURES}), got F = {w.shape[1]}")
    for name, a in (("currents", currents), ("bias", bias), ("w", w)):
        if a.dtype != jnp.float32:
            raise ValueError(f"lif_dense computes in float32; {name} is {a.dtype}")
    if scale is None or surrogate == "straight_through":
        scale = surrogate_lib.default_scale(surrogate)
    code = _SURROGATE_CODES[surrogate]
    flat_bias = jnp.broadcast_to(bias, hidden).reshape(n)
    return _lif_dense(currents.reshape(t, b, n), flat_bias, w, float(beta), float(threshold),
                      reset == "subtract", code, scale)


def fits(*, hidden_reset: str, learn_beta: bool, readout_kind: str, readout_pools: tuple,
         readout_features: int, dtype) -> bool:
    """Whether a hidden LIF layer and the readout after it have the structure :func:`lif_dense`
    computes: reset subtract/none, a fixed scalar beta, a dense readout of at most
    ``MAX_FEATURES`` units without pooling, float32. (Whether native kernels are used at all
    is :func:`spikepipe_jax.native.usable`.)"""
    return (hidden_reset in ("subtract", "none") and not learn_beta and readout_kind == "dense"
            and not readout_pools and readout_features <= MAX_FEATURES and dtype == jnp.float32)

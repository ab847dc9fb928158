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

import math

import jax
import jax.numpy as jnp

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
    w = jax.random.uniform(w_key, w_shape, dtype, -bound, bound)
    b = jax.random.uniform(b_key, (info.features,), dtype, -bound, bound)
    return {"w": w, "b": b}


def apply_op(layer_params: dict[str, jax.Array], x: jax.Array, info: LayerInfo) -> jax.Array:
    """The synaptic op of one weight layer (before pooling).

    Args:
      layer_params: ``{"w", "b"}`` of the layer.
      x: ``[N, *info.in_shape]`` (dense inputs may also be ``[N, ...]`` of any trailing shape).
      info: the layer's resolved spec.

    Returns:
      ``[N, *info.op_shape]``.
    """
    w, b = layer_params["w"], layer_params["b"]
    if info.kind == "dense":
        return x.reshape(x.shape[0], -1) @ w + b
    p = info.padding
    y = jax.lax.conv_general_dilated(
        x, w, window_strides=(info.stride, info.stride), padding=((p, p), (p, p)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + b


def pool(x: jax.Array, spec: Pool) -> jax.Array:
    """Max or average pooling over H, W of ``[N, H, W, C]`` with stride = window, floor sizes."""
    w = spec.window
    n, h, wd, c = x.shape
    ho, wo = h // w, wd // w
    x = x[:, : ho * w, : wo * w, :].reshape(n, ho, w, wo, w, c)
    if spec.kind == "maxpool":
        return x.max(axis=(2, 4))
    return x.mean(axis=(2, 4))


def apply_synapse(layer_params: dict[str, jax.Array], x: jax.Array, info: LayerInfo) -> jax.Array:
    """Op followed by the layer's pooling: ``[N, *in_shape] -> [N, *out_shape]``."""
    y = apply_op(layer_params, x, info)
    for p in info.pools:
        y = pool(y, p)
    return y

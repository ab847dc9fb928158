"""Network specs: one description of a spiking network, read by training and hardware paths.

A network spec is a sequence of layer dicts (usually taken from ``config.model.layers``):

* ``{"kind": "dense", "features": N}``
* ``{"kind": "conv", "features": F, "kernel": k, "stride": s, "padding": p}`` (NHWC, square
  kernel, symmetric integer zero padding ``p``; ``stride`` defaults to 1, ``padding`` to 0)
* ``{"kind": "maxpool", "window": w}`` / ``{"kind": "avgpool", "window": w}`` (stride = window,
  no padding, floor division as in ``torch.nn.functional.max_pool2d``)
* ``{"kind": "flatten"}`` (optional: a dense layer flattens its input anyway)

A *weight layer* is a dense or conv layer together with the pooling layers that follow it
before the next weight layer. Its computation per time step is (snnTorch tutorial order)::

    current = pool(W * input)          # conv or dense, then optional pooling of the currents
    spk, mem = lif_step(mem, current)  # LIF neurons on the (pooled) currents

The last weight layer is the readout. Weight layers are numbered ``l = 0 .. L-1`` and their
parameters live under ``params["layer_<l>"]``; pipelining, gradient delays and the cost model
all speak of these ``l``.

This module is pure Python (no JAX): :func:`parse_spec` validates a spec against a per-sample
input shape and returns one :class:`LayerInfo` per weight layer with every shape resolved.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

WEIGHT_KINDS = ("dense", "conv")
POOL_KINDS = ("maxpool", "avgpool")
ALL_KINDS = WEIGHT_KINDS + POOL_KINDS + ("flatten",)


@dataclasses.dataclass(frozen=True)
class Pool:
    kind: str  # "maxpool" | "avgpool"
    window: int


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """One weight layer with resolved shapes (per sample, no batch or time axis).

    Attributes:
      index: weight-layer index ``l``.
      name: parameter key, ``"layer_<l>"``.
      kind: ``"dense"`` or ``"conv"``.
      in_shape: shape of the layer's input per sample: ``(H, W, C)`` for conv, ``(K,)`` for
        dense (already flattened).
      features: output features (dense units or conv filters).
      kernel, stride, padding: conv geometry (1, 1, 0 for dense).
      op_shape: shape of the GEMM/conv output before pooling, ``(Ho, Wo, F)`` or ``(N,)``.
      pools: pooling applied to the currents after the op.
      out_shape: shape of the currents the LIF neurons see (after pooling).
      is_output: True for the last weight layer (the readout).
    """

    index: int
    name: str
    kind: str
    in_shape: tuple[int, ...]
    features: int
    kernel: int
    stride: int
    padding: int
    op_shape: tuple[int, ...]
    pools: tuple[Pool, ...]
    out_shape: tuple[int, ...]
    is_output: bool

    @property
    def fan_in(self) -> int:
        """Reduction size K of the layer's GEMM (k*k*C for conv, input features for dense)."""
        if self.kind == "conv":
            return self.kernel * self.kernel * self.in_shape[-1]
        return self.in_shape[0]

    @property
    def num_weights(self) -> int:
        return self.fan_in * self.features

    @property
    def num_neurons(self) -> int:
        return math.prod(self.out_shape)

    @property
    def in_size(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_pixels(self) -> int:
        """Output positions of the op per sample (Ho*Wo for conv, 1 for dense): GEMM rows."""
        return math.prod(self.op_shape[:-1]) if self.kind == "conv" else 1


def _get(layer: Mapping[str, Any], key: str, default: Any, where: str) -> Any:
    value = layer.get(key, default)
    if value is None:
        raise ValueError(f"{where}: missing required field {key!r}")
    return value


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def _as_dict(layer: Any, where: str) -> dict[str, Any]:
    if isinstance(layer, Mapping):
        return dict(layer)
    if hasattr(layer, "to_dict"):  # ml_collections.ConfigDict
        return dict(layer.to_dict())
    raise ValueError(f"{where}: a layer spec must be a dict, got {type(layer).__name__}")


def parse_spec(layers: Sequence[Any], input_shape: Sequence[int]) -> tuple[LayerInfo, ...]:
    """Validates a layer spec against a per-sample input shape and resolves all shapes.

    Args:
      layers: sequence of layer dicts (see module docstring).
      input_shape: per-sample input shape, ``(H, W, C)`` for image data or ``(K,)`` for vectors.

    Returns:
      one :class:`LayerInfo` per weight layer, in order.

    Raises:
      ValueError: naming the offending layer and value, if a kind is unknown, a size is not a
        positive integer, a kernel/pool does not fit its input, or there is no weight layer.
    """
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"input_shape must be non-empty with positive sizes, got {tuple(input_shape)!r}")
    if len(layers) == 0:
        raise ValueError("network spec has no layers")

    pending: list[dict[str, Any]] = []  # per weight layer: resolved fields, its pools, pooled shape
    for i, raw in enumerate(layers):
        where = f"layer spec #{i}"
        layer = _as_dict(raw, where)
        kind = layer.get("kind")
        if kind not in ALL_KINDS:
            raise ValueError(f"{where}: unknown layer kind {kind!r}; expected one of {ALL_KINDS}")
        where = f"layer spec #{i} ({kind})"
        if kind == "flatten":
            shape = (math.prod(shape),)
            continue
        if kind in POOL_KINDS:
            if not pending:
                raise ValueError(f"{where}: pooling must follow a dense or conv layer")
            window = _positive_int(_get(layer, "window", 2, where), f"{where}: window")
            if len(shape) != 3:
                raise ValueError(f"{where}: pooling needs an (H, W, C) input, got shape {shape}")
            h, w, c = shape
            if window > h or window > w:
                raise ValueError(f"{where}: window {window} larger than its input {h}x{w}")
            shape = (h // window, w // window, c)
            pending[-1]["pools"].append(Pool(kind, window))
            pending[-1]["out_shape"] = shape
            continue
        features = _positive_int(_get(layer, "features", None, where), f"{where}: features")
        if kind == "dense":
            in_shape = (math.prod(shape),)
            op_shape = (features,)
            kernel, stride, padding = 1, 1, 0
        else:
            if len(shape) != 3:
                raise ValueError(f"{where}: conv needs an (H, W, C) input, got shape {shape}")
            kernel = _positive_int(_get(layer, "kernel", None, where), f"{where}: kernel")
            stride = _positive_int(_get(layer, "stride", 1, where), f"{where}: stride")
            padding = _get(layer, "padding", 0, where)
            if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
                raise ValueError(f"{where}: padding must be a non-negative integer, got {padding!r}")
            h, w, _ = shape
            hp, wp = h + 2 * padding, w + 2 * padding
            if kernel > hp or kernel > wp:
                raise ValueError(
                    f"{where}: kernel {kernel} larger than its padded input {hp}x{wp} "
                    f"(input {h}x{w}, padding {padding})")
            if stride > hp or stride > wp:
                raise ValueError(f"{where}: stride {stride} larger than its padded input {hp}x{wp}")
            in_shape = shape
            op_shape = ((hp - kernel) // stride + 1, (wp - kernel) // stride + 1, features)
        pending.append(dict(kind=kind, in_shape=in_shape, features=features, kernel=kernel,
                            stride=stride, padding=padding, op_shape=op_shape, pools=[],
                            out_shape=op_shape))
        shape = op_shape

    if not pending:
        raise ValueError("network spec has no dense or conv layer")
    infos = []
    for l, p in enumerate(pending):
        infos.append(LayerInfo(
            index=l, name=f"layer_{l}", kind=p["kind"], in_shape=tuple(p["in_shape"]),
            features=p["features"], kernel=p["kernel"], stride=p["stride"], padding=p["padding"],
            op_shape=tuple(p["op_shape"]), pools=tuple(p["pools"]), out_shape=tuple(p["out_shape"]),
            is_output=(l == len(pending) - 1)))
    return tuple(infos)


def num_classes(infos: Sequence[LayerInfo]) -> int:
    """Output size of the readout layer."""
    return math.prod(infos[-1].out_shape)

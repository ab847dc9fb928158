"""Spiking networks built from a spec: ``init_params`` / ``apply`` over all T steps.

Data flow of :func:`apply` for an input ``x`` of shape ``[T, B, *input_shape]``::

    for each weight layer l:
        cur = synapse_l(x.reshape(T*B, ...)).reshape(T, B, ...)   # time folded into batch (F_l GEMM)
        spk, mem = lif_scan(cur)                                   # the LIF recurrence over T
        x = spk
    readout "count":    logits = Σ_t spk_L[t]        (spiking output layer)
    readout "membrane": logits = mean_t mem_L[t]     (non-spiking output layer, reset "none")

Layer-by-layer evaluation is exact for these feed-forward networks (no recurrent synapses):
step t of layer l depends only on steps ≤ t of layer l−1, so computing all of layer l−1 first
gives the same values as interleaving the steps. It exposes big GEMMs (M = T·B·pixels) to XLA
and is the same task decomposition the hardware cost model uses.

A *stage* is a contiguous range ``(start, stop)`` of weight layers (:func:`apply_stage`); the
network is a fold over stages (:func:`apply`; one stage by default). The pipeline executor
(:mod:`spikepipe_jax.train.executor`) runs each stage on its own device with the same function,
so the single-device model and the pipelined one compute the same thing.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from spikepipe_jax import native, spec as spec_lib
from spikepipe_jax.snn import fused, layers, neurons, surrogate as surrogate_lib

READOUTS = ("count", "membrane")


class ModelDef(NamedTuple):
    """Static description of a network (hashable pieces only; safe to close over in jit)."""
    infos: tuple[spec_lib.LayerInfo, ...]
    beta: float
    threshold: float
    reset: str
    surrogate: str
    surrogate_scale: float
    readout: str
    learn_beta: bool
    remat: bool
    init_gain: float = 1.0
    conv_impl: str = "auto"  # conv layers: "auto" | "xla" | "im2col" (layers.apply_op)
    native: str = "auto"  # native XLA:CPU kernels (spikepipe_jax.native.usable): "auto" | "on" | "off"
    binary_input: bool = False  # the encoded network input holds only 0 / 1 (rate, latency coding)

    @property
    def num_layers(self) -> int:
        return len(self.infos)


def model_from_config(model_cfg: Any) -> ModelDef:
    """Builds a :class:`ModelDef` from ``config.model``, validating every field."""
    infos = spec_lib.parse_spec(model_cfg.layers, model_cfg.input_shape)
    if model_cfg.num_steps is None or int(model_cfg.num_steps) <= 0:
        raise ValueError(f"model.num_steps (T) must be a positive integer, got {model_cfg.num_steps!r}")
    if model_cfg.readout not in READOUTS:
        raise ValueError(f"unknown model.readout {model_cfg.readout!r}; expected one of {READOUTS}")
    if model_cfg.reset not in neurons.RESETS:
        raise ValueError(f"unknown model.reset {model_cfg.reset!r}; expected one of {neurons.RESETS}")
    if not 0.0 <= float(model_cfg.beta) <= 1.0:
        raise ValueError(f"model.beta must be in [0, 1], got {model_cfg.beta!r}")
    surrogate_lib.make_surrogate(model_cfg.surrogate, model_cfg.surrogate_scale)  # validates the name
    conv_impl = model_cfg.get("conv_impl", "auto")
    if conv_impl not in layers.CONV_IMPLS:
        raise ValueError(f"unknown model.conv_impl {conv_impl!r}; expected one of {layers.CONV_IMPLS}")
    native_mode = model_cfg.get("native", "auto")
    if native_mode not in native.MODES:
        raise ValueError(f"unknown model.native {native_mode!r}; expected one of {native.MODES}")
    return ModelDef(infos=infos, beta=float(model_cfg.beta), threshold=float(model_cfg.threshold),
                    reset=model_cfg.reset, surrogate=model_cfg.surrogate,
                    surrogate_scale=float(model_cfg.surrogate_scale), readout=model_cfg.readout,
                    learn_beta=bool(model_cfg.learn_beta), remat=bool(model_cfg.remat),
                    init_gain=float(model_cfg.get("init_gain", 1.0)), conv_impl=conv_impl,
                    native=native_mode)


@functools.partial(jax.jit, static_argnums=1)  # one compile, not one per random draw (start-up time)
def init_params(key: jax.Array, model: ModelDef) -> dict[str, dict[str, jax.Array]]:
    """Parameters ``{"layer_<l>": {"w", "b"[, "beta"]}}``; learnable beta is per neuron."""
    keys = jax.random.split(key, model.num_layers)
    params = {}
    for k, info in zip(keys, model.infos):
        p = layers.init_layer(k, info, gain=model.init_gain)
        if model.learn_beta:
            p["beta"] = jnp.full(info.out_shape, model.beta, jnp.float32)
        params[info.name] = p
    return params


class Output(NamedTuple):
    logits: jax.Array        # [B, classes]
    out_spikes: jax.Array    # [T, B, classes] (zeros for membrane readout)
    out_mem: jax.Array       # [T, B, classes]


def _fuses_readout(model: ModelDef, readout: spec_lib.LayerInfo, hidden_params: dict, dtype) -> bool:
    """Whether a hidden layer's LIF and the readout after it can run as ``fused.lif_dense``."""
    return fused.fits(hidden_reset=model.reset, learn_beta=model.learn_beta or "beta" in hidden_params,
                      readout_kind=readout.kind, readout_pools=readout.pools,
                      readout_features=readout.features, dtype=dtype)


Stage = tuple  # ``(start, stop)``: the half-open range of weight layers one pipeline stage runs


def whole(model: ModelDef) -> tuple[Stage, ...]:
    """The network as one stage: ``((0, L),)``."""
    return ((0, model.num_layers),)


def check_stages(model: ModelDef, stages) -> tuple[Stage, ...]:
    """Validates a partition of the layers into contiguous, non-empty stages; returns it as a tuple.

    Raises:
      ValueError: the ranges do not cover ``0 .. L-1`` in order, or one is empty (names them).
    """
    stages = tuple((int(a), int(b)) for a, b in stages)
    bounds = [a for a, _ in stages] + [stages[-1][1]] if stages else []
    if (not stages or bounds[0] != 0 or bounds[-1] != model.num_layers
            or any(a >= b for a, b in stages) or any(stages[i][1] != stages[i + 1][0]
                                                    for i in range(len(stages) - 1))):
        raise ValueError(f"stages {stages} are not a partition of the {model.num_layers} weight layers into "
                         f"contiguous non-empty ranges [(0, a), (a, b), ..., (z, {model.num_layers})]")
    return stages


def stage_out_shape(model: ModelDef, stage: Stage) -> tuple[int, ...]:
    """Per-sample shape of what a stage sends on: the spikes of its last layer (no leading T, B)."""
    return tuple(model.infos[stage[1] - 1].out_shape)


def layer_currents(params: dict, model: ModelDef, x: jax.Array, i: int, *, native: bool = False) -> jax.Array:
    """Layer ``i``'s synaptic currents ``[T, B, ...]`` (its op and pooling, no bias) for its
    time-major input ``x`` ``[T, B, ...]``; time is folded into the batch (one GEMM).

    Past the first layer ``x`` is spikes, exact 0/1 (any dtype), and so is the network's input
    when ``model.binary_input``: the synapse keeps them in 1 byte for its backward pass.
    ``native``: im2col convs fold their input gradient natively, and a dense layer reading
    0/1 inputs sums the rows they select (:func:`layers.binary_dense`).
    """
    info = model.infos[i]
    t, b = x.shape[0], x.shape[1]
    binary = i > 0 or model.binary_input
    if binary and x.dtype != jnp.float32:
        x = x.astype(jnp.float32)  # spikes that crossed a stage boundary in 1 byte
    kw = {"binary_input": True} if binary else {}
    cur = layers.apply_synapse(params[info.name], x.reshape((t * b,) + x.shape[2:]), info,
                               conv_impl=model.conv_impl, bias=False, native=native, remat=model.remat, **kw)
    return cur.reshape((t, b) + cur.shape[1:])


def layer_neurons(params: dict, model: ModelDef, cur: jax.Array, i: int):
    """Layer ``i``'s LIF recurrence over T on its currents (the bias added inside the loop):
    its spikes ``[T, B, ...]``, or the network's :class:`Output` for the output layer."""
    info = model.infos[i]
    p = params[info.name]
    beta = p["beta"] if "beta" in p else model.beta
    membrane_readout = info.is_output and model.readout == "membrane"
    spk, mem = neurons.lif_scan(
        cur, beta=beta, threshold=model.threshold,
        reset="none" if membrane_readout else model.reset,
        surrogate=surrogate_lib.make_surrogate(model.surrogate, model.surrogate_scale),
        remat=model.remat, bias=p["b"])
    if info.is_output:
        if membrane_readout:
            return Output(mem.mean(0), jnp.zeros_like(mem), mem)
        return Output(spk.sum(0), spk, mem)
    return spk


def apply_stage(params: dict, model: ModelDef, x: jax.Array, stage: Stage):
    """Runs the weight layers ``stage = (start, stop)`` on time-major input ``x`` ``[T, B, ...]``.

    ``x`` is what layer ``start`` reads: the encoded network input for the first stage, the
    previous stage's spikes otherwise (exact 0/1, any dtype). Returns the spikes of layer
    ``stop - 1`` ``[T, B, *out_shape]`` (float32), or the :class:`Output` if the stage holds the
    output layer. Each layer is :func:`layer_currents` (synapse, no bias) followed by
    :func:`layer_neurons` (its LIF recurrence over T, the bias added inside the loop).

    The fused native kernel for the last hidden LIF layer and the readout
    (:func:`spikepipe_jax.snn.fused.lif_dense`) is used only when both layers are in this stage:
    a kernel never crosses a stage boundary.
    """
    start, stop = stage
    use_native = native.usable(model.native)
    infos = model.infos
    cur = None  # the next layer's currents when the previous step already computed them
    for i in range(start, stop):
        p = params[infos[i].name]
        if cur is None:
            cur = layer_currents(params, model, x, i, native=use_native)
        nxt = infos[i + 1] if i + 1 < stop else None
        if use_native and nxt is not None and nxt.is_output and _fuses_readout(model, nxt, p, cur.dtype):
            cur = fused.lif_dense(cur, p["b"], params[nxt.name]["w"], beta=model.beta,
                                  threshold=model.threshold, reset=model.reset,
                                  surrogate=model.surrogate, scale=model.surrogate_scale)
            continue
        x = layer_neurons(params, model, cur, i)
        if infos[i].is_output:
            return x
        cur = None
    return x


def apply(params: dict, model: ModelDef, x: jax.Array, stages=None) -> Output:
    """Runs the network on time-major input ``x`` ``[T, B, *input_shape]``: a fold of
    :func:`apply_stage` over ``stages`` (default: the whole network as one stage).

    A layer's synapse gives its op and pools *without* the bias, which is added inside the
    layer's LIF loop (``lif_scan(bias=...)``: no pass of its own over ``[T, B, ...]``; pooling
    commutes with it, see :func:`layers.apply_synapse`).

    With ``native.usable(model.native)`` (``"auto"``: a single CPU device with the kernels
    built), native kernels take two places: the last hidden layer's LIF and the dense readout
    that reads its spikes run as one kernel per direction
    (:func:`spikepipe_jax.snn.fused.lif_dense`, where :func:`~spikepipe_jax.snn.fused.fits`
    and both layers are in one stage), and im2col convs fold their input gradient natively
    (:func:`layers.apply_synapse` ``native=True``). Values are those of the XLA path up to
    float32 summation order; the result does not depend on ``stages`` beyond that.
    """
    for stage in (whole(model) if stages is None else check_stages(model, stages)):
        x = apply_stage(params, model, x, stage)
    return x


def check_input_shape(model: ModelDef, input_shape: Sequence[int]) -> None:
    """Raises a clear error if data of per-sample ``input_shape`` does not fit the network."""
    expected = model.infos[0].in_shape
    got = tuple(int(s) for s in input_shape)
    if model.infos[0].kind == "dense":
        import math
        if math.prod(got) != expected[0]:
            raise ValueError(f"input shape {got} ({math.prod(got)} values) does not fit the first dense "
                             f"layer, which expects {expected[0]} inputs (model.input_shape)")
    elif got != expected:
        raise ValueError(f"input shape {got} does not fit the network, which expects {expected} "
                         f"(model.input_shape)")

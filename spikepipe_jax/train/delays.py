r"""Delayed gradients as an optax transform: the *buffer model* of pipelined training.

In a layer-pipelined schedule the weight-gradient task ``W_l`` of iteration ``k`` finishes
``d_l`` optimiser steps after the forward pass that produced it, so layer ``l`` is updated with a
stale gradient. The *buffer model* used by the delay study reproduces exactly that effect and
nothing else: every layer's gradient is computed at the current parameters ``w_k`` and its
application is postponed by ``d_l`` steps,

.. math::

    w_{k+1} = w_k + \mathrm{opt}\big(g_{k-d_l}\big), \qquad g_j = \nabla L(w_j; x_j),
    \qquad g_j := 0 \text{ for } j < 0,

(``position="before"``: the stale gradient enters the optimiser, e.g. Adam's moments), or

.. math::

    w_{k+1} = w_k + u_{k-d_l}, \qquad u_j = \mathrm{opt}(g_j)

(``position="after"``: the optimiser sees fresh gradients, its *update* is applied late).
This is the delayed-gradient / DLMS model of LayerPipe (Unnikrishnan & Parhi 2021) and
LayerPipe2 (2025) and of PipeDream-style asynchronous pipelines without weight stashing.

Implementation: each leaf with ``d_l > 0`` owns a ring buffer ``[d_l, *leaf.shape]``. At step
``k`` (``count == k``) slot ``s = k mod d_l`` holds ``g_{k-d_l}`` (or the initial zeros while
``k < d_l``); the transform emits that slot and overwrites it with ``g_k``. Memory is exactly
``d_l x size(leaf)``; a leaf with ``d_l = 0`` holds a ``[0, *leaf.shape]`` (empty) buffer and its
updates pass through untouched, so delay 0 is bitwise identical to the plain optimiser.

Delays are *static* Python ints: an int for every leaf, or a pytree whose structure is a
prefix of the params, e.g. ``{"layer_0": 3, "layer_1": 0}`` for params
``{"layer_0": {"w": ..., "b": ...}, "layer_1": {...}}`` (see :func:`layer_delays` for the
``params["layer_<l>"]`` layout of :mod:`spikepipe_jax.spec`).

Train-step usage (nothing special; ``params`` is only needed by some mitigations)::

    tx = optax.chain(delayed_gradients({"layer_0": 2, "layer_1": 0}), optax.adam(1e-3))
    opt_state = tx.init(params)
    grads = jax.grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)

Stale-gradient mitigations live in :mod:`spikepipe_jax.train.mitigation`; the training
optimiser (base optimiser, delays, mitigation in one chain) is built in
:mod:`spikepipe_jax.train.optimizer` (``make_delayed_optimizer`` for delays alone). This module
imports neither.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

PyTree = Any
Delays = Any  # int, or a pytree of ints that is a prefix of the params structure

__all__ = [
    "DelayedGradientsState",
    "broadcast_delays",
    "delayed_gradients",
    "layer_delays",
    "validate_delays",
]


class DelayedGradientsState(NamedTuple):
    """State of :func:`delayed_gradients`.

    Attributes:
      count: int32 ``[]``, number of ``update`` calls so far (the step ``k``).
      buffer: pytree with the params' structure; leaf ``l`` is ``[d_l, *leaf.shape]`` in the
        leaf's dtype, slot ``k mod d_l`` holding the update received at step ``k - d_l``.
    """

    count: jax.Array
    buffer: optax.Updates


def _to_delay(value: Any, where: str) -> int:
    """Checks one delay leaf and returns it as a Python int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(
            f"delay{where} must be a non-negative Python int (static, not an array), got "
            f"{value!r} of type {type(value).__name__}")
    value = int(value)
    if value < 0:
        raise ValueError(f"delay{where} must be >= 0, got {value}")
    return value


def validate_delays(delays: Delays) -> Delays:
    """Checks a delay spec and returns it with every leaf a Python int.

    Args:
      delays: an int, or a pytree of ints (dicts/lists/tuples of ints).

    Returns:
      The same structure with ``int`` leaves.

    Raises:
      ValueError: a leaf is negative, not an integer (floats, bools, arrays), or the spec
        has no leaves at all.
    """
    path_leaves, treedef = jax.tree_util.tree_flatten_with_path(delays)
    if not path_leaves:
        raise ValueError(f"delays {delays!r} contain no integer leaves")
    fixed = []
    for path, leaf in path_leaves:
        where = f" at {jax.tree_util.keystr(path)}" if path else ""
        fixed.append(_to_delay(leaf, where))
    return jax.tree_util.tree_unflatten(treedef, fixed)


def broadcast_delays(delays: Delays, tree: PyTree) -> PyTree:
    """Broadcasts a delay spec over every leaf of ``tree`` (prefix broadcasting).

    Args:
      delays: an int, or a pytree of ints whose structure is a prefix of ``tree``'s.
      tree: params (or updates) pytree.

    Returns:
      A pytree with ``tree``'s structure whose leaves are the Python-int delays ``d_l``.

    Raises:
      ValueError: bad delay values, or a structure that is not a prefix of ``tree``'s.
    """
    delays = validate_delays(delays)
    try:
        return jax.tree.map(lambda d, sub: jax.tree.map(lambda _: d, sub), delays, tree)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(
            f"delays {delays!r} do not match the params: their structure "
            f"{jax.tree.structure(delays)} must be a prefix of the params structure "
            f"{jax.tree.structure(tree)} ({e})") from None


def layer_delays(per_layer: Sequence[int], prefix: str = "layer_") -> dict[str, int]:
    """Turns one delay per weight layer into the ``{"layer_<l>": d_l}`` spec.

    Args:
      per_layer: ``d_0 .. d_{L-1}``, e.g. from a schedule or ``config.pipeline.delays``.
      prefix: key prefix of the per-layer params (``spec.LayerInfo.name``).

    Returns:
      ``{f"{prefix}{l}": d_l}``.

    Raises:
      ValueError: a bad delay value, or ``per_layer`` is not a sequence.
    """
    if isinstance(per_layer, (str, bytes)) or not isinstance(per_layer, Sequence):
        raise ValueError(f"per-layer delays must be a sequence of ints, got {per_layer!r}")
    return {f"{prefix}{l}": _to_delay(d, f" of layer {l}") for l, d in enumerate(per_layer)}


def _flat_delays(delays: Delays, tree: PyTree) -> tuple[list[int], list[Any], Any]:
    """Returns (per-leaf delays, leaves, treedef) of ``tree``."""
    resolved = broadcast_delays(delays, tree)
    leaves, treedef = jax.tree.flatten(tree)
    return treedef.flatten_up_to(resolved), leaves, treedef


def _ring_step(buf: jax.Array, g: jax.Array, d: int, count: jax.Array):
    """Emits slot ``count mod d`` of ``buf`` and stores ``g`` there."""
    slot = (count % d).astype(jnp.int32)
    out = jax.lax.dynamic_index_in_dim(buf, slot, axis=0, keepdims=False)
    new_buf = jax.lax.dynamic_update_index_in_dim(buf, g.astype(buf.dtype), slot, axis=0)
    return out, new_buf


def _check_buffer(buf: jax.Array, leaf: jax.Array, d: int, name: str) -> None:
    """Trace-time check that a stored buffer fits the incoming leaf."""
    want = (d,) + tuple(jnp.shape(leaf))
    if tuple(buf.shape) != want:
        raise ValueError(
            f"{name}: buffer of shape {tuple(buf.shape)} does not match an update of shape "
            f"{tuple(jnp.shape(leaf))} with delay {d} (expected {want}); was the state built "
            f"for other params or other delays?")


def delayed_gradients(delays: Delays) -> optax.GradientTransformation:
    r"""Delays every update leaf by its own static number of steps.

    At step ``k`` the transform emits, for each leaf ``l``, the update it received at step
    ``k - d_l`` (zeros while ``k < d_l``):

    .. math:: \tilde u^{(l)}_k = u^{(l)}_{k-d_l}, \qquad u_j := 0 \text{ for } j < 0.

    Place it before an optimiser (stale gradients) or after it (stale updates), see
    :func:`spikepipe_jax.train.optimizer.make_delayed_optimizer`. Reference: the delayed LMS /
    delayed-gradient model (Long, Ling & Proakis 1989; LayerPipe, Unnikrishnan & Parhi 2021).

    Args:
      delays: an int for every leaf, or a pytree of ints that is a prefix of the params
        (e.g. ``{"layer_0": 3, "layer_1": 0}``). Static Python ints ``>= 0``.

    Returns:
      An ``optax.GradientTransformation`` with :class:`DelayedGradientsState`. A leaf's
      buffer is ``[d_l, *leaf.shape]``; ``d_l = 0`` leaves pass through bitwise unchanged.

    Raises:
      ValueError: negative or non-int delays (here); delays that do not match the params
        (at ``init``).
    """
    delays = validate_delays(delays)

    def init_fn(params):
        ds, leaves, treedef = _flat_delays(delays, params)
        bufs = [jnp.zeros((d,) + tuple(jnp.shape(p)), dtype=jnp.result_type(p))
                for d, p in zip(ds, leaves)]
        return DelayedGradientsState(count=jnp.zeros([], jnp.int32),
                                     buffer=jax.tree.unflatten(treedef, bufs))

    def update_fn(updates, state, params=None):
        del params
        ds, leaves, treedef = _flat_delays(delays, updates)
        bufs = treedef.flatten_up_to(state.buffer)
        outs, new_bufs = [], []
        for d, g, buf in zip(ds, leaves, bufs):
            _check_buffer(buf, g, d, "delayed_gradients")
            if d == 0:  # static: no buffer, no arithmetic, bitwise pass-through
                outs.append(g)
                new_bufs.append(buf)
            else:
                out, new_buf = _ring_step(buf, g, d, state.count)
                outs.append(out)
                new_bufs.append(new_buf)
        new_state = DelayedGradientsState(count=state.count + 1,
                                          buffer=jax.tree.unflatten(treedef, new_bufs))
        return jax.tree.unflatten(treedef, outs), new_state

    return optax.GradientTransformation(init_fn, update_fn)

r"""A faithful simulator of pipelined training (per-layer weight versions), to check the buffer model.

The *buffer model* (:mod:`spikepipe_jax.train.delays`) computes every layer's gradient at one
consistent snapshot of the weights and applies it ``d_l`` steps late. A real inter-layer pipeline
(PipeDream-style 1F1B, one stage per layer) does something else: minibatch ``k`` runs the forward
pass of layer ``l`` with the weight version that layer has *at that moment*, and the update of
minibatch ``k`` is applied as soon as its backward pass reaches the layer. With ``d_l`` the
number of updates layer ``l`` applies between the forward and the backward of one minibatch
(1F1B: ``d_l = L − 1 − l``), the update at step ``k`` is

.. math::

    W_l^{k+1} = W_l^{k} + \mathrm{opt}\Big(\frac{\partial L}{\partial W_l}\Big|_{x_k;\;
        \text{forward with } \{W_m^{k-d_m}\}_m,\; \text{backward with } \{W_m^{b_m(k)}\}_m}\Big)

where the backward pass uses the stashed forward version ``b_m(k) = k − d_m`` (PipeDream's
*weight stashing*) or the latest version ``b_m(k) = k`` (no stashing: when the backward of
minibatch ``k`` reaches stage ``m``, that stage has applied the updates of minibatches ``< k``).
Versions before 0 are the initial weights (pipeline warm-up). Unlike the buffer model, the
forward pass mixes weight versions of different ages across layers, and without stashing the
forward and backward of one layer disagree.

Implementation: :class:`SimState` holds the parameters, the optimiser state, each layer's ring
of its last ``d_l + 1`` weight versions and the step (one pytree: checkpoints and resume work
as for the plain step). With stashing, the loss is differentiated at the forward versions
(ordinary autodiff through :func:`spikepipe_jax.snn.apply`). Without it, the network is run
layer by layer (the synapse op of each layer is a
``custom_vjp`` whose forward uses the forward version and whose input gradient uses the current
weights, then :func:`~spikepipe_jax.snn.layer_neurons`); its weight gradient is taken with
respect to the forward version and applied to the current weights.

The pipeline executor (``train/executor.py``, ``pipeline.execute="1f1b"``) is checked against
this simulator with weight stashing (``tests/executor_cases.py``).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from spikepipe_jax import snn
from spikepipe_jax.snn import layers
from spikepipe_jax.train.step import step_metrics

MODES = ("stash", "no_stash")


class SimState(NamedTuple):
    """The simulator's training state (a pytree, checkpointed whole)."""
    params: Any      # the current weights
    opt_state: Any   # the base optimiser's state
    history: dict    # layer name -> pytree of [d_l + 1, ...] weight versions (slot = version mod (d_l+1))
    step: jax.Array  # int32 scalar: optimiser steps taken


def _mixed_synapse(info, conv_impl: str = "xla"):
    """``y = synapse(w_fwd, x)``; ``dx`` through ``w_bwd``; ``dw`` w.r.t. ``w_fwd`` (no bias:
    ``snn.apply`` adds it in the LIF loop)."""
    synapse = functools.partial(layers.apply_synapse, info=info, conv_impl=conv_impl, bias=False)

    @jax.custom_vjp
    def op(p_fwd, p_bwd, x):
        return synapse(p_fwd, x)

    def fwd(p_fwd, p_bwd, x):
        return op(p_fwd, p_bwd, x), (p_fwd, p_bwd, x)

    def bwd(res, g):
        p_fwd, p_bwd, x = res
        _, vjp_w = jax.vjp(lambda p: synapse(p, x), p_fwd)
        _, vjp_x = jax.vjp(lambda xx: synapse(p_bwd, xx), x)
        (dp,) = vjp_w(g)
        (dx,) = vjp_x(g)
        return dp, jax.tree.map(jnp.zeros_like, p_bwd), dx

    op.defvjp(fwd, bwd)
    return op


def init_state(params, opt_state, delays: Sequence[int], layer_names: Sequence[str]) -> SimState:
    """The state before the first step: every version slot holds the initial weights."""
    history = {name: jax.tree.map(lambda w: jnp.broadcast_to(w, (d + 1,) + w.shape).copy(), params[name])
               for name, d in zip(layer_names, delays)}
    return SimState(params, opt_state, history, jnp.zeros((), jnp.int32))


def _version(history_l, version, depth):
    slot = jnp.maximum(version, 0) % depth
    return jax.tree.map(lambda h: h[slot], history_l)


def make_train_step(model, tx: optax.GradientTransformation, *, delays: Sequence[int], mode: str,
                    loss_fn_from_output, encode_fn):
    """Pipeline-simulating train step ``(SimState, x, y, key) -> (SimState, metrics)``.

    ``loss_fn_from_output(out, y)`` gives the loss; ``encode_fn(x, step_key)`` the time-major input.
    """
    if mode not in MODES:
        raise ValueError(f"unknown pipeline simulation mode {mode!r}; expected one of {MODES}")
    names = [info.name for info in model.infos]
    delays = [int(d) for d in delays]
    if len(delays) != len(names):
        raise ValueError(f"{len(delays)} delays for {len(names)} layers")
    ops = [_mixed_synapse(info, model.conv_impl) for info in model.infos] if mode == "no_stash" else []

    def no_stash_forward(fwd_params, current, xt):
        """The network layer by layer; each synapse's input gradient through the current weights."""
        x = xt
        for i, info in enumerate(model.infos):
            t, b = x.shape[0], x.shape[1]
            cur = ops[i]({"w": fwd_params[info.name]["w"]}, {"w": current[info.name]["w"]},
                         x.reshape((t * b,) + x.shape[2:]))
            x = snn.layer_neurons(fwd_params, model, cur.reshape((t, b) + cur.shape[1:]), i)
        return x

    def train_step(state: SimState, x, y, key):
        k = state.step
        fwd = {n: _version(state.history[n], k - d, d + 1) for n, d in zip(names, delays)}
        xt = encode_fn(x, jax.random.fold_in(key, k))

        def loss_fn(fwd_params):
            # stash: the backward pass uses the forward's weights, i.e. ordinary autodiff
            out = (snn.apply(fwd_params, model, xt) if mode == "stash"
                   else no_stash_forward(fwd_params, state.params, xt))
            return loss_fn_from_output(out, y), out

        (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(fwd)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        history = {}
        for n, d in zip(names, delays):
            slot = (k + 1) % (d + 1)
            history[n] = jax.tree.map(lambda h, w: h.at[slot].set(w), state.history[n], params[n])
        return SimState(params, opt_state, history, k + 1), step_metrics(loss, out, y, grads)

    return train_step

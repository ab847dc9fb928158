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

Implementation: each layer keeps a ring buffer of its last ``d_l + 1`` weight versions inside
the optimiser-state slot of :class:`~spikepipe_jax.train.step.TrainState` (so checkpoints and
resume work unchanged). The synaptic op of each layer is a ``custom_vjp`` whose forward uses the
forward version and whose input gradient uses the backward version; its weight gradient is
taken with respect to the forward version and applied to the current weights.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from spikepipe_jax import snn
from spikepipe_jax.snn import layers
from spikepipe_jax.train.step import TrainState, step_metrics

MODES = ("stash", "no_stash")


class PipeSimState(NamedTuple):
    opt_state: Any
    history: dict  # layer name -> pytree of [d_l + 1, ...] weight versions (slot = version mod (d_l+1))


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


def init_state(params, base_opt_state, delays: Sequence[int], layer_names: Sequence[str]) -> PipeSimState:
    history = {name: jax.tree.map(lambda w: jnp.broadcast_to(w, (d + 1,) + w.shape).copy(), params[name])
               for name, d in zip(layer_names, delays)}
    return PipeSimState(base_opt_state, history)


def _version(history_l, version, depth):
    slot = jnp.maximum(version, 0) % depth
    return jax.tree.map(lambda h: h[slot], history_l)


def make_train_step(model, tx: optax.GradientTransformation, *, delays: Sequence[int], mode: str,
                    loss_fn_from_output, encode_fn):
    """Pipeline-simulating train step ``(state, x, y, key) -> (state, metrics)``.

    ``state.opt_state`` is a :class:`PipeSimState`; ``loss_fn_from_output(out, y)`` gives the
    loss; ``encode_fn(x, step_key)`` the time-major input.
    """
    if mode not in MODES:
        raise ValueError(f"unknown pipeline simulation mode {mode!r}; expected one of {MODES}")
    names = [info.name for info in model.infos]
    delays = [int(d) for d in delays]
    if len(delays) != len(names):
        raise ValueError(f"{len(delays)} delays for {len(names)} layers")
    ops = {info.name: _mixed_synapse(info, model.conv_impl) for info in model.infos} if mode == "no_stash" else {}

    def train_step(state, x, y, key):
        k = state.step
        sim: PipeSimState = state.opt_state
        fwd = {n: _version(sim.history[n], k - d, d + 1) for n, d in zip(names, delays)}
        xt = encode_fn(x, jax.random.fold_in(key, k))

        def loss_fn(fwd_params):
            # stash: the backward pass uses the forward's weights, i.e. ordinary autodiff
            synapse = None if mode == "stash" else (
                lambda p, xx, info: ops[info.name]({"w": p["w"]}, {"w": state.params[info.name]["w"]}, xx))
            out = snn.apply(fwd_params, model, xt, synapse=synapse)
            return loss_fn_from_output(out, y), out

        (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(fwd)
        updates, opt_state = tx.update(grads, sim.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        history = {}
        for n, d in zip(names, delays):
            slot = (k + 1) % (d + 1)
            history[n] = jax.tree.map(lambda h, w: h.at[slot].set(w), sim.history[n], params[n])
        return TrainState(params, PipeSimState(opt_state, history), k + 1), step_metrics(loss, out, y, grads)

    return train_step

"""Losses on the network output (snnTorch ``functional`` conventions).

* ``ce_count``:  cross-entropy of softmax over output spike counts Σ_t S[t] (snnTorch ``ce_count_loss``).
* ``ce_mem``:    cross-entropy of the output membrane at every step, averaged over T
                 (snnTorch tutorial 5 sums it; we average so the scale is independent of T).
* ``mse_count``: MSE between spike counts and targets ``0.8·T`` (correct class) / ``0.2·T`` (others),
                 divided by T (snnTorch ``mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from spikepipe_jax.snn.models import Output

LOSSES = ("ce_count", "ce_mem", "mse_count")


def per_example_loss(name: str, out: Output, labels: jax.Array, num_classes: int) -> jax.Array:
    """Loss of each example, ``[B]``. ``labels`` int ``[B]``."""
    if name == "ce_count":
        return optax.softmax_cross_entropy_with_integer_labels(out.logits, labels)
    if name == "ce_mem":
        per_step = optax.softmax_cross_entropy_with_integer_labels(
            out.out_mem, jnp.broadcast_to(labels, out.out_mem.shape[:2]))
        return per_step.mean(0)
    if name == "mse_count":
        t = out.out_spikes.shape[0]
        onehot = jax.nn.one_hot(labels, num_classes, dtype=out.out_spikes.dtype)
        target = (0.8 * onehot + 0.2 * (1.0 - onehot)) * t
        return jnp.mean((out.logits - target) ** 2, axis=-1) / t
    raise ValueError(f"unknown loss {name!r}; expected one of {LOSSES}")


def compute_loss(name: str, out: Output, labels: jax.Array, num_classes: int) -> jax.Array:
    """Mean loss over the batch."""
    return per_example_loss(name, out, labels, num_classes).mean()


def check_loss_readout(name: str, readout: str) -> None:
    """Count losses need a spiking output layer; ``ce_mem`` works with either readout."""
    if name not in LOSSES:
        raise ValueError(f"unknown train.loss {name!r}; expected one of {LOSSES}")
    if name in ("ce_count", "mse_count") and readout != "count":
        raise ValueError(f"train.loss {name!r} needs model.readout='count' (spiking output), got {readout!r}")

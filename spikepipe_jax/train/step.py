"""What every train step shares: the state it carries and the metrics it returns.

Used by the training loop's step (:func:`spikepipe_jax.train.loop.make_train_step`) and the
pipeline simulator's (:func:`spikepipe_jax.train.pipesim.make_train_step`); both are
``(TrainState, x, y, key) -> (TrainState, step_metrics(...))``. This module imports nothing
from ``train/``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: jax.Array  # int32 scalar: optimiser steps taken


def step_metrics(loss, out, y, grads) -> dict:
    """Metrics every train step returns: loss, batch accuracy, all gradients finite."""
    # g * 0 is 0 for finite g and NaN for NaN or +-inf, so one sum per leaf says whether all of
    # it is finite (no overflow possible), without a boolean array and a second reduction
    return {"loss": loss, "accuracy": jnp.mean(jnp.argmax(out.logits, -1) == y),
            "finite": jnp.isfinite(sum(jnp.sum(g * 0) for g in jax.tree.leaves(grads)))}

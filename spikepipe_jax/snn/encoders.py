"""Input encoders: static inputs ``[B, ...]`` in [0, 1] to time-major currents/spikes ``[T, B, ...]``.

* ``rate``:    Bernoulli spikes, P(spike at t) = clip(x, 0, 1), independent over t (snnTorch
               ``spikegen.rate``); needs a PRNG key.
* ``direct``:  the analogue input as a constant current at every step (first layer does the coding).
* ``latency``: one spike per input at t_s = round((1 − x)·(T − 1)) for x > ``min_value``
               (brighter fires earlier; linear latency code, as ``spikegen.latency(linear=True,
               normalize=True)``), none for x ≤ ``min_value``.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

ENCODINGS = ("rate", "direct", "latency")


def rate(key: jax.Array, x: jax.Array, num_steps: int) -> jax.Array:
    p = jnp.clip(x, 0.0, 1.0)
    u = jax.random.uniform(key, (num_steps,) + x.shape, x.dtype)
    return (u < p).astype(x.dtype)


def direct(x: jax.Array, num_steps: int) -> jax.Array:
    return jnp.broadcast_to(x, (num_steps,) + x.shape)


def latency(x: jax.Array, num_steps: int, min_value: float = 0.01) -> jax.Array:
    t_spike = jnp.round((1.0 - jnp.clip(x, 0.0, 1.0)) * (num_steps - 1))
    t = jnp.arange(num_steps, dtype=x.dtype).reshape((num_steps,) + (1,) * x.ndim)
    return ((t == t_spike) & (x > min_value)).astype(x.dtype)


def encode(encoding: str, x: jax.Array, num_steps: int, key: Optional[jax.Array] = None) -> jax.Array:
    """Encodes ``x`` ``[B, ...]`` into ``[T, B, ...]`` by name."""
    if num_steps <= 0:
        raise ValueError(f"num_steps (T) must be positive, got {num_steps}")
    if encoding == "rate":
        if key is None:
            raise ValueError("rate encoding needs a PRNG key")
        return rate(key, x, num_steps)
    if encoding == "direct":
        return direct(x, num_steps)
    if encoding == "latency":
        return latency(x, num_steps)
    raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")

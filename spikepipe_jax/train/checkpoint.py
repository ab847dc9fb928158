"""Checkpoints (msgpack via flax.serialization), written atomically through :mod:`spikepipe_jax.io`."""

from __future__ import annotations

from typing import Any

import flax.serialization
import jax

from spikepipe_jax.io import atomic_write_bytes


def save(path: str, state: Any) -> None:
    """Serialises a pytree of arrays (msgpack, via flax.serialization) atomically."""
    atomic_write_bytes(path, flax.serialization.to_bytes(jax.device_get(state)))


def restore(path: str, template: Any) -> Any:
    """Restores a pytree saved by :func:`save` into the structure of ``template``."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return flax.serialization.from_bytes(template, data)
    except Exception as e:  # corrupt or from another network/optimiser
        raise ValueError(f"checkpoint {path} is corrupt or does not match this config "
                         f"(network/optimiser changed?): {type(e).__name__}: {e}") from None

"""Checkpoints (msgpack via flax.serialization), written atomically through :mod:`spikepipe_jax.io`.

A training run keeps two: :func:`save_rotating` moves the newest checkpoint to
``<stem>.prev.msgpack`` before it writes the new one, and :func:`restore_latest` falls back to
that previous checkpoint when the newest one cannot be read (damaged on disk), saying so. Each
file is written atomically and the move is one ``os.replace``, so a kill at any point leaves at
least one complete checkpoint once the first has been written.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

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


def prev_path(path: str) -> str:
    """Where :func:`save_rotating` keeps the checkpoint before ``path``'s newest one."""
    stem, ext = os.path.splitext(path)
    return f"{stem}.prev{ext}"


def exists(path: str) -> bool:
    """Whether a rotating checkpoint (newest or previous) exists at ``path``."""
    return os.path.exists(path) or os.path.exists(prev_path(path))


def save_rotating(path: str, state: Any) -> None:
    """Saves ``state`` at ``path``; the checkpoint it replaces becomes :func:`prev_path`."""
    if os.path.exists(path):
        os.replace(path, prev_path(path))
    save(path, state)


def restore_latest(path: str, template: Any, *,
                   warn: Callable[[str], None]) -> Optional[tuple[Any, str]]:
    """Restores the newest readable checkpoint of :func:`save_rotating`.

    Returns ``(state, path read)``, or ``None`` where neither file exists. A newest checkpoint
    that cannot be read is moved to ``<path>.corrupt`` (so the next save does not rotate it
    over the good one) and the previous one is read instead, with a ``warn`` message that says
    so. Raises ValueError (the newest file's error, naming the previous one too) when neither
    can be read.
    """
    prev = prev_path(path)
    if os.path.exists(path):
        try:
            return restore(path, template), path
        except ValueError as e:
            if not os.path.exists(prev):
                raise
            try:
                state = restore(prev, template)
            except ValueError as e_prev:
                raise ValueError(f"{e}; the previous checkpoint {prev} cannot be read either "
                                 f"({e_prev})") from None
            os.replace(path, path + ".corrupt")
            warn(f"{e}; moved it to {path}.corrupt and resumed from the previous checkpoint {prev}")
            return state, prev
    if os.path.exists(prev):  # killed between the rotation and the new file's rename
        return restore(prev, template), prev
    return None

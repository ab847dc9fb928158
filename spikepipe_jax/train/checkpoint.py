"""Atomic checkpoints and result files.

Everything is written to a temporary file in the destination folder, flushed and fsync-ed, then
``os.replace``-d over the target, so a reader (or a resumed run) sees either the old file or the
complete new one, never a half-written one, even if the process is killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import flax.serialization
import jax


def atomic_write_bytes(path: str, data: bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


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

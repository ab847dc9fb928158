"""Atomic file output shared by every writer in the project (results, checkpoints, figures).

Each write goes to a temporary file in the destination folder, is flushed and fsync-ed, gets
normal permissions (``0666 & ~umask``, not ``mkstemp``'s 0600) and is ``os.replace``-d over the
target, so readers see the old file or the complete new one, never half of one, even after
SIGKILL.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any


def atomic_write_bytes(path: str, data: bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def png_bytes(fig, dpi: int = 120) -> bytes:
    """A matplotlib figure as PNG bytes (tight bounding box)."""
    import io as _io
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def atomic_save_figure(path: str, fig, dpi: int = 120) -> None:
    """Saves a matplotlib figure as PNG atomically."""
    atomic_write_bytes(path, png_bytes(fig, dpi))

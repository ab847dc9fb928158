"""Host-side mini-batching (NumPy; deterministic given the ``np.random.Generator`` passed in)."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from spikepipe_jax.data import base


def iterate_batches(x: np.ndarray, y: np.ndarray, batch_size: int, *,
                    rng: np.random.Generator, shuffle: bool = True,
                    drop_last: bool = True, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields one epoch of ``(x_batch, y_batch)`` pairs along the leading axis.

    Args:
      x: ``[N, ...]`` inputs.
      y: ``[N]`` labels.
      batch_size: samples per batch (>= 1).
      rng: source of the epoch's permutation (``rng.permutation(N)``, drawn once per call
        when ``shuffle``; the generator is not touched otherwise).
      shuffle: visit samples in a random order; else in index order.
      drop_last: drop the final partial batch so every batch has exactly ``batch_size``
        samples (fixed shapes, no re-compilation). With ``N < batch_size`` nothing is yielded.
      start: skip the epoch's first ``start`` batches (the same permutation is drawn: a run
        resumed mid-epoch sees the batches it would have seen).

    Yields:
      ``(x[idx], y[idx])`` for consecutive slices ``idx`` of the (permuted) index order.
    """
    if not base.is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x has {n} samples but y has {len(y)}")
    order = rng.permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for first in range(start * batch_size, stop, batch_size):
        idx = order[first:first + batch_size]
        yield x[idx], y[idx]

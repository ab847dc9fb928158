"""The :class:`Dataset` container shared by every loader, plus small validation helpers.

Layout conventions (batch-major, as stored on the host; the training loop converts to the
time-major ``[T, B, ...]`` layout at its edge):

* static images: ``x`` is ``float32 [N, H, W, C]`` with values in ``[0, 1]`` (the IDX and CIFAR
  loaders keep the file's bytes and scale a batch at a time: :class:`ByteImages`);
* event data already binned in time (N-MNIST): ``x`` is ``float32 [N, T, H, W, C]``, time
  second, values in ``{0, 1}``;
* labels: ``int32 [N]`` with values in ``0 .. num_classes - 1``.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A train/test pair of arrays held in host memory.

    Attributes:
      name: canonical dataset name (a key of ``DATASET_NAMES``).
      train_x: ``float32 [N, H, W, C]`` in ``[0, 1]`` (N-MNIST: ``[N, T, 34, 34, 2]`` event
        frames, time second).
      train_y: ``int32 [N]``.
      test_x: same layout as ``train_x``.
      test_y: ``int32 [M]``.
      num_classes: number of classes (labels lie in ``0 .. num_classes - 1``).
    """

    name: str
    train_x: np.ndarray  # [N, H, W, C] or [N, T, H, W, C]
    train_y: np.ndarray  # [N]
    test_x: np.ndarray  # [M, H, W, C] or [M, T, H, W, C]
    test_y: np.ndarray  # [M]
    num_classes: int

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.ndim not in (4, 5):
                raise ValueError(
                    f"Dataset {self.name!r}: {split}_x must be [N, H, W, C] or [N, T, H, W, C], "
                    f"got shape {x.shape}")
            if y.ndim != 1 or y.shape[0] != x.shape[0]:
                raise ValueError(
                    f"Dataset {self.name!r}: {split}_y has shape {y.shape}, expected "
                    f"({x.shape[0]},) to match {split}_x")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise ValueError(
                f"Dataset {self.name!r}: train_x per-sample shape {self.train_x.shape[1:]} "
                f"differs from test_x per-sample shape {self.test_x.shape[1:]}")

    @property
    def input_shape(self) -> tuple:
        """Per-sample spatial shape ``(H, W, C)`` (for event data, the shape of one frame)."""
        return tuple(int(d) for d in self.train_x.shape[-3:])

    @property
    def is_temporal(self) -> bool:
        """True for event data already binned in time (``x`` is ``[N, T, H, W, C]``)."""
        return self.train_x.ndim == 5

    @property
    def num_steps(self) -> int:
        """Number of time bins T of temporal data (1 for static images)."""
        return int(self.train_x.shape[1]) if self.is_temporal else 1


class ByteImages:
    """Images held as the file's bytes (``uint8``) and read as ``float32`` in ``[0, 1]``.

    The training loop reads a data set one batch at a time, so keeping it as bytes costs a
    quarter of the memory of a float32 copy (Fashion-MNIST's 70,000 images: 55 MB instead of
    220 MB; CIFAR-10's 60,000: 184 MB instead of 737 MB). Indexing (``images[idx]``) returns
    ``raw[idx].astype(float32) / 255``: bit for bit the values the float32 copy would hold.
    ``np.asarray(images)`` makes that whole copy; ``shape``, ``ndim``, ``dtype`` (float32) and
    ``len`` are those of the float32 array.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, raw: np.ndarray):
        if raw.dtype != np.uint8:
            raise ValueError(f"ByteImages holds uint8 images, got {raw.dtype}")
        self.raw = raw

    @property
    def shape(self) -> tuple:
        return self.raw.shape

    @property
    def ndim(self) -> int:
        return self.raw.ndim

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, idx) -> np.ndarray:
        return _scale(self.raw[idx])

    def __array__(self, dtype=None, copy=None):
        del copy  # always a new array
        x = _scale(self.raw)
        return x if dtype is None else x.astype(dtype)


def _scale(raw: np.ndarray) -> np.ndarray:
    return raw.astype(np.float32) / np.float32(255.0)


def is_int(value) -> bool:
    """True for Python/NumPy integers (not bools)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_max(max_train: int, max_test: int) -> None:
    """Raises ValueError unless both limits are non-negative integers."""
    for label, value in (("max_train", max_train), ("max_test", max_test)):
        if not is_int(value) or value < 0:
            raise ValueError(f"{label} must be an integer >= 0 (0 = all), got {value!r}")


def check_num_steps(num_steps: int) -> None:
    """Raises ValueError unless ``num_steps`` (T, the number of time bins) is an integer >= 1."""
    if not is_int(num_steps) or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")


def truncate(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Keeps the first ``n`` samples (all when ``n == 0``)."""
    if n > 0:
        return x[:n], y[:n]
    return x, y


def require_dir(data_dir: str, dataset: str, expected: str) -> str:
    """Returns ``data_dir`` if it is an existing folder, else raises a clear error.

    Args:
      data_dir: the folder given by ``config.data.dir``.
      dataset: dataset name, for the message.
      expected: human-readable description of the files the folder must hold.
    """
    if not data_dir:
        raise ValueError(
            f"dataset {dataset!r} is read from local files and needs a data directory "
            f"(--config.data.dir=/path) holding {expected}; nothing is downloaded")
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"data directory {data_dir!r} for dataset {dataset!r} does not exist or is not a "
            f"folder; it must hold {expected}")
    return data_dir


def check_labels(labels: np.ndarray, num_classes: int, path: str) -> np.ndarray:
    """Casts labels to int32 after checking they lie in ``0 .. num_classes - 1``."""
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{path}: labels must lie in 0..{num_classes - 1}, found values in "
            f"{int(labels.min())}..{int(labels.max())}")
    return labels.astype(np.int32)

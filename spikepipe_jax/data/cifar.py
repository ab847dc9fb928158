"""CIFAR-10 from the local "python version" pickle batches (Krizhevsky, 2009).

Expected files, in ``data_dir`` or in ``data_dir/cifar-10-batches-py/`` (the folder the
official ``cifar-10-python.tar.gz`` unpacks to)::

    data_batch_1 .. data_batch_5   (training, 5 x 10,000 images, read in this order)
    test_batch                     (test, 10,000 images)

Each batch is a pickled dict (written by Python 2, so its keys are bytes) with
``b"data"``: ``uint8 [n, 3072]``, each row the 1024 red, then 1024 green, then 1024 blue
values of a 32x32 image in row-major order; and ``b"labels"``: a list of ``n`` ints in 0..9.
(``str`` keys ``"data"``/``"labels"`` are accepted too.) Images read as
``float32 [N, 32, 32, 3]`` (NHWC) scaled by 1/255, a batch at a time (``ByteImages``).

Pickles can run code when loaded; the reader uses a restricted unpickler that only
resolves the few NumPy names a pickled ``ndarray`` needs and refuses anything else.
"""

from __future__ import annotations

import io
import os
import pickle

import numpy as np

from spikepipe_jax.data import base

NUM_CLASSES = 10
SUBDIR = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
EXPECTED_FILES = (f"{', '.join(TRAIN_FILES)} and {TEST_FILE} (CIFAR-10 python pickles), "
                  f"directly or inside {SUBDIR}/")
_SIDE, _CHANNELS = 32, 3
_ROW = _SIDE * _SIDE * _CHANNELS  # 3072

# (module, name) pairs a pickled ndarray may reference, mapped to the objects to use.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("_codecs", "encode"): ("_codecs", "encode"),  # bytes objects under protocol 2 (Python 3)
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the NumPy names listed in ``_ALLOWED``."""

    def find_class(self, module, name):
        target = _ALLOWED.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name} (only NumPy arrays are allowed)")
        return super().find_class(*target)


def read_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads one CIFAR-10 pickle batch.

    Args:
      path: path of ``data_batch_<i>`` or ``test_batch``.

    Returns:
      ``(images, labels)``: ``uint8 [n, 32, 32, 3]`` (NHWC) and ``int32 [n]``.

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: not a readable pickle, missing ``data``/``labels`` keys, wrong shapes or
        dtype, or a label count different from the image count.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CIFAR-10 batch {path!r} not found")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        batch = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # truncated/corrupt pickles raise many different types
        raise ValueError(
            f"{path}: not a readable CIFAR-10 pickle batch ({type(e).__name__}: {e})") from e
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a pickled dict with keys b'data' and b'labels', "
                         f"got {type(batch).__name__}")

    def get(key: str):
        for k in (key.encode(), key):
            if k in batch:
                return batch[k]
        raise ValueError(f"{path}: pickle has keys {sorted(map(repr, batch))}, expected b'data' "
                         f"and b'labels' (missing {key.encode()!r})")

    data, labels = get("data"), get("labels")
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != _ROW or data.dtype != np.uint8:
        raise ValueError(f"{path}: b'data' is {data.dtype} {data.shape}, expected uint8 "
                         f"[n, {_ROW}] (32x32 RGB rows)")
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise ValueError(f"{path}: b'labels' has shape {labels.shape}, expected ({data.shape[0]},) "
                         f"to match b'data'")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: b'labels' has dtype {labels.dtype}, expected integers")
    labels = base.check_labels(labels, NUM_CLASSES, path)
    images = data.reshape(-1, _CHANNELS, _SIDE, _SIDE).transpose(0, 2, 3, 1)  # CHW planes -> HWC
    return images, labels


def _batch_dir(data_dir: str) -> str:
    """Picks ``data_dir/cifar-10-batches-py`` if it holds the batches, else ``data_dir``."""
    sub = os.path.join(data_dir, SUBDIR)
    if any(os.path.isfile(os.path.join(sub, n)) for n in (TEST_FILE, TRAIN_FILES[0])):
        return sub
    return data_dir


def _load(paths: list[str], limit: int) -> tuple[base.ByteImages, np.ndarray]:
    """Concatenates batches in order, reading only as many as ``limit`` needs."""
    xs, ys, count = [], [], 0
    for path in paths:
        x, y = read_batch(path)
        xs.append(x)
        ys.append(y)
        count += x.shape[0]
        if 0 < limit <= count:
            break
    x, y = base.truncate(np.concatenate(xs), np.concatenate(ys), limit)
    return base.ByteImages(x), y  # float32 in [0, 1] a batch at a time


def load_cifar10(data_dir: str, *, max_train: int = 0, max_test: int = 0) -> base.Dataset:
    """Loads CIFAR-10 from the python pickle batches in ``data_dir``.

    Args:
      data_dir: folder holding the batches (or their ``cifar-10-batches-py/`` subfolder).
      max_train: keep the first ``max_train`` training images (batches 1..5 in order; 0 = all).
      max_test: keep the first ``max_test`` test images (0 = all).

    Returns:
      A :class:`Dataset` named ``"cifar10"`` with ``x`` of shape ``[N, 32, 32, 3]`` in ``[0, 1]``.
    """
    base.check_max(max_train, max_test)
    base.require_dir(data_dir, "cifar10", EXPECTED_FILES)
    folder = _batch_dir(data_dir)
    paths = [os.path.join(folder, n) for n in TRAIN_FILES + (TEST_FILE,)]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 batch file(s) not found: {', '.join(missing)}; {data_dir!r} must hold "
            f"{EXPECTED_FILES}")
    train_x, train_y = _load(paths[:-1], max_train)
    test_x, test_y = _load(paths[-1:], max_test)
    return base.Dataset(name="cifar10", train_x=train_x, train_y=train_y, test_x=test_x,
                        test_y=test_y, num_classes=NUM_CLASSES)

r"""N-MNIST event streams from the original binary files, binned into T frames.

N-MNIST (Orchard, Jayawant, Cohen & Thakor, "Converting static image datasets to spiking
neuromorphic datasets using saccades", Front. Neurosci. 2015) records each MNIST digit with
an ATIS event camera during three saccades (~300 ms). Expected layout in ``data_dir`` (as
``Train.zip``/``Test.zip`` of the original release unpack)::

    Train/0/*.bin ... Train/9/*.bin     (the folder name is the label)
    Test/0/*.bin  ... Test/9/*.bin

Event encoding (one event = 40 bits = 5 bytes, big-endian, as in Orchard's
``Read_Ndataset.m`` and the readers in Tonic / snnTorch)::

    byte 0      bits 39..32   x address (pixels, 0..33)
    byte 1      bits 31..24   y address (pixels, 0..33)
    byte 2      bit  23       polarity (0 = OFF, 1 = ON)
    bytes 2..4  bits 22..0    timestamp in microseconds (23 bits):
                              t = ((b2 & 0x7F) << 16) | (b3 << 8) | b4

Binning into ``T`` frames (per sample, on its own time span): with ``t0 = min t`` and
``t1 = max t``, event ``e`` goes to bin

.. math:: k_e = \left\lfloor \frac{T\,(t_e - t_0)}{t_1 - t_0 + 1} \right\rfloor \in \{0..T-1\},

i.e. ``T`` equal windows of ``(t1 - t0 + 1) / T`` µs each. Frame ``k`` is an array
``[34, 34, 2]`` indexed ``[y, x, polarity]`` (rows = y, columns = x, channel 0 = OFF,
1 = ON). ``events_to_frames`` can return event counts; :func:`load_nmnist` (and so
``load_dataset("nmnist")``) uses **binary** frames: 1 where a pixel/polarity had at least one
event in the window, else 0, so the values lie in {0, 1} like spikes.

Sample order: files are sorted by name inside each digit folder, then the classes are
interleaved round-robin (0, 1, ..., 9, 0, 1, ...; a class that runs out is skipped), so
``max_train``/``max_test`` prefixes stay class-balanced; only the kept files are read.
"""

from __future__ import annotations

import os

import numpy as np

from spikepipe_jax.data import base

NUM_CLASSES = 10
SENSOR = 34  # width = height of the N-MNIST sensor crop, pixels
POLARITIES = 2
EVENT_BYTES = 5
EXPECTED_FILES = ("Train/<digit>/*.bin and Test/<digit>/*.bin (original N-MNIST event files, "
                  "digit folders 0..9)")


def decode_events(raw: np.ndarray) -> dict[str, np.ndarray]:
    """Decodes N-MNIST 40-bit events (see the module docstring for the bit layout).

    Args:
      raw: ``uint8 [5 * n]`` file contents.

    Returns:
      Dict with ``x``, ``y`` (``int32 [n]``), ``p`` (``int32 [n]``, 0 = OFF, 1 = ON) and
      ``t`` (``int64 [n]``, microseconds).

    Raises:
      ValueError: the size is not a multiple of 5 bytes.
    """
    if raw.size % EVENT_BYTES:
        raise ValueError(
            f"{raw.size} bytes is not a multiple of {EVENT_BYTES}; expected N-MNIST events of 40 "
            f"bits (x, y, polarity + 23-bit timestamp); truncated or wrong format")
    ev = raw.reshape(-1, EVENT_BYTES).astype(np.int64)  # [n, 5]
    return {
        "x": ev[:, 0].astype(np.int32),
        "y": ev[:, 1].astype(np.int32),
        "p": (ev[:, 2] >> 7).astype(np.int32),
        "t": ((ev[:, 2] & 0x7F) << 16) | (ev[:, 3] << 8) | ev[:, 4],
    }


def read_events(path: str) -> dict[str, np.ndarray]:
    """Reads one N-MNIST ``.bin`` file.

    The result is valid input for the binning: ``x``, ``y`` lie in 0..33 (checked here) and
    ``p`` in {0, 1} (a single bit), so :func:`load_nmnist` bins it without checking it again.

    Args:
      path: path of the event file.

    Returns:
      The decoded events (see :func:`decode_events`).

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: the size is not a multiple of 5 bytes, or an address lies outside 0..33.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"N-MNIST event file {path!r} not found")
    try:
        events = decode_events(np.fromfile(path, dtype=np.uint8))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    for axis in ("x", "y"):  # decoded from one byte each, so never negative
        if events[axis].size and events[axis].max() >= SENSOR:
            raise ValueError(f"{path}: event {axis} address {int(events[axis].max())} outside "
                             f"0..{SENSOR - 1} (the 34x34 N-MNIST sensor)")
    return events


def _bin_events(x: np.ndarray, y: np.ndarray, p: np.ndarray, t: np.ndarray, num_steps: int,
                binary: bool) -> np.ndarray:
    """:func:`events_to_frames` without the checks: the inputs must already be valid."""
    size = num_steps * SENSOR * SENSOR * POLARITIES
    if t.size == 0:
        return np.zeros((num_steps, SENSOR, SENSOR, POLARITIES), np.float32)
    t0, t1 = t.min(), t.max()
    k = (num_steps * (t - t0)) // (t1 - t0 + 1)  # [n] int64 in 0..T-1
    flat = ((k * SENSOR + y) * SENSOR + x) * POLARITIES + p
    counts = np.bincount(flat, minlength=size)
    if binary:
        counts = counts > 0
    return counts.astype(np.float32).reshape(num_steps, SENSOR, SENSOR, POLARITIES)


def events_to_frames(events: dict[str, np.ndarray], num_steps: int, *,
                     binary: bool = True) -> np.ndarray:
    """Bins events into ``num_steps`` equal time windows over the sample's own span.

    Args:
      events: dict with integer arrays ``x``, ``y``, ``p``, ``t`` (see :func:`decode_events`).
      num_steps: T, the number of frames.
      binary: if True, a frame entry is 1 when at least one event fell in it; else the count.

    Returns:
      ``float32 [T, 34, 34, 2]`` frames indexed ``[k, y, x, polarity]``.

    Raises:
      ValueError: bad ``num_steps``, event arrays of different lengths, or ``x``/``y``
        outside 0..33 or ``p`` outside {0, 1}.
    """
    base.check_num_steps(num_steps)
    x, y, p, t = (np.asarray(events[a], np.int64) for a in ("x", "y", "p", "t"))
    if not x.shape == y.shape == p.shape == t.shape:
        raise ValueError(f"event arrays differ in length: x {x.shape}, y {y.shape}, p {p.shape}, "
                         f"t {t.shape}")
    if t.size:
        for name, v, hi in (("x", x, SENSOR), ("y", y, SENSOR), ("p", p, POLARITIES)):
            if v.min() < 0 or v.max() >= hi:
                raise ValueError(f"event {name} values must lie in 0..{hi - 1}, found "
                                 f"{int(v.min())}..{int(v.max())}")
    return _bin_events(x, y, p, t, num_steps, binary)


def list_files(split_dir: str) -> tuple[list[str], np.ndarray]:
    """Lists ``<split_dir>/<digit>/*.bin`` in the fixed round-robin class order.

    Args:
      split_dir: the ``Train`` or ``Test`` folder.

    Returns:
      ``(paths, labels)`` with ``labels`` ``int32 [n]``.
    """
    if not os.path.isdir(split_dir):
        raise FileNotFoundError(
            f"N-MNIST folder {split_dir!r} not found; expected {EXPECTED_FILES}")
    per_class = []
    for digit in range(NUM_CLASSES):
        folder = os.path.join(split_dir, str(digit))
        names = os.listdir(folder) if os.path.isdir(folder) else []
        per_class.append([os.path.join(folder, n) for n in sorted(names) if n.endswith(".bin")])
    paths, labels = [], []
    for i in range(max(len(c) for c in per_class)):
        for digit, files in enumerate(per_class):
            if i < len(files):
                paths.append(files[i])
                labels.append(digit)
    if not paths:
        raise FileNotFoundError(
            f"no .bin files in {split_dir!r}/<digit>/ (digit folders 0..9); "
            f"expected {EXPECTED_FILES}")
    return paths, np.asarray(labels, np.int32)


def _load_split(split_dir: str, num_steps: int, limit: int, binary: bool):
    """Reads and bins the first ``limit`` files (0 = all) of one split."""
    paths, labels = list_files(split_dir)
    if limit > 0:
        paths, labels = paths[:limit], labels[:limit]
    x = np.empty((len(paths), num_steps, SENSOR, SENSOR, POLARITIES), np.float32)
    for i, path in enumerate(paths):
        ev = read_events(path)  # checks the file; the binning checks nothing again
        x[i] = _bin_events(ev["x"], ev["y"], ev["p"], ev["t"], num_steps, binary)
    return x, labels


def load_nmnist(data_dir: str, num_steps: int, *, max_train: int = 0, max_test: int = 0,
                binary: bool = True) -> base.Dataset:
    """Loads N-MNIST from its ``.bin`` event files and bins each sample into T frames.

    Memory: ``N * T * 34 * 34 * 2 * 4`` bytes per split (60,000 training samples at T = 10
    take 5.5 GB); use ``max_train``/``max_test`` for small runs.

    Args:
      data_dir: folder holding ``Train/`` and ``Test/`` (see module docstring).
      num_steps: T, the number of time bins per sample.
      max_train: keep the first ``max_train`` training samples of the fixed order (0 = all).
      max_test: keep the first ``max_test`` test samples (0 = all).
      binary: binary frames (default, used by ``load_dataset``) or event counts.

    Returns:
      A temporal :class:`Dataset` named ``"nmnist"``, ``x`` of shape ``[N, T, 34, 34, 2]``.
    """
    base.check_max(max_train, max_test)
    base.check_num_steps(num_steps)
    base.require_dir(data_dir, "nmnist", EXPECTED_FILES)
    train_x, train_y = _load_split(os.path.join(data_dir, "Train"), num_steps, max_train, binary)
    test_x, test_y = _load_split(os.path.join(data_dir, "Test"), num_steps, max_test, binary)
    return base.Dataset(name="nmnist", train_x=train_x, train_y=train_y, test_x=test_x,
                        test_y=test_y, num_classes=NUM_CLASSES)

"""MNIST and Fashion-MNIST from local IDX files (raw or gzipped).

IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/): a 4-byte magic number
``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian uint32 dimension sizes, then the
payload in C (row-major) order, big-endian. MNIST and Fashion-MNIST use type ``0x08``
(unsigned byte): images are ``ndim = 3`` (``N, 28, 28``), labels ``ndim = 1`` (``N``).

Expected files in ``data_dir`` (each either raw or with a ``.gz`` suffix; the dotted
spelling ``train-images.idx3-ubyte`` some mirrors use is accepted too; raw wins over ``.gz``)::

    train-images-idx3-ubyte   train-labels-idx1-ubyte
    t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte

Images read as ``float32 [N, H, W, 1]`` in ``[0, 1]`` (the bytes scaled by 1/255 a batch at a
time, :class:`~spikepipe_jax.data.base.ByteImages`); the official
60,000/10,000 split and file order are kept, and ``max_train``/``max_test`` keep a prefix.

An empty ``data_dir`` means the dataset's default folder where it has one (:data:`DEFAULT_DIRS`):
Fashion-MNIST is read from Debian's package ``dataset-fashion-mnist``, which installs the original
gzipped files in ``/usr/share/datasets/fashion-mnist``. MNIST has no such package, so it needs
``data_dir``.
"""

from __future__ import annotations

import gzip
import os
import types
import zlib

import numpy as np

from spikepipe_jax.data import base

NUM_CLASSES = 10

# IDX type code -> element dtype (big-endian).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

EXPECTED_FILES = ", ".join(_FILES.values()) + " (each raw or .gz)"

# Immutable {dataset name: (folder used when data_dir is empty, Debian package that fills it)}.
DEFAULT_DIRS = types.MappingProxyType({
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist", "dataset-fashion-mnist"),
})


def default_dir(name: str) -> str:
    """The folder an empty ``data_dir`` means for dataset ``name`` ("" where there is none)."""
    return DEFAULT_DIRS[name][0] if name in DEFAULT_DIRS else ""


def _how_to_get(name: str) -> str:
    folder, package = DEFAULT_DIRS[name]
    return (f"get them with `apt-get install {package}` (Debian's package that installs {folder}, "
            f"read when data.dir is empty) or pass --config.data.dir=/path")


def _read_bytes(path: str) -> bytes:
    """Reads a file, gunzipping it when its name ends in ``.gz``."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{path}: not a complete gzip file ({e})") from e


def read_idx(path: str, *, ndim: int | None = None) -> np.ndarray:
    """Reads one IDX file (raw or ``.gz``) into a native-endian NumPy array.

    Args:
      path: file path; a ``.gz`` suffix means gzip-compressed.
      ndim: if given, the number of dimensions the file must declare.

    Returns:
      The array with the file's declared shape and element type.

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: bad magic number, unexpected dimension count, or a payload whose size
        differs from the declared shape (truncated or trailing bytes).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"IDX file {path!r} not found")
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: {len(data)} bytes, too short for an IDX header (4-byte magic)")
    zero0, zero1, code, nd = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or code not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{data[:4].hex()}, expected 0x0000TTDD with type "
            f"TT in {{{', '.join(f'{c:02x}' for c in _IDX_DTYPES)}}} (08 = unsigned byte)")
    if ndim is not None and nd != ndim:
        raise ValueError(f"{path}: IDX file declares {nd} dimensions, expected {ndim}")
    header = 4 + 4 * nd
    if len(data) < header:
        raise ValueError(
            f"{path}: truncated IDX header: {len(data)} bytes, expected at least {header}")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=nd, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(
            f"{path}: payload {kind}: file has {len(data)} bytes, expected {expected} for an "
            f"IDX array of shape {shape} and type {dtype.str}")
    arr = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def _find(data_dir: str, stem: str) -> str:
    """Returns the first existing spelling of an IDX file in ``data_dir``."""
    dotted = stem.replace("-idx", ".idx")
    candidates = [stem, stem + ".gz", dotted, dotted + ".gz"]
    for name in candidates:
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"{os.path.join(data_dir, stem)!r} not found (also tried {', '.join(candidates[1:])}); "
        f"{data_dir!r} must hold {EXPECTED_FILES}")


def _load_split(data_dir: str, split: str, limit: int) -> tuple[base.ByteImages, np.ndarray]:
    """Reads and checks one images/labels pair, keeping the first ``limit`` (0 = all)."""
    img_path = _find(data_dir, _FILES[f"{split}_images"])
    lbl_path = _find(data_dir, _FILES[f"{split}_labels"])
    images = read_idx(img_path, ndim=3)
    labels = read_idx(lbl_path, ndim=1)
    if images.dtype != np.uint8:
        raise ValueError(
            f"{img_path}: IDX element type {images.dtype}, expected unsigned byte (0x08)")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{lbl_path}: {labels.shape[0]} labels, expected {images.shape[0]} to match the "
            f"images in {img_path}")
    labels = base.check_labels(labels, NUM_CLASSES, lbl_path)
    images, labels = base.truncate(images, labels, limit)
    return base.ByteImages(images[..., None]), labels  # [N, H, W, 1], float32 a batch at a time


def load_idx_dataset(name: str, data_dir: str, *, max_train: int = 0,
                     max_test: int = 0) -> base.Dataset:
    """Loads an MNIST-format dataset (``"mnist"`` or ``"fashion_mnist"``) from ``data_dir``.

    Args:
      name: dataset name stored in the result.
      data_dir: folder holding the four IDX files (see module docstring); empty: the
        dataset's folder in :data:`DEFAULT_DIRS` (an error naming how to get the files when it
        is missing), or an error for a dataset without one.
      max_train: keep the first ``max_train`` training samples (0 = all).
      max_test: keep the first ``max_test`` test samples (0 = all).

    Returns:
      A :class:`Dataset` with ``x`` of shape ``[N, 28, 28, 1]`` in ``[0, 1]``.
    """
    base.check_max(max_train, max_test)
    hint = ""
    if not data_dir and name in DEFAULT_DIRS:
        data_dir, hint = default_dir(name), _how_to_get(name)
        if not os.path.isdir(data_dir):
            raise FileNotFoundError(f"dataset {name!r}: data.dir is empty and the default folder "
                                    f"{data_dir} does not exist; it must hold {EXPECTED_FILES}: {hint}")
    else:
        base.require_dir(data_dir, name, EXPECTED_FILES)
    try:
        train_x, train_y = _load_split(data_dir, "train", max_train)
        test_x, test_y = _load_split(data_dir, "test", max_test)
    except FileNotFoundError as e:
        if not hint:
            raise
        raise FileNotFoundError(f"{e}; {hint}") from None
    try:  # the Dataset checks that training and test images have the same size
        return base.Dataset(name=name, train_x=train_x, train_y=train_y, test_x=test_x,
                            test_y=test_y, num_classes=NUM_CLASSES)
    except ValueError as e:
        raise ValueError(f"{data_dir}: {e}") from e


def load_mnist(data_dir: str, *, max_train: int = 0, max_test: int = 0) -> base.Dataset:
    """MNIST from IDX files in ``data_dir`` (see :func:`load_idx_dataset`)."""
    return load_idx_dataset("mnist", data_dir, max_train=max_train, max_test=max_test)


def load_fashion_mnist(data_dir: str, *, max_train: int = 0, max_test: int = 0) -> base.Dataset:
    """Fashion-MNIST from IDX files in ``data_dir`` (same file names as MNIST); an empty
    ``data_dir`` reads Debian's ``dataset-fashion-mnist`` folder (see :data:`DEFAULT_DIRS`)."""
    return load_idx_dataset("fashion_mnist", data_dir, max_train=max_train, max_test=max_test)

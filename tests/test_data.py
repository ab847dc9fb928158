"""Tests for spikepipe_jax.data: embedded digits, IDX, CIFAR-10 pickles, N-MNIST events, batching.

Every file-format test writes tiny files in the real on-disk format with an independent
writer (``struct``/``int.to_bytes``/``pickle``) and checks that exact values round-trip.
"""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from spikepipe_jax import data
from spikepipe_jax.data import base, cifar, digits, idx


# ----------------------------------------------------------------------------- writers
def _idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    """IDX encoding: 0x0000, type code, ndim, big-endian uint32 dims, big-endian payload."""
    dtype = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[type_code]
    header = bytes([0, 0, type_code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + np.asarray(arr, dtype).tobytes()


def _write(path, payload: bytes, gz: bool = False):
    path = str(path) + (".gz" if gz else "")
    with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
        f.write(payload)
    return path


def _mnist_arrays(n_train=5, n_test=3, side=28, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
            rng.integers(0, 10, n_train, dtype=np.uint8),
            rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
            rng.integers(0, 10, n_test, dtype=np.uint8))


def _write_mnist(folder, arrays, gz=False, names=None):
    names = names or ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                      "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    for name, arr in zip(names, arrays):
        _write(folder / name, _idx_bytes(arr), gz=gz)


def _event_bytes(events) -> bytes:
    """N-MNIST encoding of (x, y, p, t) tuples: the 40-bit big-endian word x|y|p|t."""
    out = b""
    for x, y, p, t in events:
        word = (x << 32) | (y << 24) | (p << 23) | t
        out += word.to_bytes(5, "big")
    return out


def _frames_bruteforce(events, num_steps, binary):
    """Python-loop binning with the documented rule k = floor(T (t - t0) / (t1 - t0 + 1))."""
    frames = np.zeros((num_steps, 34, 34, 2), np.float32)
    if not events:
        return frames
    t0 = min(e[3] for e in events)
    t1 = max(e[3] for e in events)
    for x, y, p, t in events:
        k = (num_steps * (t - t0)) // (t1 - t0 + 1)
        if binary:
            frames[k, y, x, p] = 1.0
        else:
            frames[k, y, x, p] += 1.0
    return frames


# ----------------------------------------------------------------------------- digits
def test_digits_shapes_dtypes_and_scaling():
    ds = data.load_dataset("digits")
    assert ds.name == "digits" and ds.num_classes == 10
    assert ds.train_x.shape == (1438, 8, 8, 1) and ds.test_x.shape == (359, 8, 8, 1)
    assert ds.train_x.dtype == np.float32 and ds.train_y.dtype == np.int32
    assert ds.test_x.dtype == np.float32 and ds.test_y.dtype == np.int32
    assert ds.input_shape == (8, 8, 1) and not ds.is_temporal
    both = np.concatenate([ds.train_x, ds.test_x])
    assert both.min() == 0.0 and both.max() == 1.0
    np.testing.assert_array_equal(both * 16, np.round(both * 16))  # pixel levels 0..16 / 16


def test_digits_split_is_a_stratified_partition_of_the_sklearn_data():
    from sklearn.datasets import load_digits
    ref = load_digits()
    ds = data.load_dataset("digits")
    # Same multiset of (image, label) pairs as scikit-learn's, after the 1/16 scaling.
    ref_rows = np.concatenate([ref.images.reshape(len(ref.images), -1) / 16.0,
                               ref.target[:, None]], axis=1)
    got_rows = np.concatenate([
        np.concatenate([ds.train_x, ds.test_x]).reshape(-1, 64).astype(np.float64),
        np.concatenate([ds.train_y, ds.test_y])[:, None]], axis=1)
    np.testing.assert_array_equal(np.unique(ref_rows, axis=0, return_counts=True)[1],
                                  np.unique(got_rows, axis=0, return_counts=True)[1])
    np.testing.assert_allclose(np.unique(got_rows, axis=0), np.unique(ref_rows, axis=0), atol=0)
    # Per class, 20 % of the class (rounded) goes to test.
    class_counts = np.bincount(ref.target, minlength=10)
    np.testing.assert_array_equal(np.bincount(ds.test_y, minlength=10),
                                  np.round(0.2 * class_counts).astype(int))


def test_digits_split_indices_disjoint_and_deterministic():
    labels = np.repeat(np.arange(3), [10, 7, 5])
    tr, te = digits.split_indices(labels)
    assert set(tr).isdisjoint(te) and sorted(np.concatenate([tr, te])) == list(range(22))
    np.testing.assert_array_equal(np.bincount(labels[te]), [2, 1, 1])  # round(0.2 * [10, 7, 5])
    tr2, te2 = digits.split_indices(labels)
    np.testing.assert_array_equal(tr, tr2)
    np.testing.assert_array_equal(te, te2)
    tr3, _ = digits.split_indices(labels, seed=1)
    assert not np.array_equal(tr, tr3)


def test_digits_fixed_regardless_of_global_numpy_state_and_truncation_is_prefix():
    np.random.seed(123)
    a = data.load_dataset("digits")
    np.random.seed(999)
    np.random.rand(10)
    b = data.load_dataset("digits", max_train=50, max_test=7)
    assert b.train_x.shape[0] == 50 and b.test_x.shape[0] == 7
    np.testing.assert_array_equal(a.train_x[:50], b.train_x)
    np.testing.assert_array_equal(a.train_y[:50], b.train_y)
    np.testing.assert_array_equal(a.test_y[:7], b.test_y)
    assert len(np.unique(a.train_y[:50])) >= 8  # the fixed order mixes the classes


# ----------------------------------------------------------------------------- IDX
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_round_trip(tmp_path, gz, name):
    arrays = _mnist_arrays()
    _write_mnist(tmp_path, arrays, gz=gz)
    ds = data.load_dataset(name, str(tmp_path))
    assert ds.name == name and ds.num_classes == 10 and ds.input_shape == (28, 28, 1)
    assert ds.train_x.dtype == np.float32 and ds.train_y.dtype == np.int32
    np.testing.assert_array_equal(ds.train_x[..., 0] * np.float32(255),
                                  arrays[0].astype(np.float32))
    np.testing.assert_array_equal(ds.train_y, arrays[1])
    np.testing.assert_array_equal(ds.test_x[..., 0] * np.float32(255), arrays[2].astype(np.float32))
    np.testing.assert_array_equal(ds.test_y, arrays[3])
    full = np.asarray(ds.train_x)
    assert full.dtype == np.float32 and full.max() <= 1.0 and full.min() >= 0.0
    np.testing.assert_array_equal(ds.train_x[[2, 0]], full[[2, 0]])  # a batch is the float32 copy's rows
    assert ds.train_x.raw.dtype == np.uint8  # held as the file's bytes


def test_idx_dotted_names_and_truncation(tmp_path):
    arrays = _mnist_arrays()
    _write_mnist(tmp_path, arrays, names=["train-images.idx3-ubyte", "train-labels.idx1-ubyte",
                                          "t10k-images.idx3-ubyte", "t10k-labels.idx1-ubyte"])
    ds = data.load_dataset("mnist", str(tmp_path), max_train=2, max_test=1)
    np.testing.assert_array_equal(ds.train_y, arrays[1][:2])
    np.testing.assert_array_equal(ds.test_x[..., 0] * np.float32(255),
                                  arrays[2][:1].astype(np.float32))


def test_read_idx_other_types(tmp_path):
    arr = np.array([[-3, 1000], [7, -32768]], np.int16)
    np.testing.assert_array_equal(data.read_idx(_write(tmp_path / "a", _idx_bytes(arr, 0x0B))), arr)
    f = np.array([0.5, -2.25, 3e8], np.float32)
    path = _write(tmp_path / "b", _idx_bytes(f, 0x0D), gz=True)
    np.testing.assert_array_equal(data.read_idx(path), f)


@pytest.mark.parametrize("corrupt, message", [
    (lambda b: b"\x01" + b[1:], "bad IDX magic"),
    (lambda b: b[:2] + b"\x07" + b[3:], "bad IDX magic"),
    (lambda b: b[:-1], "truncated"),
    (lambda b: b + b"\x00", "trailing"),
    (lambda b: b[:3] + b"\x02" + b[4:12] + b[16:], "declares 2 dimensions, expected 3"),
])
def test_idx_bad_images_file(tmp_path, corrupt, message):
    arrays = _mnist_arrays()
    _write_mnist(tmp_path, arrays)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(ValueError, match=message) as err:
        data.load_dataset("mnist", str(tmp_path))
    assert "train-images-idx3-ubyte" in str(err.value)


def test_idx_label_count_mismatch_and_bad_labels(tmp_path):
    tr_x, tr_y, te_x, te_y = _mnist_arrays()
    _write_mnist(tmp_path, (tr_x, tr_y[:4], te_x, te_y))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*4 labels, expected 5"):
        data.load_dataset("mnist", str(tmp_path))
    te_y = te_y.copy()
    te_y[0] = 10
    _write_mnist(tmp_path, (tr_x, tr_y, te_x, te_y))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.*0\.\.9"):
        data.load_dataset("mnist", str(tmp_path))


def test_idx_truncated_gzip(tmp_path):
    _write_mnist(tmp_path, _mnist_arrays(), gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz"):
        data.load_dataset("mnist", str(tmp_path))


def test_idx_missing_file_and_dir(tmp_path):
    arrays = _mnist_arrays()
    _write_mnist(tmp_path, arrays)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        data.load_dataset("mnist", str(tmp_path))
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"nowhere.*train-images-idx3-ubyte"):
        data.load_dataset("fashion_mnist", str(missing))
    with pytest.raises(ValueError, match=r"data.dir.*train-images-idx3-ubyte"):
        data.load_dataset("mnist", "")


def test_fashion_mnist_empty_dir_reads_the_default_folder(tmp_path, monkeypatch):
    """An empty data.dir means DEFAULT_DIRS' folder for fashion_mnist (Debian's package there);
    missing folder or files -> an error saying how to get them; mnist has no default."""
    arrays = _mnist_arrays(seed=3)
    _write_mnist(tmp_path, arrays, gz=True)
    monkeypatch.setattr(idx, "DEFAULT_DIRS", {"fashion_mnist": (str(tmp_path), "dataset-fashion-mnist")})
    ds = data.load_dataset("fashion_mnist", "", max_train=4)
    np.testing.assert_array_equal(ds.train_y, arrays[1][:4])
    np.testing.assert_array_equal(ds.test_x[..., 0] * np.float32(255), arrays[2].astype(np.float32))
    assert idx.default_dir("fashion_mnist") == str(tmp_path) and idx.default_dir("mnist") == ""
    with pytest.raises(ValueError, match=r"--config.data.dir"):
        data.load_dataset("mnist", "")  # no Debian package: still needs data.dir
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError,
                       match=r"t10k-labels-idx1-ubyte.*apt-get install dataset-fashion-mnist.*--config.data.dir"):
        data.load_dataset("fashion_mnist", "")
    missing = str(tmp_path / "nowhere")
    monkeypatch.setattr(idx, "DEFAULT_DIRS", {"fashion_mnist": (missing, "dataset-fashion-mnist")})
    with pytest.raises(FileNotFoundError) as err:
        data.load_dataset("fashion_mnist", "")
    msg = str(err.value)
    assert missing in msg and "apt-get install dataset-fashion-mnist" in msg and "--config.data.dir" in msg
    assert "\n" not in msg  # one line for the scripts' error: line


# ----------------------------------------------------------------------------- CIFAR-10
def _cifar_batch(n, seed, keys=(b"data", b"labels")):
    rng = np.random.default_rng(seed)
    batch = {b"batch_label": b"training batch", b"filenames": [b"f%d.png" % i for i in range(n)]}
    batch[keys[0]] = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    batch[keys[1]] = [int(v) for v in rng.integers(0, 10, n)]
    return batch


def _write_cifar(folder, sizes=(2, 3, 1, 2, 2), n_test=3):
    folder.mkdir(parents=True, exist_ok=True)
    batches = []
    for i, n in enumerate(sizes):
        batches.append(_cifar_batch(n, seed=i))
        (folder / f"data_batch_{i + 1}").write_bytes(pickle.dumps(batches[-1], protocol=2))
    test = _cifar_batch(n_test, seed=99)
    (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=2))
    return batches, test


def _cifar_expected(batch):
    """Pixel (n, i, j, c) is data[n, c * 1024 + i * 32 + j] / 255, by explicit loops."""
    d = batch[b"data"]
    out = np.zeros((d.shape[0], 32, 32, 3), np.float32)
    for n in range(d.shape[0]):
        for c in range(3):
            for i in range(32):
                for j in range(32):
                    out[n, i, j, c] = d[n, c * 1024 + i * 32 + j]
    return out / np.float32(255)


@pytest.mark.parametrize("subdir", [False, True])
def test_cifar_round_trip(tmp_path, subdir):
    batches, test = _write_cifar(tmp_path / "cifar-10-batches-py" if subdir else tmp_path)
    ds = data.load_dataset("cifar10", str(tmp_path))
    assert ds.name == "cifar10" and ds.input_shape == (32, 32, 3) and ds.num_classes == 10
    assert ds.train_x.shape == (10, 32, 32, 3) and ds.train_x.dtype == np.float32
    np.testing.assert_array_equal(ds.train_x, np.concatenate([_cifar_expected(b) for b in batches]))
    np.testing.assert_array_equal(ds.train_y, sum((b[b"labels"] for b in batches), []))
    np.testing.assert_array_equal(ds.test_x, _cifar_expected(test))
    np.testing.assert_array_equal(ds.test_y, test[b"labels"])
    assert ds.train_y.dtype == np.int32


def test_cifar_truncation_spans_batches(tmp_path):
    batches, _ = _write_cifar(tmp_path)
    ds = data.load_dataset("cifar10", str(tmp_path), max_train=4, max_test=2)
    np.testing.assert_array_equal(
        ds.train_x, np.concatenate([_cifar_expected(b) for b in batches[:2]])[:4])
    assert ds.test_x.shape[0] == 2


def test_cifar_str_keys_accepted(tmp_path):
    _write_cifar(tmp_path)
    batch = _cifar_batch(2, seed=5, keys=("data", "labels"))
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=4))
    ds = data.load_dataset("cifar10", str(tmp_path))
    np.testing.assert_array_equal(ds.test_y, batch["labels"])


@pytest.mark.parametrize("payload, message", [
    (lambda b: pickle.dumps({k: v for k, v in b.items() if k != b"labels"}, protocol=2),
     r"b'labels'"),
    (lambda b: pickle.dumps(b, protocol=2)[:-30], "not a readable"),
    (lambda b: pickle.dumps({**b, b"data": b[b"data"][:, :3000]}, protocol=2), r"\[n, 3072\]"),
    (lambda b: pickle.dumps({**b, b"labels": b[b"labels"][:-1]}, protocol=2), "to match"),
    (lambda b: pickle.dumps({**b, b"extra": os.getcwd}, protocol=2), "refusing"),
])
def test_cifar_bad_batch(tmp_path, payload, message):
    batches, _ = _write_cifar(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(payload(batches[2]))
    with pytest.raises(ValueError, match=message) as err:
        data.load_dataset("cifar10", str(tmp_path))
    assert "data_batch_3" in str(err.value)


def test_cifar_missing_file_and_dir(tmp_path):
    _write_cifar(tmp_path)
    os.remove(tmp_path / "data_batch_5")
    with pytest.raises(FileNotFoundError, match="data_batch_5"):
        data.load_dataset("cifar10", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"absent.*test_batch"):
        data.load_dataset("cifar10", str(tmp_path / "absent"))


def test_cifar_read_batch_layout(tmp_path):
    # A hand-made row: red plane all 1, green plane ramps along the row, blue pixel (2, 5) = 9.
    row = np.zeros(3072, np.uint8)
    row[:1024] = 1
    row[1024:2048] = np.tile(np.arange(32, dtype=np.uint8), 32)
    row[2048 + 2 * 32 + 5] = 9
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({b"data": row[None], b"labels": [7]}, protocol=2))
    images, labels = cifar.read_batch(str(path))
    assert images.shape == (1, 32, 32, 3) and labels.tolist() == [7]
    assert (images[0, :, :, 0] == 1).all()
    assert images[0, 3, 17, 1] == 17 and images[0, 30, 4, 1] == 4
    assert images[0, 2, 5, 2] == 9 and images[0, :, :, 2].sum() == 9


# ----------------------------------------------------------------------------- N-MNIST
def test_nmnist_event_decoding_bit_layout(tmp_path):
    events = [(0, 0, 0, 0), (33, 17, 1, 2**23 - 1), (5, 33, 1, 0x012345), (12, 3, 0, 0x7F0000)]
    path = tmp_path / "00001.bin"
    path.write_bytes(_event_bytes(events))
    # Hand check of one word: x=33, y=17, p=1, t=2^23-1 -> bytes 21 11 FF FF FF.
    assert path.read_bytes()[5:10] == bytes([0x21, 0x11, 0xFF, 0xFF, 0xFF])
    ev = data.read_events(str(path))
    np.testing.assert_array_equal(ev["x"], [e[0] for e in events])
    np.testing.assert_array_equal(ev["y"], [e[1] for e in events])
    np.testing.assert_array_equal(ev["p"], [e[2] for e in events])
    np.testing.assert_array_equal(ev["t"], [e[3] for e in events])


def test_events_to_frames_hand_example():
    # Span t0=0 .. t1=999 -> 2 windows of 500 us: t <= 499 in bin 0, t >= 500 in bin 1.
    ev = {"x": np.array([1, 1, 2, 3]), "y": np.array([4, 4, 5, 6]), "p": np.array([1, 1, 0, 1]),
          "t": np.array([0, 499, 500, 999])}
    counts = data.events_to_frames(ev, 2, binary=False)
    assert counts.shape == (2, 34, 34, 2) and counts.dtype == np.float32
    assert counts[0, 4, 1, 1] == 2 and counts[1, 5, 2, 0] == 1 and counts[1, 6, 3, 1] == 1
    assert counts.sum() == 4
    binary = data.events_to_frames(ev, 2)
    assert binary[0, 4, 1, 1] == 1 and binary.sum() == 3
    assert data.events_to_frames({k: v[:0] for k, v in ev.items()}, 3).shape == (3, 34, 34, 2)
    with pytest.raises(ValueError, match="x values"):
        data.events_to_frames({**ev, "x": np.array([1, 1, 2, 34])}, 2)


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("num_steps", [1, 3, 7])
def test_events_to_frames_matches_bruteforce(num_steps, binary):
    rng = np.random.default_rng(num_steps)
    n = 200
    events = list(zip(*(rng.integers(0, 34, n).tolist(), rng.integers(0, 34, n).tolist(),
                        rng.integers(0, 2, n).tolist(),
                        np.sort(rng.integers(1000, 300_000, n)).tolist())))
    ev = {k: np.array([e[i] for e in events]) for i, k in enumerate("xypt")}
    np.testing.assert_array_equal(data.events_to_frames(ev, num_steps, binary=binary),
                                  _frames_bruteforce(events, num_steps, binary))


def _write_nmnist(root, n_per_class, seed=0):
    """Writes random event files; returns {split: [(label, events), ...] in file order}."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, counts in n_per_class.items():
        out[split] = []
        for digit, count in counts.items():
            folder = root / split / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                m = int(rng.integers(1, 40))
                ev = list(zip(rng.integers(0, 34, m).tolist(), rng.integers(0, 34, m).tolist(),
                              rng.integers(0, 2, m).tolist(),
                              np.sort(rng.integers(0, 2**23, m)).tolist()))
                (folder / f"{i:05d}.bin").write_bytes(_event_bytes(ev))
                out[split].append((digit, i, ev))
    return out


def test_nmnist_load_round_trip_and_order(tmp_path):
    written = _write_nmnist(tmp_path, {"Train": {0: 2, 3: 3, 7: 1}, "Test": {1: 1, 9: 2}})
    ds = data.load_dataset("nmnist", str(tmp_path), num_steps=4)
    assert ds.name == "nmnist" and ds.is_temporal and ds.input_shape == (34, 34, 2)
    assert ds.train_x.shape == (6, 4, 34, 34, 2) and ds.train_x.dtype == np.float32
    assert ds.train_y.dtype == np.int32 and ds.num_classes == 10
    # Round-robin over classes, files sorted by name: (0,0) (3,0) (7,0) (0,1) (3,1) (3,2).
    expected_order = [(0, 0), (3, 0), (7, 0), (0, 1), (3, 1), (3, 2)]
    np.testing.assert_array_equal(ds.train_y, [d for d, _ in expected_order])
    lookup = {(d, i): ev for d, i, ev in written["Train"]}
    for n, key in enumerate(expected_order):
        np.testing.assert_array_equal(ds.train_x[n], _frames_bruteforce(lookup[key], 4, True))
    np.testing.assert_array_equal(ds.test_y, [1, 9, 9])
    assert set(np.unique(ds.train_x)) <= {0.0, 1.0}


def test_nmnist_truncation_reads_prefix_and_counts_mode(tmp_path):
    _write_nmnist(tmp_path, {"Train": {2: 2, 5: 2}, "Test": {4: 2}})
    # A corrupt file late in the order is not read when max_train stops before it.
    (tmp_path / "Train" / "5" / "00001.bin").write_bytes(b"\x00" * 7)
    ds = data.load_dataset("nmnist", str(tmp_path), num_steps=2, max_train=3, max_test=1)
    np.testing.assert_array_equal(ds.train_y, [2, 5, 2])
    assert ds.test_x.shape == (1, 2, 34, 34, 2)
    counts = data.load_nmnist(str(tmp_path), 2, max_train=3, binary=False)
    assert counts.train_x.max() >= 1 and counts.train_x.sum() >= ds.train_x.sum()


def test_nmnist_bad_files(tmp_path):
    _write_nmnist(tmp_path, {"Train": {0: 1, 1: 1}, "Test": {0: 1}})
    bad = tmp_path / "Train" / "1" / "00000.bin"
    bad.write_bytes(bad.read_bytes() + b"\x01\x02")
    with pytest.raises(ValueError, match=r"Train/1/00000.bin.*not a multiple of 5"):
        data.load_dataset("nmnist", str(tmp_path), num_steps=2)
    bad.write_bytes(_event_bytes([(40, 1, 0, 5)]))
    with pytest.raises(ValueError, match=r"00000.bin.*x address 40"):
        data.load_dataset("nmnist", str(tmp_path), num_steps=2)


def test_nmnist_missing_dirs(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent.*Train/<digit>/\*\.bin"):
        data.load_dataset("nmnist", str(tmp_path / "absent"), num_steps=2)
    _write_nmnist(tmp_path, {"Train": {0: 1}})
    with pytest.raises(FileNotFoundError, match="Test"):
        data.load_dataset("nmnist", str(tmp_path), num_steps=2)
    (tmp_path / "Test" / "3").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no \.bin files"):
        data.load_dataset("nmnist", str(tmp_path), num_steps=2)


# ----------------------------------------------------------------------------- registry
def test_load_dataset_argument_errors():
    known = r"digits, mnist, fashion_mnist, cifar10, nmnist"
    with pytest.raises(ValueError, match=rf"unknown dataset 'svhn'.*{known}"):
        data.load_dataset("svhn")
    with pytest.raises(ValueError, match="max_train"):
        data.load_dataset("digits", max_train=-1)
    with pytest.raises(ValueError, match="num_steps"):
        data.load_dataset("digits", num_steps=0)
    assert data.DATASET_NAMES == ("digits", "mnist", "fashion_mnist", "cifar10", "nmnist")


def test_dataset_rejects_inconsistent_arrays():
    x = np.zeros((3, 2, 2, 1), np.float32)
    with pytest.raises(ValueError, match="train_y"):
        data.Dataset("t", x, np.zeros(2, np.int32), x, np.zeros(3, np.int32), 10)
    ds = data.Dataset("t", x, np.zeros(3, np.int32), x[:1], np.zeros(1, np.int32), 10)
    assert ds.input_shape == (2, 2, 1) and not ds.is_temporal


# ----------------------------------------------------------------------------- batching
def test_iterate_batches_shuffled_epoch():
    x = np.arange(10)[:, None] * np.ones((1, 3))
    y = np.arange(10)
    batches = list(data.iterate_batches(x, y, 4, rng=np.random.default_rng(0)))
    assert [b[0].shape for b in batches] == [(4, 3), (4, 3)]
    seen = np.concatenate([b[1] for b in batches])
    np.testing.assert_array_equal(seen, np.random.default_rng(0).permutation(10)[:8])
    for bx, by in batches:
        np.testing.assert_array_equal(bx[:, 0], by)  # x and y stay paired
    later = list(data.iterate_batches(x, y, 4, rng=np.random.default_rng(0), start=1))
    assert len(later) == len(batches) - 1
    for (a, b), (c, d) in zip(later, batches[1:]):  # resuming mid-epoch: the same remaining batches
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    again = list(data.iterate_batches(x, y, 4, rng=np.random.default_rng(0)))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in again]), seen)


def test_iterate_batches_ordered_and_keep_last():
    y = np.arange(7)
    batches = list(data.iterate_batches(y, y, 3, rng=np.random.default_rng(0), shuffle=False,
                                        drop_last=False))
    assert [b[1].tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(data.iterate_batches(y, y, 8, rng=np.random.default_rng(0))) == []
    with pytest.raises(ValueError, match="batch_size"):
        next(data.iterate_batches(y, y, 0, rng=np.random.default_rng(0)))
    with pytest.raises(ValueError, match="samples"):
        next(data.iterate_batches(y, y[:3], 2, rng=np.random.default_rng(0)))


def test_byte_images_read_as_the_float32_copy():
    raw = np.arange(2 * 3 * 2 * 1, dtype=np.uint8).reshape(2, 3, 2, 1) * 21
    imgs = base.ByteImages(raw)
    full = raw.astype(np.float32) / np.float32(255.0)
    assert (imgs.shape, imgs.ndim, len(imgs), imgs.dtype) == ((2, 3, 2, 1), 4, 2, np.float32)
    np.testing.assert_array_equal(imgs[[1, 0]], full[[1, 0]])
    np.testing.assert_array_equal(imgs[1:], full[1:])
    np.testing.assert_array_equal(np.asarray(imgs), full)
    assert np.asarray(imgs, dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError, match="uint8 images, got float32"):
        base.ByteImages(full)

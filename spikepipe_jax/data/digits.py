"""Embedded default dataset: scikit-learn's bundled handwritten digits (no download).

``sklearn.datasets.load_digits`` ships 1,797 real 8x8 grey-scale digits (UCI "Optical
Recognition of Handwritten Digits", test part) inside the scikit-learn wheel. Pixels are
integers 0..16; they are scaled to ``[0, 1]`` by dividing by 16.

Fixed train/test split (independent of ``config.seed`` and of any global NumPy state):

1. ``rng = np.random.default_rng(SPLIT_SEED)`` with ``SPLIT_SEED = 0``.
2. For each class ``c = 0, 1, ..., 9`` in turn: ``idx_c`` = the indices of class ``c`` in
   ``load_digits()`` order (ascending); ``perm_c = rng.permutation(idx_c)``;
   ``n_test_c = round(TEST_FRACTION * len(idx_c))`` with ``TEST_FRACTION = 0.2``;
   ``perm_c[:n_test_c]`` go to test, the rest to train.
3. ``train = rng.permutation(concat(train parts))``, then
   ``test = rng.permutation(concat(test parts))`` (so any prefix mixes the classes).

This gives 1,438 training and 359 test images (per-class test counts 35..37, i.e. 20 %
of each class rounded to the nearest integer). ``max_train``/``max_test`` keep a prefix of
these fixed orders.
"""

from __future__ import annotations

import numpy as np

from spikepipe_jax.data import base

SPLIT_SEED = 0
TEST_FRACTION = 0.2
NUM_CLASSES = 10


def split_indices(labels: np.ndarray, *, seed: int = SPLIT_SEED,
                  test_fraction: float = TEST_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded train/test permutation of sample indices (see module docstring).

    Args:
      labels: ``int [N]`` class labels.
      seed: seed of the split's own ``np.random.default_rng``.
      test_fraction: fraction of each class sent to the test set (rounded per class).

    Returns:
      ``(train_idx, test_idx)``, disjoint ``int64`` index arrays covering ``0 .. N-1``.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must lie in [0, 1], got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for c in np.unique(labels):
        perm = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test_fraction * perm.size))
        test_parts.append(perm[:n_test])
        train_parts.append(perm[n_test:])
    train_idx = rng.permutation(np.concatenate(train_parts))
    test_idx = rng.permutation(np.concatenate(test_parts))
    return train_idx, test_idx


def load_digits(*, max_train: int = 0, max_test: int = 0) -> base.Dataset:
    """Loads the bundled scikit-learn digits with the fixed 80/20 split.

    Args:
      max_train: keep the first ``max_train`` training samples of the fixed order (0 = all).
      max_test: keep the first ``max_test`` test samples (0 = all).

    Returns:
      A :class:`Dataset` named ``"digits"`` with ``x`` of shape ``[N, 8, 8, 1]`` in ``[0, 1]``.
    """
    base.check_max(max_train, max_test)
    from sklearn import datasets as _sk_datasets  # lazy: sklearn is slow to import

    bunch = _sk_datasets.load_digits()
    images = (np.asarray(bunch.images, np.float32) / np.float32(16.0))[..., None]  # [N, 8, 8, 1]
    labels = np.asarray(bunch.target, np.int32)
    train_idx, test_idx = split_indices(labels)
    train_x, train_y = base.truncate(images[train_idx], labels[train_idx], max_train)
    test_x, test_y = base.truncate(images[test_idx], labels[test_idx], max_test)
    return base.Dataset(name="digits", train_x=train_x, train_y=train_y, test_x=test_x,
                        test_y=test_y, num_classes=NUM_CLASSES)

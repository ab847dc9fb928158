"""Name-based dataset lookup: ``load_dataset(config.data.name, config.data.dir, ...)``."""

from __future__ import annotations

import types

from spikepipe_jax.data import base, cifar, digits, idx, nmnist

# Immutable {name: loader(data_dir, num_steps, max_train, max_test) -> Dataset}.
_LOADERS = types.MappingProxyType({
    "digits": lambda d, t, a, b: digits.load_digits(max_train=a, max_test=b),
    "mnist": lambda d, t, a, b: idx.load_mnist(d, max_train=a, max_test=b),
    "fashion_mnist": lambda d, t, a, b: idx.load_fashion_mnist(d, max_train=a, max_test=b),
    "cifar10": lambda d, t, a, b: cifar.load_cifar10(d, max_train=a, max_test=b),
    "nmnist": lambda d, t, a, b: nmnist.load_nmnist(d, t, max_train=a, max_test=b),
})

DATASET_NAMES = tuple(_LOADERS)

# Loaders that take num_steps check it themselves; the others ignore it, so load_dataset checks
# it for them (a bad value then fails alike for every dataset). Every loader checks its limits.
_TAKES_NUM_STEPS = frozenset({"nmnist"})


def load_dataset(name: str, data_dir: str = "", *, num_steps: int = 1, max_train: int = 0,
                 max_test: int = 0) -> base.Dataset:
    """Loads a dataset by name. Nothing is downloaded: file datasets read ``data_dir``.

    Args:
      name: one of ``"digits"`` (embedded, scikit-learn), ``"mnist"``, ``"fashion_mnist"``,
        ``"cifar10"``, ``"nmnist"``.
      data_dir: folder with the dataset's files (ignored for ``"digits"``).
      num_steps: T, the number of time bins for event data (``"nmnist"``); ignored by the
        static-image datasets, whose time axis is made by the encoder.
      max_train: keep the first ``max_train`` training samples of the fixed order (0 = all).
      max_test: keep the first ``max_test`` test samples (0 = all).

    Returns:
      The :class:`~spikepipe_jax.data.base.Dataset`.

    Raises:
      ValueError: unknown name, bad limits, or malformed files.
      FileNotFoundError: missing data directory or files.
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASET_NAMES)}")
    if name not in _TAKES_NUM_STEPS:
        base.check_num_steps(num_steps)
    return _LOADERS[name](data_dir, num_steps, max_train, max_test)

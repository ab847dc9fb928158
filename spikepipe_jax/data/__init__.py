"""spikepipe_jax.data: embedded digits and local-file loaders.

Formats: scikit-learn digits (bundled), MNIST/Fashion-MNIST IDX, CIFAR-10 pickles, N-MNIST events.

Nothing is downloaded. ``load_dataset(name, data_dir, num_steps=..., max_train=..., max_test=...)``
returns a :class:`Dataset` of host NumPy arrays; ``iterate_batches`` slices them into batches.
"""

from spikepipe_jax.data.base import Dataset
from spikepipe_jax.data.cifar import load_cifar10
from spikepipe_jax.data.digits import load_digits
from spikepipe_jax.data.idx import load_fashion_mnist, load_mnist, read_idx
from spikepipe_jax.data.nmnist import events_to_frames, load_nmnist, read_events
from spikepipe_jax.data.pipeline import iterate_batches
from spikepipe_jax.data.registry import DATASET_NAMES, load_dataset

__all__ = [
    "DATASET_NAMES",
    "Dataset",
    "events_to_frames",
    "iterate_batches",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "load_nmnist",
    "read_events",
    "read_idx",
]

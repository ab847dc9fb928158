"""vgg_large: VGG-11 SNN for 3x32x32 CIFAR-10, padding 1, T=8, direct input coding.

64C3-MP2-128C3-MP2-256C3-256C3-MP2-512C3-512C3-MP2-512C3-512C3-MP2-FC10.
Command:  python -m scripts.train --config=configs/vgg_large.py --config.data.dir=/path/to/cifar-10-batches-py --workdir=runs/vgg_large
Expected: needs a GPU; roughly 0.8+ test accuracy after tens of epochs (not measured here).
"""
from configs import base


def _c(f):
    return dict(kind="conv", features=f, kernel=3, padding=1)


def get_config(arg: str = ""):
    mp = dict(kind="maxpool", window=2)
    layers = [_c(64), mp, _c(128), mp, _c(256), _c(256), mp, _c(512), _c(512), mp,
              _c(512), _c(512), mp, dict(kind="flatten"), dict(kind="dense", features=10)]
    c = base.make_config(layers=layers, input_shape=(32, 32, 3), num_steps=8, dataset="cifar10",
                         encoding="direct", batch_size=64, epochs=30, learning_rate=1e-3)
    return base.apply_smoke(c) if base.is_smoke(arg) else c

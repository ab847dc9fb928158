"""conv_medium: 1x28x28 -> 12C5 -> MP2 -> 64C5 -> MP2 -> FC10, T=25 (the snnTorch tutorial CSNN).

Command:  python -m scripts.train --config=configs/conv_medium.py --config.data.dir=/path/to/mnist --workdir=runs/conv_medium
          (Fashion-MNIST: --config.data.name=fashion_mnist; N-MNIST: --config.data.name=nmnist, input (34,34,2))
Expected: about 0.98 test accuracy on MNIST after 1 epoch (GPU recommended).
"""
from configs import base


def get_config(arg: str = ""):
    c = base.make_config(
        layers=[dict(kind="conv", features=12, kernel=5), dict(kind="maxpool", window=2),
                dict(kind="conv", features=64, kernel=5), dict(kind="maxpool", window=2),
                dict(kind="flatten"), dict(kind="dense", features=10)],
        input_shape=(28, 28, 1), num_steps=25, dataset="mnist", batch_size=128, epochs=1,
        learning_rate=1e-3, beta=0.5)
    return base.apply_smoke(c) if base.is_smoke(arg) else c

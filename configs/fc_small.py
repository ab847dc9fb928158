"""fc_small: 784-1000-10 fully connected SNN, T=25 (the snnTorch tutorial network), MNIST.

Command:  python -m scripts.train --config=configs/fc_small.py --config.data.dir=/path/to/mnist --workdir=runs/fc_small
Expected: about 0.97 test accuracy after 1 epoch (snnTorch tutorial 5 reports ~93-94 % after 1 epoch with SGD-like settings).
"""
from configs import base


def get_config(arg: str = ""):
    c = base.make_config(
        layers=[dict(kind="dense", features=1000), dict(kind="dense", features=10)],
        input_shape=(28, 28, 1), num_steps=25, dataset="mnist", batch_size=128, epochs=1,
        learning_rate=5e-4)
    return base.apply_smoke(c) if base.is_smoke(arg) else c

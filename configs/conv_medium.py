"""conv_medium: 1x28x28 -> 12C5 -> MP2 -> 64C5 -> MP2 -> FC10, T=25 (the snnTorch tutorial CSNN), Fashion-MNIST.

Command:  python -m scripts.train --config=configs/conv_medium.py --workdir=runs/conv_medium
          (reads Debian's dataset-fashion-mnist; MNIST: --config.data.name=mnist --config.data.dir=/path;
          N-MNIST: --config.data.name=nmnist, input (34,34,2))
Expected: about 0.87 test accuracy after the default 2 epochs (0.8678 measured, seed 0; README
          "Real data: Fashion-MNIST").

Training set-up: as fc_small (issue 14, benchmarks/README.md "Training stability"): the readout
is the output layer's membrane (non-spiking, reset "none", ``ce_mem``) and Adam's learning rate
warms up linearly over 100 steps, then decays by a cosine over the run. beta 0.9 and lr 3e-3
(not the snnTorch tutorial's beta 0.5): benchmarks/README.md "conv_medium on Fashion-MNIST:
choosing beta and the rate" has the probe runs behind them.
"""
from configs import base


def get_config(arg: str = ""):
    c = base.make_config(
        layers=[dict(kind="conv", features=12, kernel=5), dict(kind="maxpool", window=2),
                dict(kind="conv", features=64, kernel=5), dict(kind="maxpool", window=2),
                dict(kind="flatten"), dict(kind="dense", features=10)],
        input_shape=(28, 28, 1), num_steps=25, dataset="fashion_mnist", batch_size=128, epochs=2,
        learning_rate=3e-3, beta=0.9, loss="ce_mem", readout="membrane")
    c.train.warmup_steps = 100
    c.train.lr_schedule = "cosine"
    return base.apply_smoke(c) if base.is_smoke(arg) else c

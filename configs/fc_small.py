"""fc_small: 784-1000-10 fully connected SNN, T=25 (the snnTorch tutorial network), Fashion-MNIST.

Command:  python -m scripts.train --config=configs/fc_small.py --workdir=runs/fc_small
          (reads Debian's dataset-fashion-mnist; MNIST: --config.data.name=mnist --config.data.dir=/path)
Expected: about 0.86 test accuracy after the default 2 epochs (0.8664 measured, seed 0).

Training set-up (issue 14, benchmarks/README.md "Training stability"): the readout is the
output layer's membrane (non-spiking, reset "none", ``ce_mem``), as in snnTorch's tutorial 5,
and Adam's learning rate warms up linearly over 100 steps, then decays by a cosine. With a
spiking readout and spike-count loss the output layer stays nearly silent for hundreds of
steps and a one-step gradient delay made training collapse to chance.
"""
from configs import base


def get_config(arg: str = ""):
    c = base.make_config(
        layers=[dict(kind="dense", features=1000), dict(kind="dense", features=10)],
        input_shape=(28, 28, 1), num_steps=25, dataset="fashion_mnist", batch_size=128, epochs=2,
        learning_rate=5e-4, loss="ce_mem", readout="membrane")
    c.train.warmup_steps = 100
    c.train.lr_schedule = "cosine"
    return base.apply_smoke(c) if base.is_smoke(arg) else c

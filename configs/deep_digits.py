"""deep_digits: 8 dense spiking layers (64-128x7-10) on the embedded digits, for the delay study.

With one pipeline stage per layer, 1F1B gives layer l a gradient delay of L-1-l: the first
layer's gradients are 7 steps old. Deep SNNs need care to train at all: weights start at 3x the
PyTorch init bound (with gain 1 no spike reaches layer 3), beta=0.5, the arctan surrogate and a
non-spiking membrane readout (a spiking readout of this depth stays near chance).
Command:  python -m scripts.train --config=configs/deep_digits.py --workdir=runs/deep_digits
Expected: test accuracy about 0.96 without delays, in about 5 s on a 2-core CPU.
"""
from configs import base


def get_config(arg: str = ""):
    layers = [dict(kind="dense", features=128) for _ in range(7)] + [dict(kind="dense", features=10)]
    c = base.make_config(layers=layers, input_shape=(8, 8, 1), num_steps=8, batch_size=32,
                         epochs=10, learning_rate=2e-3, encoding="direct", beta=0.5,
                         readout="membrane", loss="ce_mem")
    c.model.init_gain = 3.0
    c.model.surrogate = "arctan"
    c.model.surrogate_scale = 2.0
    return base.apply_smoke(c) if base.is_smoke(arg) else c

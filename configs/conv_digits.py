"""conv_digits: 1x8x8 -> 16C3(p1) -> MP2 -> 32C3(p1) -> MP2 -> FC10 SNN on the embedded digits.

Command:  python -m scripts.train --config=configs/conv_digits.py --workdir=runs/conv_digits
Expected: test accuracy about 0.955 (0.95-0.96 over seeds) in about 5 s on a 2-core CPU (direct coding:
the first conv encodes).
"""
from configs import base


def get_config(arg: str = ""):
    c = base.make_config(
        layers=[dict(kind="conv", features=16, kernel=3, padding=1), dict(kind="maxpool", window=2),
                dict(kind="conv", features=32, kernel=3, padding=1), dict(kind="maxpool", window=2),
                dict(kind="flatten"), dict(kind="dense", features=10)],
        input_shape=(8, 8, 1), num_steps=8, batch_size=32, epochs=20, learning_rate=2e-3,
        encoding="direct")
    c.train.lr_schedule = "cosine"
    return base.apply_smoke(c) if base.is_smoke(arg) else c

"""fc_digits: 64-512-10 fully connected SNN on the embedded scikit-learn digits (the `make demo` default).

Command:  python -m scripts.train --config=configs/fc_digits.py --workdir=runs/fc_digits
Expected: test accuracy >= 0.95 in about a minute on a 2-core CPU (rate coding, T=16).
Smoke:    --config=configs/fc_digits.py:smoke
"""
from configs import base


def get_config(arg: str = ""):
    c = base.make_config(
        layers=[dict(kind="dense", features=512), dict(kind="dense", features=10)],
        input_shape=(8, 8, 1), num_steps=16, batch_size=32, epochs=25, learning_rate=2e-3)
    c.train.lr_schedule = "cosine"
    return base.apply_smoke(c) if base.is_smoke(arg) else c

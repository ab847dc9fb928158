"""Pieces shared by the benchmarks (no flags here: each benchmark module defines its own).

* :func:`net_spec`: the framework-neutral description of ``configs/<net>.py`` that every
  worker builds its network from (driver side: needs spikepipe_jax).
* :func:`snntorch_net`: that network in snnTorch 1.0 (``nn.Conv2d``/``nn.Linear`` +
  ``snn.Leaky``, looped over T as in its tutorials); peer side: needs only torch/snntorch.
* :func:`load_images`, :func:`write_synthetic_cifar`: the end-to-end benchmark's data, read
  with NumPy only (the peer side).
"""

from __future__ import annotations

import ast
import gzip
import json
import math
import os
import pickle
from typing import Any, Optional


def _literal(v: str) -> Any:
    try:
        return ast.literal_eval(v)
    except (ValueError, SyntaxError):
        return v


# the settings the peers implement, passed to scripts.train explicitly whatever the config says
FIXED = {"data.encoding": "rate", "model.reset": "subtract", "model.surrogate": "fast_sigmoid",
         "model.learn_beta": False, "train.optimizer": "adam", "train.weight_decay": 0.0}
SETUPS = ("config", "pinned")
# The pinned set-up of the step benchmark and the old end-to-end comparisons: a spiking readout,
# the spike-count loss and a constant learning rate without warm-up, whatever the config says.
PINNED = {"model.readout": "count", "train.loss": "ce_count", "train.lr_schedule": "constant",
          "train.warmup_steps": 0}
PEER_LOSSES = {"count": "ce_count", "membrane": "ce_mem"}  # readout -> the loss the peers implement


def net_spec(net: str, batch: int, num_steps: int = 0, overrides: Optional[dict] = None,
             setup: str = "pinned") -> dict:
    """The framework-neutral description of ``configs/<net>.py`` (``overrides``: ``"model.x"``
    / ``"data.x"`` / ``"train.x"`` keys with string or literal values).

    ``setup="pinned"`` (the step benchmark's): spiking readout, ``ce_count``, constant rate
    without warm-up (:data:`PINNED`), whatever the config says; ``"config"``: the config's
    own readout, loss and schedule (``count`` + ``ce_count`` or ``membrane`` + ``ce_mem``;
    ``constant`` or ``cosine``, with its warm-up), which the snnTorch peer implements too.
    """
    from spikepipe_jax import spec as spec_lib
    from spikepipe_jax.experiments import load_config

    if setup not in SETUPS:
        raise ValueError(f"unknown setup {setup!r}; expected one of {SETUPS}")
    config = load_config(net)
    for k, v in {**(PINNED if setup == "pinned" else {}), **(overrides or {})}.items():
        if k.startswith(("model.", "data.", "train.")):
            section, field = k.split(".", 1)
            config[section][field] = _literal(v) if isinstance(v, str) else v
    if num_steps:
        config.model.num_steps = num_steps
    config.train.batch_size = batch
    infos = spec_lib.parse_spec(config.model.layers, config.model.input_shape)
    readout, loss = config.model.readout, config.train.loss
    if PEER_LOSSES.get(readout) != loss:
        raise ValueError(f"{net}: the peers implement {PEER_LOSSES} (readout -> loss); got readout "
                         f"{readout!r} with loss {loss!r}")
    if config.model.reset != "subtract" or config.model.surrogate != "fast_sigmoid":
        raise ValueError(f"{net}: the peers are built with subtract reset and the fast-sigmoid surrogate")
    if config.train.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"{net}: the peers implement the constant and cosine schedules, "
                         f"not {config.train.lr_schedule!r}")
    return {"net": net, "batch": batch, "num_steps": int(config.model.num_steps),
            "input_shape": [int(s) for s in config.model.input_shape],
            "layers": [dict(l) for l in config.model.layers],
            "weight_layers": [{"kind": i.kind, "in_shape": list(i.in_shape), "features": i.features,
                               "kernel": i.kernel, "stride": i.stride, "padding": i.padding,
                               "pools": [[p.kind, p.window] for p in i.pools],
                               "out_shape": list(i.out_shape)} for i in infos],
            "num_classes": int(infos[-1].features), "beta": float(config.model.beta),
            "threshold": float(config.model.threshold), "slope": float(config.model.surrogate_scale),
            "learning_rate": float(config.train.learning_rate),
            "init_gain": float(config.model.get("init_gain", 1.0)),
            "readout": readout, "loss": loss, "lr_schedule": config.train.lr_schedule,
            "warmup_steps": int(config.train.warmup_steps),
            "config": json.loads(json.dumps(config.to_dict(), default=list))}


def lr_factor(step: int, *, schedule: str, warmup_steps: int, total_steps: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based) over the peak rate: the schedule of
    ``spikepipe_jax.train.optimizer.make_base_optimizer`` in plain Python (for torch's
    ``LambdaLR``; ``tests/test_benchmark_smoke.py`` compares the two).

    Step ``k < w`` (warm-up): ``(k + 1) / w``; then ``constant``: 1, or ``cosine`` over
    ``D = max(1, total - w)`` steps to 5 %: ``0.95 * (1 + cos(pi * min(k - w, D) / D)) / 2 + 0.05``.
    """
    w = warmup_steps
    if step < w:
        return (step + 1) / w
    if schedule == "constant":
        return 1.0
    d = max(1, total_steps - w)
    return 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(step - w, d) / d)) + 0.05


def snntorch_net(spec: dict):
    """The network of ``spec`` in snnTorch: a ``torch.nn.Module`` mapping ``[T, B, C, H, W]``
    input spikes to the output layer's spikes and membranes (``[T, B, classes]`` each),
    PyTorch's default init scaled by ``spec["init_gain"]`` (spikepipe_jax's ``model.init_gain``).
    With ``spec["readout"] == "membrane"`` the output layer is a non-spiking
    ``snn.Leaky(reset_mechanism="none")`` (its membrane is the readout, as spikepipe_jax's)."""
    import snntorch as snn
    import torch
    from snntorch import surrogate
    from torch import nn

    grad = surrogate.fast_sigmoid(slope=spec["slope"])

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.ops, self.pools, self.lifs = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
            self.flatten = []
            last = len(spec["weight_layers"]) - 1
            for i, wl in enumerate(spec["weight_layers"]):
                if wl["kind"] == "dense":
                    fan_in = 1
                    for s in wl["in_shape"]:
                        fan_in *= s
                    self.ops.append(nn.Linear(fan_in, wl["features"]))
                    self.flatten.append(True)
                else:
                    self.ops.append(nn.Conv2d(wl["in_shape"][-1], wl["features"], wl["kernel"],
                                              stride=wl["stride"], padding=wl["padding"]))
                    self.flatten.append(False)
                self.pools.append(nn.Sequential(*[
                    (nn.MaxPool2d(w) if kind == "maxpool" else nn.AvgPool2d(w)) for kind, w in wl["pools"]]))
                reset = "none" if i == last and spec.get("readout", "count") == "membrane" else "subtract"
                self.lifs.append(snn.Leaky(beta=spec["beta"], threshold=spec["threshold"], spike_grad=grad,
                                           reset_mechanism=reset))
            gain = float(spec.get("init_gain", 1.0))
            if gain != 1.0:
                with torch.no_grad():
                    for p in self.ops.parameters():
                        p.mul_(gain)

        def forward(self, x):  # x: [T, B, C, H, W]
            mems = [lif.init_leaky() for lif in self.lifs]
            spks, out_mems = [], []
            for t in range(x.shape[0]):
                cur = x[t]
                for i, (op, pool, lif) in enumerate(zip(self.ops, self.pools, self.lifs)):
                    if self.flatten[i]:
                        cur = cur.flatten(1)
                    cur, mems[i] = lif(pool(op(cur)), mems[i])
                spks.append(cur)
                out_mems.append(mems[-1])
            return torch.stack(spks), torch.stack(out_mems)

    return Net()


def read_idx(path: str):
    """An IDX array (``.gz`` or plain), big-endian header as in the MNIST files."""
    import numpy as np

    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_idx(data_dir: str, stem: str) -> str:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if os.path.isfile(os.path.join(data_dir, name)):
            return os.path.join(data_dir, name)
    raise FileNotFoundError(f"{stem} not found in {data_dir}")


def load_images(spec: dict):
    """``(train_x, train_y, test_x, test_y)``: float32 NCHW in [0, 1] (as spikepipe_jax scales them)."""
    import numpy as np

    d = spec["data"]
    if d["kind"] == "idx":
        out = []
        for split in ("train", "t10k"):
            x = read_idx(_find_idx(d["dir"], f"{split}-images-idx3-ubyte"))
            y = read_idx(_find_idx(d["dir"], f"{split}-labels-idx1-ubyte"))
            out += [x[:, None], y]
    else:  # CIFAR-10 pickles: rows of 1024 R, 1024 G, 1024 B values
        def batches(names):
            xs, ys = [], []
            for n in names:
                with open(os.path.join(d["dir"], n), "rb") as f:
                    b = pickle.load(f, encoding="bytes")
                xs.append(np.asarray(b[b"data"], np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(b[b"labels"]))
            return np.concatenate(xs), np.concatenate(ys)
        out = [*batches([f"data_batch_{i}" for i in range(1, 6)]), *batches(["test_batch"])]
    (xtr, ytr, xte, yte), (ntr, nte) = out, (d["max_train"], d["max_test"])
    xtr, ytr = (xtr[:ntr], ytr[:ntr]) if ntr else (xtr, ytr)
    xte, yte = (xte[:nte], yte[:nte]) if nte else (xte, yte)
    scale = np.float32(1.0 / 255.0)
    return (xtr.astype(np.float32) * scale, ytr.astype(np.int64), xte.astype(np.float32) * scale,
            yte.astype(np.int64))


def write_synthetic_cifar(folder: str, num_train: int, num_test: int, seed: int = 0) -> None:
    """CIFAR-10-format pickles of uniform random images and labels (``data_batch_1`` holds all
    ``num_train`` training images, ``data_batch_2..5`` one each, ``test_batch`` ``num_test``)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    sizes = {"data_batch_1": num_train, **{f"data_batch_{i}": 1 for i in range(2, 6)}, "test_batch": num_test}
    for name, n in sizes.items():
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, n)]}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(batch, f)

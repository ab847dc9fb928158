"""Pieces shared by the benchmarks (no flags here: each benchmark module defines its own).

* :func:`net_spec`: the framework-neutral description of ``configs/<net>.py`` that every
  worker builds its network from (driver side: needs spikepipe_jax).
* :func:`snntorch_net`: that network in snnTorch 1.0 (``nn.Conv2d``/``nn.Linear`` +
  ``snn.Leaky``, looped over T as in its tutorials); peer side: needs only torch/snntorch.
"""

from __future__ import annotations

import ast
import json
from typing import Any, Optional


def _literal(v: str) -> Any:
    try:
        return ast.literal_eval(v)
    except (ValueError, SyntaxError):
        return v


def net_spec(net: str, batch: int, num_steps: int = 0, overrides: Optional[dict] = None) -> dict:
    """The framework-neutral description of ``configs/<net>.py`` (``overrides``: ``"model.x"``
    / ``"data.x"`` / ``"train.x"`` keys with string or literal values)."""
    from spikepipe_jax import spec as spec_lib
    from spikepipe_jax.experiments import load_config

    config = load_config(net)
    for k, v in (overrides or {}).items():
        if k.startswith(("model.", "data.", "train.")):
            section, field = k.split(".", 1)
            config[section][field] = _literal(v) if isinstance(v, str) else v
    if num_steps:
        config.model.num_steps = num_steps
    config.train.batch_size = batch
    infos = spec_lib.parse_spec(config.model.layers, config.model.input_shape)
    if config.train.loss != "ce_count" or config.model.readout != "count":
        raise ValueError(f"{net}: the benchmark runs the ce_count loss on a spiking readout")
    if config.model.reset != "subtract" or config.model.surrogate != "fast_sigmoid":
        raise ValueError(f"{net}: the peers are built with subtract reset and the fast-sigmoid surrogate")
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
            "config": json.loads(json.dumps(config.to_dict(), default=list))}


def snntorch_net(spec: dict):
    """The network of ``spec`` in snnTorch: a ``torch.nn.Module`` mapping ``[T, B, C, H, W]``
    input spikes to the output layer's spikes ``[T, B, classes]``, PyTorch's default init
    scaled by ``spec["init_gain"]`` (spikepipe_jax's ``model.init_gain``)."""
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
            for wl in spec["weight_layers"]:
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
                self.lifs.append(snn.Leaky(beta=spec["beta"], threshold=spec["threshold"], spike_grad=grad))
            gain = float(spec.get("init_gain", 1.0))
            if gain != 1.0:
                with torch.no_grad():
                    for p in self.ops.parameters():
                        p.mul_(gain)

        def forward(self, x):  # x: [T, B, C, H, W]
            mems = [lif.init_leaky() for lif in self.lifs]
            out = []
            for t in range(x.shape[0]):
                cur = x[t]
                for i, (op, pool, lif) in enumerate(zip(self.ops, self.pools, self.lifs)):
                    if self.flatten[i]:
                        cur = cur.flatten(1)
                    cur, mems[i] = lif(pool(op(cur)), mems[i])
                out.append(cur)
            return torch.stack(out)

    return Net()

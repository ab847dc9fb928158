"""Semantic parity with snnTorch: one batch, the same weights and input spikes, loss and gradients.

Command::

    .venv/bin/python -m benchmarks.parity --nets=fc_small,conv_medium --setup=pinned \\
        --peer_python=/tmp/benchvenv/bin/python [--params=runs/x/params.msgpack]

For each net: spikepipe_jax builds the network of ``benchmarks.common.net_spec`` (``--setup``:
the config's readout/loss or the pinned ``ce_count`` one), takes its parameters (the seed's
initialisation, or a trained ``params.msgpack`` with ``--params``), rate-encodes the first
``--batch`` Fashion-MNIST training images and computes the loss, logits and parameter
gradients of the user's default path (im2col convs, native kernels where they run). The peer
(``--peer_python``) builds :func:`benchmarks.common.snntorch_net` of the same spec, copies the
weights in (HWIO -> OIHW; a dense layer after a conv gets its rows from NHWC to NCHW flatten
order), runs the *same* spike tensor and the same loss, and reports the largest relative
difference and the cosine of each gradient. Equal values (up to float32 summation order, and
the odd spike that flips where a membrane sits within rounding of the threshold) mean the two
frameworks train the same model; accuracy differences between their end-to-end runs then come
from their random draws (initialisation, encoder, data order), not from the semantics.

Output: one JSON line per net: ``loss`` (both), ``logits_max_abs_diff``, and per weight layer
``w_rel``/``b_rel`` (max |difference| / max |snnTorch gradient|) and ``w_cos``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from absl import app, flags

flags.DEFINE_list("nets", ["fc_small", "conv_medium"], "Network configs (28x28x1 nets).")
flags.DEFINE_enum("setup", "config", ["config", "pinned"], "As benchmarks.end_to_end --setup.")
flags.DEFINE_string("params", "", "A params.msgpack of a run of that net (default: the seed's initialisation).")
flags.DEFINE_string("data_dir", "", "Fashion-MNIST IDX files (default: the loader's search path).")
flags.DEFINE_integer("batch", 128, "Images in the batch.")
flags.DEFINE_string("peer_python", "", "Python with torch + snntorch (default $SPIKEPIPE_PEER_PYTHON).")
flags.DEFINE_string("peer_npz", "", "(internal) run the snnTorch side on this file.")
FLAGS = flags.FLAGS

_PREFIX = "@@parity "


def ours(net: str, setup: str, params_path: str, data_dir: str, batch: int, out_npz: str) -> dict:
    """spikepipe_jax's side: writes weights, spikes, loss, logits and gradients to ``out_npz``."""
    import jax
    import jax.numpy as jnp
    import ml_collections
    import numpy as np

    from benchmarks import common
    from spikepipe_jax import data as data_lib
    from spikepipe_jax import snn
    from spikepipe_jax.train import checkpoint, losses

    spec = common.net_spec(net, batch, 0, common.FIXED, setup=setup)
    cfg = ml_collections.ConfigDict(spec["config"])
    model = snn.model_from_config(cfg.model)
    ds = data_lib.load_dataset("fashion_mnist", data_dir, num_steps=spec["num_steps"], max_train=batch, max_test=0)
    params = snn.init_params(jax.random.key(int(cfg.seed)), model)
    if params_path:
        params = checkpoint.restore(params_path, params)
    y = jnp.asarray(ds.train_y[:batch])
    xt = snn.encode("rate", jnp.asarray(ds.train_x[:batch]), spec["num_steps"], jax.random.key(5))

    def loss_fn(p):
        out = snn.apply(p, model, xt)
        return losses.compute_loss(cfg.train.loss, out, y, spec["num_classes"]), out

    (loss, out), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
    arrays = {"xt": np.asarray(xt), "y": np.asarray(y), "loss": np.asarray(loss), "logits": np.asarray(out.logits)}
    for i, info in enumerate(model.infos):
        for k in ("w", "b"):
            arrays[f"p{i}_{k}"] = np.asarray(params[info.name][k])
            arrays[f"g{i}_{k}"] = np.asarray(grads[info.name][k])
    np.savez(out_npz, **arrays)
    return {k: v for k, v in spec.items() if k != "config"}


def _flatten_order(spec: dict, i: int):
    """The ``[H, W, C]`` a dense layer's input is flattened from, or None."""
    prev = spec["weight_layers"][i - 1]["out_shape"] if i else spec["weight_layers"][0]["in_shape"]
    return prev if spec["weight_layers"][i]["kind"] == "dense" and len(prev) == 3 else None


def peer_main(npz_path: str) -> None:
    """snnTorch's side: the same weights and spikes; prints the comparison (``_PREFIX`` + JSON)."""
    import numpy as np
    import torch
    from snntorch import functional as SF

    from benchmarks import common

    with open(npz_path + ".json") as f:
        spec = json.load(f)
    d = np.load(npz_path)
    net = common.snntorch_net(spec)
    with torch.no_grad():
        for i, op in enumerate(net.ops):
            w = d[f"p{i}_w"]
            hwc = _flatten_order(spec, i)
            if hwc:  # rows in NHWC flatten order (ours) -> NCHW (torch)
                w = w.reshape(*hwc, -1).transpose(2, 0, 1, 3).reshape(-1, w.shape[-1])
            w = w.T if w.ndim == 2 else w.transpose(3, 2, 0, 1)
            op.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            op.bias.copy_(torch.from_numpy(d[f"p{i}_b"]))
    xt = torch.from_numpy(d["xt"]).permute(0, 1, 4, 2, 3).contiguous()  # [T, B, H, W, C] -> [T, B, C, H, W]
    y = torch.from_numpy(d["y"]).long()
    spk, mem = net(xt)
    if spec["readout"] == "membrane":
        loss = torch.nn.functional.cross_entropy(mem.flatten(0, 1), y.repeat(mem.shape[0]))
        logits = mem.mean(0)
    else:
        loss = SF.ce_count_loss()(spk, y)
        logits = spk.sum(0)
    loss.backward()
    res = {"loss_snntorch": float(loss), "loss_spikepipe_jax": float(d["loss"]),
           "logits_max_abs_diff": float(np.abs(logits.detach().numpy() - d["logits"]).max()), "layers": []}
    for i, op in enumerate(net.ops):
        gw = op.weight.grad.numpy()
        gw = gw.T if gw.ndim == 2 else gw.transpose(2, 3, 1, 0)
        hwc = _flatten_order(spec, i)
        if hwc:
            c_, h_, w_ = hwc[2], hwc[0], hwc[1]
            gw = gw.reshape(c_, h_, w_, -1).transpose(1, 2, 0, 3).reshape(-1, gw.shape[-1])
        gj, gb, gbj = d[f"g{i}_w"], op.bias.grad.numpy(), d[f"g{i}_b"]
        res["layers"].append({
            "w_rel": float(np.abs(gw - gj).max() / (np.abs(gw).max() + 1e-30)),
            "b_rel": float(np.abs(gb - gbj).max() / (np.abs(gb).max() + 1e-30)),
            "w_cos": float((gw * gj).sum() / (np.linalg.norm(gw) * np.linalg.norm(gj) + 1e-30))})
    print(_PREFIX + json.dumps(res), flush=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
    if FLAGS.peer_npz:
        peer_main(FLAGS.peer_npz)
        return
    from spikepipe_jax.experiments import exit_with_error

    peer = FLAGS.peer_python or os.environ.get("SPIKEPIPE_PEER_PYTHON", "") or sys.executable
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as tmp:
        for net in FLAGS.nets:
            path = os.path.join(tmp, f"{net}.npz")
            try:
                spec = ours(net, FLAGS.setup, FLAGS.params, FLAGS.data_dir, FLAGS.batch, path)
            except (ValueError, FileNotFoundError) as e:
                exit_with_error(e)
            with open(path + ".json", "w") as f:
                json.dump(spec, f)
            proc = subprocess.run([peer, "-m", "benchmarks.parity", f"--peer_npz={path}"], cwd=repo,
                                  capture_output=True, text=True)
            lines = [l[len(_PREFIX):] for l in proc.stdout.splitlines() if l.startswith(_PREFIX)]
            rec = {"net": net, "setup": FLAGS.setup, "params": FLAGS.params or "init"}
            rec.update(json.loads(lines[-1]) if lines else {"skipped": (proc.stderr or proc.stdout)[-500:]})
            print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    app.run(main)

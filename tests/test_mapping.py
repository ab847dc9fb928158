"""Tests of the SNN-training-to-systolic-array mapping (tasks F_l, B_l, W_l)."""

import importlib
import math
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spikepipe_jax import spec
from spikepipe_jax.hardware import mapping, systolic

KEYS = {"name", "layer", "kind", "cycles", "gemm_cycles", "vector_cycles", "macs", "gemm",
        "bytes_in", "bytes_out", "bytes_weights", "batch", "num_steps"}
NETS = ("fc_small", "conv_medium", "vgg_large")


def _infos(net):
    c = importlib.import_module(f"configs.{net}").get_config()
    return spec.parse_spec(c.model.layers, c.model.input_shape)


def _flops(fn, *args):
    ca = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0]
    return ca["flops"]


@pytest.mark.parametrize("net", NETS)
def test_task_order_keys_and_plain_types(net):
    infos = _infos(net)
    tasks = mapping.training_tasks(infos, batch=2, num_steps=3, rows=16, cols=8, dataflow="ws")
    n = len(infos)
    names = [f"F{l}" for l in range(n)] + [f"B{l}" for l in reversed(range(n))] + \
        [f"W{l}" for l in range(n)]
    assert [t["name"] for t in tasks] == names
    for t in tasks:
        assert set(t) == KEYS
        assert t["kind"] == t["name"][0] and t["layer"] == int(t["name"][1:])
        for key in KEYS - {"name", "kind", "gemm"}:
            assert type(t[key]) is int and t[key] >= 0, (t["name"], key)
        assert t["cycles"] == t["gemm_cycles"] + t["vector_cycles"]
        if t["gemm"] is None:
            assert t["name"] == "B0" and t["gemm_cycles"] == 0 and t["macs"] == 0
        else:
            assert set(t["gemm"]) == {"m", "k", "n"}
            assert all(type(v) is int for v in t["gemm"].values())
            g = t["gemm"]
            assert t["gemm_cycles"] == systolic.gemm_cost_exact(g["m"], g["k"], g["n"], 16, 8,
                                                                "ws").cycles
            assert 0 < t["macs"] <= g["m"] * g["k"] * g["n"]
    assert tasks[n]["vector_cycles"] > 0 and tasks[-1]["vector_cycles"] == 0


@pytest.mark.parametrize("net", NETS)
def test_macs_equal_xla_cost_analysis(net):
    """Per-task GEMM MACs = XLA's FLOPs / 2 for the layer op, its input VJP and weight VJP."""
    from spikepipe_jax.snn.layers import apply_op

    infos = _infos(net)
    batch, steps = 1, 2
    tasks = {t["name"]: t for t in mapping.training_tasks(
        infos, batch=batch, num_steps=steps, rows=8, cols=8, dataflow="os")}
    n = batch * steps
    for info in infos:
        wshape = ((info.fan_in, info.features) if info.kind == "dense"
                  else (info.kernel, info.kernel, info.in_shape[-1], info.features))
        w = jnp.ones(wshape)
        b = jnp.zeros((info.features,))
        x = jnp.ones((n, *info.in_shape))
        ct = jnp.ones((n, *info.op_shape))
        l = info.index

        def fwd(w, x):
            return apply_op({"w": w, "b": b}, x, info)

        def dx(w, x, ct):
            return jax.vjp(lambda x_: fwd(w, x_), x)[1](ct)[0]

        def dw(w, x, ct):
            return jax.vjp(lambda w_: fwd(w_, x), w)[1](ct)[0]

        assert _flops(fwd, w, x) == 2 * tasks[f"F{l}"]["macs"], (net, l)
        assert _flops(dw, w, x, ct) == 2 * tasks[f"W{l}"]["macs"], (net, l)
        if l > 0:
            assert _flops(dx, w, x, ct) == 2 * tasks[f"B{l}"]["macs"], (net, l)


def test_gemm_shapes_by_hand_dense_and_conv():
    infos = spec.parse_spec([dict(kind="conv", features=6, kernel=3, padding=1),
                             dict(kind="maxpool", window=2), dict(kind="dense", features=4)],
                            (8, 8, 2))
    g0 = mapping.layer_gemms(infos[0], batch=3, num_steps=5)
    assert g0 == {"F": (15 * 64, 18, 6), "B": None, "W": (18, 15 * 64, 6)}
    g1 = mapping.layer_gemms(infos[1], batch=3, num_steps=5)
    assert g1 == {"F": (15, 96, 4), "B": (15, 4, 96), "W": (96, 15, 4)}
    # Transposed conv of a second conv layer: M = input pixels, K = k*k*F, N = C.
    two = spec.parse_spec([dict(kind="conv", features=4, kernel=3),
                           dict(kind="conv", features=7, kernel=3, stride=2, padding=1)], (9, 9, 1))
    assert mapping.layer_gemms(two[1], 2, 2)["B"] == (4 * 7 * 7, 9 * 7, 4)


def _im2col(x, k):
    """[N, H, W, C] -> [N*Ho*Wo, k*k*C] (stride 1, no padding), rows (n, oh, ow), cols (a, b, c)."""
    n, h, w, c = x.shape
    ho, wo = h - k + 1, w - k + 1
    cols = np.stack([x[:, a:a + ho, b:b + wo, :] for a in range(k) for b in range(k)], axis=3)
    return cols.reshape(n * ho * wo, k * k * c)


@pytest.mark.parametrize("h,c,f,k,s,p", [(6, 2, 3, 3, 1, 0), (7, 2, 3, 3, 2, 1), (8, 3, 2, 4, 2, 2)])
def test_backward_gemms_compute_the_real_gradients(h, c, f, k, s, p):
    """The B and W GEMMs, run as plain matrix products of their stated shapes, give jax's VJPs."""
    from spikepipe_jax.snn.layers import apply_op

    info = spec.parse_spec([dict(kind="conv", features=c, kernel=1),
                            dict(kind="conv", features=f, kernel=k, stride=s, padding=p)],
                           (h, h, 1))[1]
    n = 2
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, h, h, c)).astype(np.float32)
    w = rng.normal(size=(k, k, c, f)).astype(np.float32)
    b = np.zeros(f, np.float32)
    dy = rng.normal(size=(n, *info.op_shape)).astype(np.float32)
    _, vjp = jax.vjp(lambda w_, x_: apply_op({"w": w_, "b": b}, x_, info), w, x)
    dw_ref, dx_ref = (np.asarray(v) for v in vjp(dy))
    shapes = mapping.layer_gemms(info, batch=n, num_steps=1)
    ho = info.op_shape[0]
    # B: transposed conv = stride-1 conv of the dilated, (k-1-p)-padded dY with the flipped,
    # channel-swapped kernel.
    dil = np.zeros((n, (ho - 1) * s + 1, (ho - 1) * s + 1, f))
    dil[:, ::s, ::s] = dy
    lo = k - 1 - p
    hi = h + k - 1 - lo - dil.shape[1]
    padded = np.pad(dil, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
    lhs = _im2col(padded, k)
    rhs = w[::-1, ::-1].transpose(0, 1, 3, 2).reshape(k * k * f, c)
    assert (lhs.shape[0], lhs.shape[1], rhs.shape[1]) == shapes["B"]
    np.testing.assert_allclose((lhs @ rhs).reshape(n, h, h, c), dx_ref, rtol=1e-4, atol=1e-4)
    # W: dW = im2col(x_padded)^T @ dY over (batch, output pixels).
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    cols = _im2col(xp, k).reshape(n, h + 2 * p - k + 1, h + 2 * p - k + 1, k * k * c)
    cols = cols[:, ::s, ::s][:, :ho, :ho].reshape(n * ho * ho, k * k * c)
    lhs_w, rhs_w = cols.T, dy.reshape(n * ho * ho, f)
    assert (lhs_w.shape[0], lhs_w.shape[1], rhs_w.shape[1]) == shapes["W"]
    np.testing.assert_allclose((lhs_w @ rhs_w).reshape(k, k, c, f), dw_ref, rtol=1e-4, atol=1e-4)


def test_vector_cycles_and_bytes_by_hand():
    # conv 6x6x1 -> 4 filters k=3 (op 4x4x4) -> maxpool 2 (2x2x4 = 16 neurons) -> dense 3.
    infos = spec.parse_spec([dict(kind="conv", features=4, kernel=3),
                             dict(kind="maxpool", window=2), dict(kind="dense", features=3)],
                            (6, 6, 1))
    bsz, t, lanes = 2, 3, 5
    tasks = {x["name"]: x for x in mapping.training_tasks(
        infos, batch=bsz, num_steps=t, rows=4, cols=4, dataflow="os", vector_lanes=lanes,
        spike_bits=1, float_bits=16)}
    lif0 = t * math.ceil(bsz * 16 / lanes)         # 3 * 7
    pool0 = math.ceil(bsz * t * 64 / lanes)        # 384 / 5 -> 77
    assert tasks["F0"]["vector_cycles"] == lif0 + pool0
    assert tasks["B0"]["vector_cycles"] == lif0 + pool0
    assert tasks["F1"]["vector_cycles"] == t * math.ceil(bsz * 3 / lanes)
    assert tasks["W0"]["vector_cycles"] == tasks["W1"]["vector_cycles"] == 0
    bt = bsz * t
    # F0: input spikes 36/sample at 1 bit; out: spikes (1 bit) + membranes (16 bit) of 16
    # neurons + 1-bit maxpool mask of the 64 op outputs; weights 9*4 + 4 at 16 bit.
    assert tasks["F0"]["bytes_in"] == math.ceil(bt * 36 / 8)
    assert tasks["F0"]["bytes_out"] == bt * 16 // 8 + bt * 16 * 2 + bt * 64 // 8
    assert tasks["F0"]["bytes_weights"] == (36 + 4) * 2
    # B1: reads dL/dS and membranes (3 floats each) and W (16*3); writes dL/dI (3) and dL/dS_0 (16).
    assert tasks["B1"]["bytes_in"] == 2 * bt * 3 * 2
    assert tasks["B1"]["bytes_weights"] == 16 * 3 * 2
    assert tasks["B1"]["bytes_out"] == bt * 3 * 2 + bt * 16 * 2
    # B0: no input gradient, no weights.
    assert tasks["B0"]["bytes_weights"] == 0 and tasks["B0"]["bytes_out"] == bt * 64 * 2
    # W1: input spikes (16, 1 bit) and dL/dI (3 floats); writes dW and db.
    assert tasks["W1"]["bytes_in"] == math.ceil(bt * 16 / 8) + bt * 3 * 2
    assert tasks["W1"]["bytes_out"] == (16 * 3 + 3) * 2 and tasks["W1"]["bytes_weights"] == 0


def test_spike_bits_and_lanes_knobs():
    infos = spec.parse_spec([dict(kind="dense", features=10), dict(kind="dense", features=5)], (40,))
    kw = dict(batch=4, num_steps=2, rows=8, cols=8, dataflow="is")
    one = mapping.training_tasks(infos, spike_bits=1, **kw)
    byte = mapping.training_tasks(infos, spike_bits=8, **kw)
    assert byte[1]["bytes_in"] == 8 * one[1]["bytes_in"] == 8 * 8 * 10 // 8
    auto = mapping.training_tasks(infos, vector_lanes=0, **kw)
    explicit = mapping.training_tasks(infos, vector_lanes=8, **kw)
    assert auto == explicit
    narrow = mapping.training_tasks(infos, vector_lanes=1, **kw)
    assert narrow[0]["vector_cycles"] == 2 * 4 * 10


def test_from_config_matches_and_overrides():
    cfg = importlib.import_module("configs.conv_medium").get_config("smoke")
    infos = spec.parse_spec(cfg.model.layers, cfg.model.input_shape)
    hw = cfg.hardware
    want = mapping.training_tasks(infos, batch=cfg.train.batch_size, num_steps=cfg.model.num_steps,
                                  rows=hw.rows, cols=hw.cols, dataflow=hw.dataflow,
                                  spike_bits=hw.spike_bits, float_bits=hw.float_bits,
                                  vector_lanes=hw.vector_lanes)
    assert mapping.training_tasks_from_config(cfg) == want
    over = mapping.training_tasks_from_config(cfg, rows=16, dataflow="os", batch=3)
    assert over == mapping.training_tasks(infos, batch=3, num_steps=cfg.model.num_steps, rows=16,
                                          cols=hw.cols, dataflow="os", spike_bits=hw.spike_bits,
                                          float_bits=hw.float_bits, vector_lanes=hw.vector_lanes)
    vgg = importlib.import_module("configs.vgg_large").get_config("smoke")  # direct coding
    tasks = mapping.training_tasks_from_config(vgg)
    n = vgg.train.batch_size * vgg.model.num_steps
    assert tasks[0]["bytes_in"] == n * 32 * 32 * 3 * vgg.hardware.float_bits // 8
    with pytest.raises(ValueError, match="override"):
        mapping.training_tasks_from_config(cfg, rowz=4)


@pytest.mark.parametrize("kw,word", [
    (dict(batch=0), "batch"), (dict(num_steps=-2), "num_steps"), (dict(rows=0), "rows"),
    (dict(cols=2.5), "cols"), (dict(dataflow="rs"), "dataflow"), (dict(spike_bits=0), "spike_bits"),
    (dict(float_bits=None), "float_bits"), (dict(vector_lanes=-1), "vector_lanes"),
])
def test_bad_input(kw, word):
    infos = spec.parse_spec([dict(kind="dense", features=3)], (4,))
    args = dict(batch=2, num_steps=2, rows=4, cols=4, dataflow="os")
    args.update(kw)
    with pytest.raises(ValueError, match=word):
        mapping.training_tasks(infos, **args)
    with pytest.raises(ValueError, match="infos"):
        mapping.training_tasks((), batch=2, num_steps=2, rows=4, cols=4, dataflow="os")


def test_hardware_does_not_import_training_code():
    code = ("import sys, spikepipe_jax.hardware; "
            "bad = [m for m in sys.modules if m.startswith(('spikepipe_jax.snn', 'spikepipe_jax.train'))]; "
            "assert not bad, bad")
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[1]))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)

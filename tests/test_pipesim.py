"""Pipeline simulator (per-layer weight versions) against an independent NumPy reference:
weight versions in Python lists and BPTT written out by hand (no JAX autodiff, no snn.apply)."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from spikepipe_jax import snn, train
from spikepipe_jax.train import pipesim


T = 3


def _setup(delays, seed=0):
    c = importlib.import_module("configs.fc_digits").get_config("smoke")
    c.model.layers = [dict(kind="dense", features=24), dict(kind="dense", features=16), dict(kind="dense", features=10)]
    c.model.num_steps = T
    c.model.readout = "membrane"
    c.model.init_gain = 4.0  # enough spikes in every layer for the versions to matter
    model = snn.model_from_config(c.model)
    params = snn.init_params(jax.random.key(seed), model)
    rng = np.random.default_rng(seed)
    batches = [(jnp.asarray(rng.uniform(size=(8, 8, 8, 1)).astype(np.float32)),
                jnp.asarray(rng.integers(0, 10, 8).astype(np.int32))) for _ in range(7)]
    return model, params, batches


SEED = 2  # every hidden membrane of these runs stays >= 2e-4 from the threshold (asserted)
MARGIN = 1e-4  # float32 GEMMs in another order move a membrane by ~1e-6: no spike can flip
TOL = 2e-4  # update error allowed against the reference (float32 weights ~100x the updates)


def _numpy_reference(model, params, batches, delays, mode, lr=0.05):
    """Independent NumPy pipelined training: per-layer weight versions kept in Python lists,
    forward in float32 (the order of ``lif_step``, so the spikes are the simulator's), BPTT by
    hand in float64 (the reverse-time adjoint loop), plain SGD.

    Step ``k`` runs layer ``l``'s forward with version ``k - d_l`` (the initial weights before
    0), takes its weight gradient there, propagates the input gradient through the forward
    version (``stash``) or the current weights (``no_stash``), and applies the gradient to the
    current weights. Returns ``(final params, smallest |membrane - threshold| of the hidden
    layers)``.
    """
    assert (model.reset, model.readout, model.surrogate) == ("subtract", "membrane", "fast_sigmoid")
    assert all(info.kind == "dense" and not info.pools for info in model.infos)
    beta, thr, slope = np.float32(model.beta), np.float32(model.threshold), model.surrogate_scale
    names = [info.name for info in model.infos]
    current = {n: {k: np.asarray(v, np.float32) for k, v in params[n].items()} for n in names}
    versions = {n: [current[n]] for n in names}
    margin = np.inf
    for k, (x, y) in enumerate(batches):
        x, y = np.asarray(x, np.float32), np.asarray(y)
        fwd = {n: versions[n][max(0, k - d)] for n, d in zip(names, delays)}
        bwd = fwd if mode == "stash" else current
        b = x.shape[0]
        inp = np.broadcast_to(x.reshape(1, b, -1), (T, b, x[0].size))  # direct encoding
        inputs, mems = [], []
        for l, n in enumerate(names):
            output = l == len(names) - 1
            inputs.append(inp)
            cur = (inp.reshape(T * b, -1) @ fwd[n]["w"]).reshape(T, b, -1)
            m, us = np.zeros(cur.shape[1:], np.float32), []
            for t in range(T):
                if output:  # membrane readout: no reset
                    m = beta * m + (cur[t] + fwd[n]["b"])
                else:  # subtract reset from the previous membrane (no gradient through it)
                    m = (beta * m + (cur[t] + fwd[n]["b"])) - (m > thr).astype(np.float32) * thr
                us.append(m)
            mems.append(np.stack(us))
            if not output:
                margin = min(margin, float(np.min(np.abs(mems[-1] - thr))))
                inp = (mems[-1] > thr).astype(np.float32)
        # ce_mem: mean over T and B of the cross-entropy of the output membrane at each step
        u_out = mems[-1].astype(np.float64)
        prob = np.exp(u_out - u_out.max(-1, keepdims=True))
        prob /= prob.sum(-1, keepdims=True)
        g_local = (prob - np.eye(u_out.shape[-1])[y][None]) / (T * b)
        grads = {}
        for l in reversed(range(len(names))):
            n = names[l]
            if l < len(names) - 1:  # dL/dU = dL/dS * fast_sigmoid'(U - threshold)
                g_local = g_spk * (1.0 / (slope * np.abs(mems[l].astype(np.float64) - thr) + 1.0) ** 2)
            delta, carry = np.zeros_like(g_local), np.zeros(g_local.shape[1:])
            for t in reversed(range(T)):  # U[t] = beta U[t-1] + I[t] - ...: dL/dI[t] = delta[t]
                carry = g_local[t] + float(beta) * carry
                delta[t] = carry
            grads[n] = {"w": np.einsum("tbi,tbo->io", inputs[l].astype(np.float64), delta),
                        "b": delta.sum((0, 1))}
            g_spk = delta @ bwd[n]["w"].astype(np.float64).T
        current = {n: {k: current[n][k] - np.float32(lr) * grads[n][k].astype(np.float32) for k in current[n]}
                   for n in names}
        for n in names:
            versions[n].append(current[n])
    return current, margin


def _simulate(model, params, batches, delays, mode, lr=0.05):
    tx = optax.sgd(lr)
    step = jax.jit(pipesim.make_train_step(
        model, tx, delays=delays, mode=mode,
        loss_fn_from_output=lambda out, y: train.compute_loss("ce_mem", out, y, 10),
        encode_fn=lambda x, k: snn.encode("direct", x, T)))
    state = pipesim.init_state(params, tx.init(params), delays, [i.name for i in model.infos])
    for x, y in batches:
        state, _ = step(state, x, y, jax.random.key(0))
    return state.params


def _update_error(got, want, start):
    """Largest error of the total update ``got - start`` against ``want - start``, relative to
    the largest update of each leaf (the weights themselves are ~100x larger than the updates)."""
    errs = []
    for n in want:
        for k in want[n]:
            d_want = np.asarray(want[n][k], np.float64) - np.asarray(start[n][k], np.float64)
            d_got = np.asarray(got[n][k], np.float64) - np.asarray(start[n][k], np.float64)
            errs.append(float(np.max(np.abs(d_got - d_want)) / np.max(np.abs(d_want))))
    return max(errs)


@pytest.mark.parametrize("mode", ["stash", "no_stash"])
@pytest.mark.parametrize("delays", [(0, 0, 0), (2, 1, 0), (3, 0, 2)])
def test_simulator_matches_numpy_reference(mode, delays):
    model, params, batches = _setup(delays, SEED)
    ref, margin = _numpy_reference(model, params, batches, delays, mode)
    assert margin > MARGIN
    assert _update_error(_simulate(model, params, batches, delays, mode), ref, params) < TOL


@pytest.mark.parametrize("delays", [(2, 1, 0), (3, 0, 2)])
def test_simulator_tells_stash_from_no_stash(delays):
    """With delays the two modes train differently, and the simulator in each mode is far
    (more than 10x the tolerance) from the reference of the other: the matching test above
    could fail."""
    model, params, batches = _setup(delays, SEED)
    sims = {m: _simulate(model, params, batches, delays, m) for m in ("stash", "no_stash")}
    refs = {m: _numpy_reference(model, params, batches, delays, m)[0] for m in ("stash", "no_stash")}
    assert _update_error(sims["stash"], sims["no_stash"], params) > 10 * TOL
    assert _update_error(sims["stash"], refs["no_stash"], params) > 10 * TOL
    assert _update_error(sims["no_stash"], refs["stash"], params) > 10 * TOL


def test_zero_delay_simulator_equals_plain_training():
    model, params, batches = _setup((0, 0, 0))
    tx = optax.sgd(0.05)
    plain = train.TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))
    plain_step = jax.jit(train.make_train_step(model, tx, loss_name="ce_mem", encoding="direct", num_steps=T,
                                               num_classes=10))
    sim = pipesim.init_state(params, tx.init(params), (0, 0, 0), [i.name for i in model.infos])
    sim_step = jax.jit(pipesim.make_train_step(
        model, tx, delays=(0, 0, 0), mode="no_stash",
        loss_fn_from_output=lambda out, y: train.compute_loss("ce_mem", out, y, 10),
        encode_fn=lambda x, k: snn.encode("direct", x, T)))
    for x, y in batches:
        plain, _ = plain_step(plain, x, y, jax.random.key(0))
        sim, _ = sim_step(sim, x, y, jax.random.key(0))
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(sim.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_bad_mode_and_delay_count():
    model, _, _ = _setup((0, 0, 0))
    with pytest.raises(ValueError, match="unknown pipeline simulation mode"):
        pipesim.make_train_step(model, optax.sgd(1.0), delays=(0, 0, 0), mode="magic",
                                loss_fn_from_output=None, encode_fn=None)
    with pytest.raises(ValueError, match="2 delays for 3 layers"):
        pipesim.make_train_step(model, optax.sgd(1.0), delays=(0, 0), mode="stash",
                                loss_fn_from_output=None, encode_fn=None)

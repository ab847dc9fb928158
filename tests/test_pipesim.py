"""Pipeline simulator (per-layer weight versions) against an independent step-by-step reference."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from spikepipe_jax import snn, train
from spikepipe_jax.train import pipesim


def _setup(delays, seed=0):
    c = importlib.import_module("configs.fc_digits").get_config("smoke")
    c.model.layers = [dict(kind="dense", features=24), dict(kind="dense", features=16), dict(kind="dense", features=10)]
    c.model.num_steps = 3
    c.model.readout = "membrane"
    c.model.init_gain = 4.0  # enough spikes in every layer for the versions to matter
    model = snn.model_from_config(c.model)
    params = snn.init_params(jax.random.key(seed), model)
    rng = np.random.default_rng(seed)
    batches = [(jnp.asarray(rng.uniform(size=(8, 8, 8, 1)).astype(np.float32)),
                jnp.asarray(rng.integers(0, 10, 8).astype(np.int32))) for _ in range(7)]
    return model, params, batches


def _loss(model, params, x, y, synapse=None):
    xt = snn.encode("direct", x, 3)
    out = snn.apply(params, model, xt, synapse=synapse)
    return train.compute_loss("ce_mem", out, y, 10)


def _reference(model, params, batches, delays, mode, lr=0.05):
    """Python bookkeeping of every weight version; dense layers with a stop-gradient identity
    that gives value x@w_fwd, d/dx = w_bwd, d/dw_fwd = x."""
    names = [i.name for i in model.infos]

    def loss(fwd, bwd, x, y):
        def synapse(p, xx, info):
            wb = jax.lax.stop_gradient(bwd[info.name]["w"])
            flat = xx.reshape(xx.shape[0], -1)
            return (flat @ wb + jax.lax.stop_gradient(flat) @ p["w"]
                    - jax.lax.stop_gradient(flat @ wb))  # bias: added by snn.apply
        return _loss(model, fwd, x, y, synapse)

    grad = jax.jit(jax.grad(loss))
    versions = {n: [params[n]] for n in names}
    current = params
    for k, (x, y) in enumerate(batches):
        fwd = {n: versions[n][max(0, k - d)] for n, d in zip(names, delays)}
        g = grad(fwd, fwd if mode == "stash" else current, x, y)
        current = jax.tree.map(lambda w, gw: w - lr * gw, current, g)
        for n in names:
            versions[n].append(current[n])
    return current


@pytest.mark.parametrize("mode", ["stash", "no_stash"])
@pytest.mark.parametrize("delays", [(0, 0, 0), (2, 1, 0), (3, 0, 2)])
def test_simulator_matches_reference(mode, delays):
    model, params, batches = _setup(delays)
    tx = optax.sgd(0.05)
    step = jax.jit(pipesim.make_train_step(
        model, tx, delays=delays, mode=mode,
        loss_fn_from_output=lambda out, y: train.compute_loss("ce_mem", out, y, 10),
        encode_fn=lambda x, k: snn.encode("direct", x, 3)))
    state = train.TrainState(params, pipesim.init_state(params, tx.init(params), delays,
                                                        [i.name for i in model.infos]), jnp.zeros((), jnp.int32))
    for x, y in batches:
        state, m = step(state, x, y, jax.random.key(0))
    ref = _reference(model, params, batches, delays, mode)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)


def test_zero_delay_simulator_equals_plain_training():
    model, params, batches = _setup((0, 0, 0))
    tx = optax.sgd(0.05)
    plain = train.TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))
    plain_step = jax.jit(train.make_train_step(model, tx, loss_name="ce_mem", encoding="direct", num_steps=3,
                                               num_classes=10))
    sim = train.TrainState(params, pipesim.init_state(params, tx.init(params), (0, 0, 0),
                                                      [i.name for i in model.infos]), jnp.zeros((), jnp.int32))
    sim_step = jax.jit(pipesim.make_train_step(
        model, tx, delays=(0, 0, 0), mode="no_stash",
        loss_fn_from_output=lambda out, y: train.compute_loss("ce_mem", out, y, 10),
        encode_fn=lambda x, k: snn.encode("direct", x, 3)))
    for x, y in batches:
        plain, _ = plain_step(plain, x, y, jax.random.key(0))
        sim, _ = sim_step(sim, x, y, jax.random.key(0))
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(sim.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_stash_and_no_stash_differ_with_delays():
    model, params, batches = _setup((2, 1, 0))
    a = _reference(model, params, batches, (2, 1, 0), "stash")
    b = _reference(model, params, batches, (2, 1, 0), "no_stash")
    diff = float(np.abs(np.asarray(a["layer_0"]["w"]) - np.asarray(b["layer_0"]["w"])).max())
    moved = float(np.abs(np.asarray(a["layer_0"]["w"]) - np.asarray(params["layer_0"]["w"])).max())
    assert diff > 1e-3 * moved > 0


def test_bad_mode_and_delay_count():
    model, _, _ = _setup((0, 0, 0))
    with pytest.raises(ValueError, match="unknown pipeline simulation mode"):
        pipesim.make_train_step(model, optax.sgd(1.0), delays=(0, 0, 0), mode="magic",
                                loss_fn_from_output=None, encode_fn=None)
    with pytest.raises(ValueError, match="2 delays for 3 layers"):
        pipesim.make_train_step(model, optax.sgd(1.0), delays=(0, 0), mode="stash",
                                loss_fn_from_output=None, encode_fn=None)

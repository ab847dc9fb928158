"""Tests for spikepipe_jax.train.delays (the delayed-gradient optax transform)."""

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from spikepipe_jax.train import delays as delays_lib
from spikepipe_jax.train import optimizer as optimizer_lib

SHAPES = {"layer_0": {"w": (3, 4), "b": (4,)},
          "layer_1": {"w": (4, 2), "b": (2,)},
          "layer_2": {"w": (2,)}}
LAYERS = tuple(SHAPES)


def _params(rng):
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s), jnp.float32), SHAPES,
                        is_leaf=lambda x: isinstance(x, tuple))


def _grads(rng, n):
    return [_params(rng) for _ in range(n)]


def _leaf_paths():
    return [(layer, name) for layer in LAYERS for name in SHAPES[layer]]


def _make_step(tx, counter):
    def step(grads, state, params):
        counter.append(1)  # runs only while tracing
        return tx.update(grads, state, params)
    return jax.jit(step)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sgd_emits_negated_stale_gradient_per_leaf(seed):
    rng = np.random.default_rng(seed)
    layer_d = {layer: int(rng.integers(0, 5)) for layer in LAYERS}
    params = _params(rng)
    n = 11
    gs = _grads(rng, n)
    tx = optimizer_lib.make_delayed_optimizer(optax.sgd(1.0), layer_d)
    state = tx.init(params)
    traces = []
    step = _make_step(tx, traces)
    for k in range(n):
        updates, state = step(gs[k], state, params)
        for layer, name in _leaf_paths():
            d = layer_d[layer]
            got = np.asarray(updates[layer][name])
            want = (-np.asarray(gs[k - d][layer][name]) if k >= d
                    else np.zeros(SHAPES[layer][name], np.float32))
            np.testing.assert_array_equal(got, want, err_msg=f"step {k} {layer}/{name} d={d}")
    assert len(traces) == 1, f"retraced {len(traces)} times"
    assert int(state[0].count) == n


@pytest.mark.parametrize("d", [1, 3])
def test_int_delay_applies_to_every_leaf(d):
    rng = np.random.default_rng(10 + d)
    params = _params(rng)
    gs = _grads(rng, 6)
    tx = delays_lib.delayed_gradients(d)
    state = tx.init(params)
    for k in range(6):
        out, state = tx.update(gs[k], state)
        for layer, name in _leaf_paths():
            want = gs[k - d][layer][name] if k >= d else np.zeros(SHAPES[layer][name])
            np.testing.assert_array_equal(np.asarray(out[layer][name]), want)


def test_finer_prefix_delays_and_broadcast():
    params = _params(np.random.default_rng(0))
    spec = {"layer_0": {"w": 2, "b": 1}, "layer_1": 3, "layer_2": 0}
    resolved = delays_lib.broadcast_delays(spec, params)
    assert resolved == {"layer_0": {"w": 2, "b": 1}, "layer_1": {"w": 3, "b": 3},
                        "layer_2": {"w": 0}}
    assert delays_lib.layer_delays([2, 0, 5]) == {"layer_0": 2, "layer_1": 0, "layer_2": 5}


@pytest.mark.parametrize("make_opt", [lambda: optax.sgd(0.1), lambda: optax.adam(1e-2)],
                         ids=["sgd", "adam"])
@pytest.mark.parametrize("position", ["before", "after"])
@pytest.mark.parametrize("zero", [0, {"layer_0": 0, "layer_1": 0, "layer_2": 0}],
                         ids=["int", "tree"])
def test_delay_zero_is_bitwise_plain_optimizer(make_opt, position, zero):
    rng = np.random.default_rng(3)
    gs = _grads(rng, 6)
    p_plain = p_delay = _params(rng)
    plain, delayed = make_opt(), optimizer_lib.make_delayed_optimizer(make_opt(), zero, position)
    s_plain, s_delay = plain.init(p_plain), delayed.init(p_delay)
    up_plain, up_delay = jax.jit(plain.update), jax.jit(delayed.update)
    for g in gs:
        u1, s_plain = up_plain(g, s_plain, p_plain)
        u2, s_delay = up_delay(g, s_delay, p_delay)
        p_plain = optax.apply_updates(p_plain, u1)
        p_delay = optax.apply_updates(p_delay, u2)
        jax.tree.map(np.testing.assert_array_equal, u1, u2)
    jax.tree.map(np.testing.assert_array_equal, p_plain, p_delay)


def test_zero_delay_leaves_match_plain_adam_when_others_are_delayed():
    rng = np.random.default_rng(4)
    gs = _grads(rng, 5)
    params = _params(rng)
    layer_d = {"layer_0": 2, "layer_1": 0, "layer_2": 1}
    plain = optax.adam(1e-2)
    delayed = optimizer_lib.make_delayed_optimizer(optax.adam(1e-2), layer_d)
    s1, s2 = plain.init(params), delayed.init(params)
    for g in gs:
        u1, s1 = plain.update(g, s1, params)
        u2, s2 = delayed.update(g, s2, params)
        for name in SHAPES["layer_1"]:
            np.testing.assert_array_equal(u1["layer_1"][name], u2["layer_1"][name])
    assert not np.array_equal(u1["layer_0"]["w"], u2["layer_0"]["w"])


def test_buffer_memory_is_delay_times_leaf_size():
    params = _params(np.random.default_rng(0))
    layer_d = {"layer_0": 3, "layer_1": 0, "layer_2": 5}
    state = delays_lib.delayed_gradients(layer_d).init(params)
    for layer, name in _leaf_paths():
        buf = state.buffer[layer][name]
        size = int(np.prod(SHAPES[layer][name]))
        assert buf.size == layer_d[layer] * size, (layer, name)
        assert buf.shape == (layer_d[layer],) + SHAPES[layer][name]
        assert buf.dtype == jnp.float32
    total = sum(x.size for x in jax.tree.leaves(state.buffer))
    assert total == 3 * (12 + 4) + 0 * (8 + 2) + 5 * 2


def _np_adam(grads, lr=0.05, b1=0.9, b2=0.999, eps=1e-8):
    """Hand-rolled NumPy Adam (float64); returns the list of updates."""
    m = np.zeros_like(grads[0]); v = np.zeros_like(grads[0]); out = []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        out.append(-lr * mhat / (np.sqrt(vhat) + eps))
    return out


@pytest.mark.parametrize("d", [1, 3])
def test_position_before_vs_after_with_adam(d):
    rng = np.random.default_rng(20 + d)
    n = 9
    gs = [rng.normal(size=(5,)) for _ in range(n)]
    zeros = np.zeros(5)
    stale = [gs[k - d] if k >= d else zeros for k in range(n)]
    want = {"before": _np_adam(stale),  # Adam's moments see the stale (and leading zero) grads
            "after": [zeros] * d + _np_adam(gs)[:n - d]}  # fresh Adam updates, applied late
    got = {}
    for position in ("before", "after"):
        tx = optimizer_lib.make_delayed_optimizer(optax.adam(0.05), d, position)
        p = {"w": jnp.zeros(5, jnp.float32)}
        state = tx.init(p)
        got[position] = []
        for g in gs:
            u, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, p)
            got[position].append(np.asarray(u["w"]))
        np.testing.assert_allclose(np.stack(got[position]), np.stack(want[position]),
                                   rtol=2e-5, atol=1e-7, err_msg=position)
    diff = np.abs(np.stack(got["before"]) - np.stack(got["after"])).max()
    assert diff > 1e-3, "before and after should differ with Adam"


def test_jit_matches_eager_and_chain_composes():
    rng = np.random.default_rng(5)
    params = _params(rng)
    gs = _grads(rng, 5)
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     delays_lib.delayed_gradients({"layer_0": 2, "layer_1": 1, "layer_2": 0}),
                     optax.adam(1e-2))
    s_e = s_j = tx.init(params)
    up = jax.jit(tx.update)
    for g in gs:
        u_e, s_e = tx.update(g, s_e, params)
        u_j, s_j = up(g, s_j, params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8),
                     u_e, u_j)


def test_state_checkpoint_roundtrip_resumes_identically():
    rng = np.random.default_rng(6)
    params = _params(rng)
    gs = _grads(rng, 8)
    tx = optimizer_lib.make_delayed_optimizer(optax.adam(1e-2),
                                           {"layer_0": 3, "layer_1": 0, "layer_2": 2})
    state = tx.init(params)
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(state))
    ref_state, outs_ref = state, []
    for g in gs:
        u, ref_state = tx.update(g, ref_state, params)
        outs_ref.append(u)
    for g in gs[:4]:
        _, state = tx.update(g, state, params)
    restored = flax.serialization.from_bytes(tx.init(params), flax.serialization.to_bytes(state))
    for k, g in enumerate(gs[4:], start=4):
        u, restored = tx.update(g, restored, params)
        jax.tree.map(np.testing.assert_array_equal, u, outs_ref[k])


@pytest.mark.parametrize("bad, match", [
    (-1, "-1"), ({"layer_0": 2, "layer_1": -3, "layer_2": 0}, "layer_1"),
    (1.5, "1.5"), (True, "True"), (jnp.asarray(2), "Array|array"), ("3", "'3'"),
    ({}, "no integer leaves"),
])
def test_bad_delay_values_raise_at_construction(bad, match):
    with pytest.raises(ValueError, match=match):
        delays_lib.delayed_gradients(bad)


@pytest.mark.parametrize("bad", [{"layer_0": 1}, [1, 2, 3], {"layer_0": 1, "layer_1": 0,
                                                             "layer_9": 2}])
def test_mismatched_delay_structure_raises_at_init(bad):
    params = _params(np.random.default_rng(0))
    tx = delays_lib.delayed_gradients(bad)  # structure is unknown until init
    with pytest.raises(ValueError, match="do not match the params"):
        tx.init(params)


def test_other_bad_inputs():
    params = _params(np.random.default_rng(0))
    with pytest.raises(ValueError, match="position"):
        optimizer_lib.make_delayed_optimizer(optax.sgd(1.0), 1, position="middle")
    with pytest.raises(ValueError, match="layer 1"):
        delays_lib.layer_delays([1, -2])
    assert delays_lib.delayed_gradients(np.int64(2)).init(params).buffer["layer_2"]["w"].shape \
        == (2, 2)
    # A state built for other delays is rejected with a message, not an XLA shape error.
    state = delays_lib.delayed_gradients(1).init(params)
    with pytest.raises(ValueError, match="buffer of shape"):
        delays_lib.delayed_gradients(2).update(params, state)


def test_make_training_optimizer_returns_gradient_point_function():
    from spikepipe_jax.train import mitigation
    params = _params(np.random.default_rng(0))
    tx, pfg = optimizer_lib.make_training_optimizer(optax.sgd(0.1), 2)
    assert pfg is None
    assert isinstance(tx.init(params), tuple)
    tx, pfg = optimizer_lib.make_training_optimizer(optax.sgd(0.1), 2, "weight_prediction",
                                                 horizon_scale=0.5)
    assert pfg is mitigation.params_for_gradient
    with pytest.raises(ValueError, match="unknown mitigation"):
        optimizer_lib.make_training_optimizer(optax.sgd(0.1), 2, "bogus")

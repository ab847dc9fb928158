"""Tests for spikepipe_jax.train.mitigation (stale-gradient mitigations)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from spikepipe_jax.train import mitigation as mit
from spikepipe_jax.train import optimizer as optimizer_lib

SHAPES = {"layer_0": (3, 4), "layer_1": (4,), "layer_2": (2,)}
LAYER_D = {"layer_0": 3, "layer_1": 1, "layer_2": 0}


def _tree(rng):
    return {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in SHAPES.items()}


def _np(tree):
    return {k: np.asarray(v, np.float64) for k, v in tree.items()}


# ------------------------------------------------------------------ unit tests vs NumPy maths


@pytest.mark.parametrize("power, anneal", [(1.0, 0), (0.5, 0), (1.0, 4)])
def test_scale_by_delay_matches_formula(power, anneal):
    rng = np.random.default_rng(0)
    tx = mit.scale_by_delay(LAYER_D, power, anneal)
    params = _tree(rng)
    state = tx.init(params)
    for k in range(7):
        u = _tree(rng)
        out, state = jax.jit(tx.update)(u, state)
        a = 1.0 - min(k / anneal, 1.0) if anneal else 1.0
        for name, d in LAYER_D.items():
            want = np.asarray(u[name]) * (1.0 + d) ** (-power * a)
            np.testing.assert_allclose(out[name], want, rtol=1e-6, err_msg=f"{name} k={k}")
        np.testing.assert_array_equal(out["layer_2"], u["layer_2"])  # d = 0: untouched


def _np_dc(gs, ws, d, lam, mode="stash", momentum=0.95, eps=1e-7):
    """NumPy DC-ASGD reference for one leaf: list of compensated gradients per step."""
    beta = d / (d + 1.0)
    ema, ms, out = ws[0].copy(), np.zeros_like(gs[0]), []
    for k in range(len(gs)):
        g_old = gs[k - d] if k >= d else np.zeros_like(gs[0])
        if mode == "ema":
            ema = beta * ema + (1 - beta) * ws[k]
            w_old = ema
        else:
            w_old = ws[k - d] if k >= d else np.zeros_like(ws[0])
        lam_k = lam
        if mode == "adaptive":
            ms = momentum * ms + (1 - momentum) * g_old ** 2
            lam_k = lam / np.sqrt(ms + eps)
        out.append(g_old + lam_k * g_old * g_old * (ws[k] - w_old))
    return out


@pytest.mark.parametrize("mode", ["stash", "ema", "adaptive"])
def test_delay_compensated_gradients_match_numpy(mode):
    rng = np.random.default_rng(1)
    n, lam = 9, 0.7
    gs = [_tree(rng) for _ in range(n)]
    ws = [_tree(rng) for _ in range(n)]  # the params passed at each step (arbitrary here)
    tx = mit.delay_compensated_gradients(LAYER_D, lam, adaptive=mode == "adaptive",
                                         stale_weights="ema" if mode == "ema" else "stash")
    state = tx.init(ws[0])
    update = jax.jit(tx.update)
    outs = []
    for k in range(n):
        out, state = update(gs[k], state, ws[k])
        outs.append(out)
    for name, d in LAYER_D.items():
        want = _np_dc([_np(g)[name] for g in gs], [_np(w)[name] for w in ws], d, lam, mode)
        for k in range(n):
            if d == 0:
                np.testing.assert_array_equal(outs[k][name], gs[k][name])
            else:
                np.testing.assert_allclose(outs[k][name], want[k], rtol=2e-5, atol=1e-6,
                                           err_msg=f"{mode} {name} k={k}")


def test_dc_state_memory_layout():
    params = _tree(np.random.default_rng(0))
    st = mit.delay_compensated_gradients(LAYER_D, 1.0).init(params)
    for name, d in LAYER_D.items():
        assert st.grad_buffer[name].shape == (d,) + SHAPES[name]
        assert st.weight_buffer[name].shape == (d,) + SHAPES[name]
    assert st.weight_ema == () and st.mean_square == ()
    st = mit.delay_compensated_gradients(LAYER_D, 1.0, stale_weights="ema",
                                         adaptive=True).init(params)
    assert st.weight_buffer == ()
    for name, d in LAYER_D.items():
        assert st.weight_ema[name].shape == (min(d, 1),) + SHAPES[name]
        assert st.mean_square[name].shape == (min(d, 1),) + SHAPES[name]


@pytest.mark.parametrize("d", [2, 5])
def test_pipeline_aware_ema_reconstructs_stale_weights_on_linear_trajectory(d):
    # With w_k = a + k v the EMA with beta = d/(d+1) converges to w_{k-d} (LayerPipe2 idea).
    a, v = np.array([0.5, -1.0], np.float32), np.array([0.1, 0.03], np.float32)
    tx = mit.delay_compensated_gradients(d, 1.0, stale_weights="ema")
    state = tx.init({"w": jnp.asarray(a)})
    n = 80
    for k in range(n):
        _, state = tx.update({"w": jnp.zeros(2)}, state, {"w": jnp.asarray(a + k * v)})
    np.testing.assert_allclose(state.weight_ema["w"][0], a + (n - 1 - d) * v, rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("beta", [0.0, 0.6])  # 0: the velocity is the last applied update
def test_weight_velocity_and_prediction_match_numpy(beta):
    rng = np.random.default_rng(2)
    scale = 0.5
    tx = mit.track_weight_velocity(LAYER_D, beta, scale)
    params = _tree(rng)
    state = tx.init(params)
    v = {k: np.zeros(s) for k, s in SHAPES.items()}
    for _ in range(5):
        u = _tree(rng)
        out, state = tx.update(u, state)
        jax.tree.map(np.testing.assert_array_equal, out, u)  # pass-through
        v = {k: beta * v[k] + (1 - beta) * np.asarray(u[k], np.float64) for k in v}
    for k in SHAPES:
        np.testing.assert_allclose(state.velocity[k], v[k], rtol=1e-5, atol=1e-7)
    want = {k: np.asarray(params[k]) + scale * LAYER_D[k] * v[k] for k in SHAPES}
    pred = mit.predict_weights(params, state, LAYER_D, horizon_scale=scale)
    via_state = mit.params_for_gradient(params, (optax.EmptyState(), state))
    for k in SHAPES:
        np.testing.assert_allclose(pred[k], want[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(via_state[k], want[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(via_state["layer_2"], params["layer_2"])  # d = 0
    np.testing.assert_array_equal(pred["layer_2"], params["layer_2"])


def test_params_for_gradient_identity_without_prediction():
    params = _tree(np.random.default_rng(3))
    for name in ("none", "lr_scale", "dc_asgd"):
        tx = optimizer_lib.make_mitigated_optimizer(optax.sgd(0.1), LAYER_D, name)
        assert mit.params_for_gradient(params, tx.init(params)) is params
        assert not mit.needs_params_for_gradient(name)
    assert mit.needs_params_for_gradient("lr_scale+weight_prediction")
    st = mit.track_weight_velocity(1).init(params)
    with pytest.raises(ValueError, match="expected one"):
        mit.params_for_gradient(params, (st, st))


# ------------------------------------------------------------------ factory


def _train(tx, loss_fn, params, batches, counter=None):
    """Runs the documented train step; returns the loss after each step."""
    def step(carry, batch):
        p, s = carry
        if counter is not None:
            counter.append(1)
        g = jax.grad(loss_fn)(mit.params_for_gradient(p, s), *batch)
        u, s = tx.update(g, s, p)
        p = optax.apply_updates(p, u)
        return (p, s), p

    (_, _), ps = jax.jit(lambda c, b: jax.lax.scan(step, c, b))((params, tx.init(params)),
                                                              batches)
    return ps


@pytest.mark.parametrize("name", list(mit.MITIGATIONS) + ["dc_asgd_ema+lr_scale",
                                                         "weight_prediction+lr_scale_sqrt"])
def test_every_mitigation_with_zero_delays_is_bitwise_plain_adam(name):
    rng = np.random.default_rng(4)
    params = _tree(rng)
    gs = [_tree(rng) for _ in range(4)]
    zero = {k: 0 for k in SHAPES}
    plain, tx = optax.adam(1e-2), optimizer_lib.make_mitigated_optimizer(optax.adam(1e-2), zero, name)
    p1 = p2 = params
    s1, s2 = plain.init(params), tx.init(params)
    traces = []

    @jax.jit
    def step(g, s, p):
        traces.append(1)
        gp = mit.params_for_gradient(p, s)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, gp

    @jax.jit
    def plain_step(g, s, p):
        u, s = plain.update(g, s, p)
        return optax.apply_updates(p, u), s

    for g in gs:
        p1, s1 = plain_step(g, s1, p1)
        p2_old = p2
        p2, s2, gp = step(g, s2, p2)
        jax.tree.map(np.testing.assert_array_equal, gp, p2_old)  # gradient at the real params
    jax.tree.map(np.testing.assert_array_equal, p1, p2)
    assert len(traces) == 1


def test_none_equals_make_delayed_optimizer():
    rng = np.random.default_rng(5)
    params = _tree(rng)
    a = optimizer_lib.make_mitigated_optimizer(optax.adam(1e-2), LAYER_D, "none", position="after")
    b = optimizer_lib.make_delayed_optimizer(optax.adam(1e-2), LAYER_D, position="after")
    sa, sb = a.init(params), b.init(params)
    assert jax.tree.structure(sa) == jax.tree.structure(sb)
    for _ in range(4):
        g = _tree(rng)
        ua, sa = a.update(g, sa, params)
        ub, sb = b.update(g, sb, params)
        jax.tree.map(np.testing.assert_array_equal, ua, ub)


def test_combined_chain_layout():
    params = _tree(np.random.default_rng(0))
    tx = optimizer_lib.make_mitigated_optimizer(optax.sgd(0.1), LAYER_D, "dc_asgd_adaptive+lr_scale_sqrt",
                                      dc_lambda=0.5, lr_anneal_steps=10)
    st = tx.init(params)
    assert len(st) == 3
    assert isinstance(st[0], mit.DelayCompensatedState) and isinstance(st[2],
                                                                        mit.ScaleByDelayState)
    assert st[0].mean_square != ()
    tx = optimizer_lib.make_mitigated_optimizer(optax.adam(0.1), LAYER_D, "weight_prediction+lr_scale",
                                      position="after", velocity_decay=0.3)
    kinds = [type(s).__name__ for s in tx.init(params)]
    assert kinds[1:] == ["DelayedGradientsState", "ScaleByDelayState", "WeightPredictionState"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(mitigation="magic"), "unknown mitigation"),
    (dict(mitigation=""), "non-empty"),
    (dict(mitigation="lr_scale+lr_scale_sqrt"), "at most one"),
    (dict(mitigation="none+lr_scale"), "cannot be combined"),
    (dict(mitigation="lr_scale+lr_scale"), "repeats"),
    (dict(mitigation="dc_asgd+weight_prediction"), "double-correct"),
    (dict(mitigation="dc_asgd", position="after"), "position='before'"),
    (dict(mitigation="lr_scale", dc_lambda=1.0), "unknown hyperparameter"),
    (dict(mitigation="dc_asgd", dc_lambda=-1.0), "dc_lambda"),
    (dict(mitigation="dc_asgd_adaptive", dc_momentum=1.0), "dc_momentum"),
    (dict(mitigation="weight_prediction", velocity_decay=1.5), "velocity_decay"),
    (dict(mitigation="lr_scale", lr_power=float("nan")), "lr_power"),
    (dict(mitigation="lr_scale", lr_anneal_steps=2.5), "lr_anneal_steps"),
    (dict(mitigation="none", position="sideways"), "position"),
])
def test_factory_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        optimizer_lib.make_mitigated_optimizer(optax.sgd(0.1), 2, **kwargs)


def test_dc_needs_params_and_bad_delays():
    params = _tree(np.random.default_rng(0))
    tx = optimizer_lib.make_mitigated_optimizer(optax.sgd(0.1), 2, "dc_asgd")
    with pytest.raises(ValueError, match="needs the current params"):
        tx.update(params, tx.init(params))
    with pytest.raises(ValueError, match=">= 0"):
        optimizer_lib.make_mitigated_optimizer(optax.sgd(0.1), -2, "lr_scale")
    with pytest.raises(ValueError, match="do not match"):
        optimizer_lib.make_mitigated_optimizer(optax.sgd(0.1), {"layer_0": 1}, "dc_asgd").init(params)


# ------------------------------------------------------------------ real effect on tiny problems

# Diagonal quadratic 0.5 * sum h_i (w_i - w*_i)^2, full-batch gradients, Adam, one delay of 6
# steps: the lr that is fine without delay oscillates badly with it.
_H = jnp.asarray(np.geomspace(0.01, 1.0, 8), jnp.float32)
_WSTAR = jnp.asarray(np.linspace(-1.0, 1.0, 8), jnp.float32)


def _quad_loss(p):
    return 0.5 * jnp.sum(_H * (p["w"] - _WSTAR) ** 2)


def _quad_final(tx, n=300):
    ps = _train(tx, lambda p, _: _quad_loss(p), {"w": jnp.zeros(8)}, (jnp.zeros(n),))
    return float(_quad_loss(jax.tree.map(lambda x: x[-1], ps)))


@pytest.mark.parametrize("name", ["lr_scale", "lr_scale_sqrt", "weight_prediction"])
def test_mitigation_shrinks_loss_gap_on_delayed_adam_quadratic(name):
    lr, d = 0.1, 6
    undelayed = _quad_final(optax.adam(lr))
    plain = _quad_final(optimizer_lib.make_mitigated_optimizer(optax.adam(lr), d, "none"))
    fixed = _quad_final(optimizer_lib.make_mitigated_optimizer(optax.adam(lr), d, name))
    gap_plain, gap_fixed = plain - undelayed, fixed - undelayed
    assert gap_plain > 0.05, f"delay should hurt here, gap {gap_plain}"
    assert gap_fixed < 0.5 * gap_plain, (name, gap_fixed, gap_plain)


def _logistic_problem():
    """Non-separable logistic regression (finite optimum), 128 samples, 4 scaled features."""
    rng = np.random.default_rng(0)
    scales = np.array([0.5, 1.0, 2.0, 4.0])
    x = rng.normal(size=(128, 4)) * scales
    w_true = rng.normal(size=4) * 0.3 / scales
    y = (rng.uniform(size=128) < 1.0 / (1.0 + np.exp(-x @ w_true))).astype(np.float32)
    return jnp.asarray(x, jnp.float32), jnp.asarray(y)


def _logistic_loss(p, xb, yb):
    return jnp.mean(optax.sigmoid_binary_cross_entropy(xb @ p["w"], yb))


def _logistic_gap_run(tx, x, y, bs=4, epochs=20):
    nb = x.shape[0] // bs
    xs = jnp.tile(x.reshape(nb, bs, -1), (epochs, 1, 1))
    ys = jnp.tile(y.reshape(nb, bs), (epochs, 1))
    ps = _train(tx, _logistic_loss, {"w": jnp.zeros(4)}, (xs, ys))
    last = jax.tree.map(lambda a: a[-nb:], ps)  # last epoch, averaged to smooth SGD noise
    return float(jnp.mean(jax.vmap(lambda p: _logistic_loss(p, x, y))(last)))


@pytest.mark.parametrize("name, lam", [("dc_asgd", 1.0), ("dc_asgd_ema", 1.0),
                                       ("dc_asgd_adaptive", 2.0)])
def test_delay_compensation_shrinks_loss_gap_on_delayed_sgd_logistic(name, lam):
    # Minibatch SGD on a log-likelihood: E[g (.) g] ~ diag Hessian, DC-ASGD's assumption.
    x, y = _logistic_problem()
    lr, d = 0.1, 8
    undelayed = _logistic_gap_run(optax.sgd(lr), x, y)
    plain = _logistic_gap_run(optimizer_lib.make_mitigated_optimizer(optax.sgd(lr), d, "none"), x, y)
    fixed = _logistic_gap_run(
        optimizer_lib.make_mitigated_optimizer(optax.sgd(lr), d, name, dc_lambda=lam), x, y)
    gap_plain, gap_fixed = plain - undelayed, fixed - undelayed
    assert gap_plain > 0.1, f"delay should hurt here, gap {gap_plain}"
    assert gap_fixed < 0.5 * gap_plain, (name, gap_fixed, gap_plain)

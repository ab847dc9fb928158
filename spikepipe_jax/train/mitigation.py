r"""Stale-gradient mitigations for the delayed-gradient (buffer) model.

The buffer model (:mod:`spikepipe_jax.train.delays`) computes every layer's gradient at the
current params ``w_k`` and applies it ``d_l`` steps later, i.e. to ``w_{k+d_l}``. The
mitigations below reduce the error of that stale step. Each has a name, selected by
``config.pipeline.mitigation``; names can be combined with ``+`` (e.g.
``"dc_asgd+lr_scale"``, at most one ``dc_*`` and one ``lr_*``).

* ``none``: the plain delayed optimiser (:func:`delays.delayed_gradients` and the base optimiser).
* ``lr_scale``: leaf ``l``'s final update times ``(1 + d_l)^{-1}``, optionally annealed to 1
  (staleness-aware LR; PipeMare's LR rescheduling), :func:`scale_by_delay`.
* ``lr_scale_sqrt``: the same with ``(1 + d_l)^{-1/2}``.
* ``dc_asgd``: delay-compensated gradients ``g + lambda g*g*(w_now - w_then)``, the weights
  ``w_then`` stashed beside the gradient in the ring buffer (DC-ASGD-c),
  :func:`delay_compensated_gradients`.
* ``dc_asgd_adaptive``: the same with ``lambda / sqrt(MeanSquare(g))`` (DC-ASGD-a).
* ``dc_asgd_ema``: DC-ASGD with ``w_then`` reconstructed by LayerPipe2's pipeline-aware
  moving average instead of stashed (one weight copy per layer instead of ``d_l``).
* ``weight_prediction``: the gradient is evaluated at predicted weights ``w + d_l v_l``
  (SpecTrain; PipeMare's discrepancy correction), :func:`track_weight_velocity` +
  :func:`params_for_gradient`. The only name that changes where the gradient is taken.

``dc_*`` and ``weight_prediction`` correct the same staleness and are not combined.

This module holds the transforms and the name registry; the chain that puts them around the
base optimiser is built by :func:`spikepipe_jax.train.optimizer.make_mitigated_optimizer`
(this module does not import it). The train step is the same for every name
(:func:`params_for_gradient` is the identity unless ``weight_prediction`` is part of the name,
and ``params`` must always be passed to ``update``)::

    tx = optimizer.make_mitigated_optimizer(optax.adam(lr), delays, config.pipeline.mitigation,
                                            position=config.pipeline.delay_position)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, batch):
        grad_params = params_for_gradient(params, opt_state)      # w or predicted w
        loss, grads = jax.value_and_grad(loss_fn)(grad_params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)  # params = the *real* w
        return optax.apply_updates(params, updates), opt_state, loss

References:
  * DC-ASGD: S. Zheng et al., "Asynchronous Stochastic Gradient Descent with Delay
    Compensation", ICML 2017.
  * PipeMare: B. Yang et al., "PipeMare: Asynchronous Pipeline Parallel DNN Training",
    MLSys 2021 (T1 learning-rate rescheduling, T2 discrepancy correction).
  * SpecTrain: C.-C. Chen et al., "Efficient and Robust Parallel DNN Training through Model
    Parallelism on Multi-GPU Platform", 2018 (weight prediction ``w - s * lr * v``).
  * Staleness-aware LR: W. Zhang et al., "Staleness-aware Async-SGD", IJCAI 2016 (lr / tau).
  * LayerPipe2: N. K. Unnikrishnan & K. K. Parhi, "LayerPipe2: Multistage Pipelining and
    Weight Recompute via Improved Exponential Moving Average", 2025 (arXiv:2512.08160).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from spikepipe_jax.train import delays as delays_lib

PyTree = Any

__all__ = [
    "DelayCompensatedState",
    "MITIGATIONS",
    "ScaleByDelayState",
    "WeightPredictionState",
    "delay_compensated_gradients",
    "mitigation_hparams",
    "needs_params_for_gradient",
    "params_for_gradient",
    "predict_weights",
    "scale_by_delay",
    "track_weight_velocity",
]

# name -> default hyperparameters (an immutable registry, selected by config string).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "none": {},
    "lr_scale": {"lr_power": 1.0, "lr_anneal_steps": 0},
    "lr_scale_sqrt": {"lr_power": 0.5, "lr_anneal_steps": 0},
    "dc_asgd": {"dc_lambda": 0.04},
    "dc_asgd_adaptive": {"dc_lambda": 2.0, "dc_momentum": 0.95, "dc_eps": 1e-7},
    "dc_asgd_ema": {"dc_lambda": 0.04},
    "weight_prediction": {"velocity_decay": 0.0, "horizon_scale": 1.0},
}
MITIGATIONS = tuple(_DEFAULTS)


# --------------------------------------------------------------------------------------------
# Learning-rate scaling by delay.


class ScaleByDelayState(NamedTuple):
    """State of :func:`scale_by_delay`: ``count`` int32 ``[]`` (steps, saturating)."""

    count: jax.Array


def _float_hparam(name: str, value: Any, lo: float | None = None, hi: float | None = None,
                  hi_open: bool = False) -> float:
    """Checks a float hyperparameter (finite, within [lo, hi] or [lo, hi))."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    if hi is not None and (value >= hi if hi_open else value > hi):
        raise ValueError(f"{name} must be {'<' if hi_open else '<='} {hi}, got {value}")
    return value


def scale_by_delay(delays: delays_lib.Delays, power: float = 1.0,
                   anneal_steps: int = 0) -> optax.GradientTransformation:
    r"""Scales each leaf's update by a delay-dependent factor (staleness-aware step size).

    .. math::

        u^{(l)}_k \leftarrow (1 + d_l)^{-p\,a_k}\, u^{(l)}_k, \qquad
        a_k = \begin{cases} 1 & K = 0 \\ 1 - \min(k / K, 1) & K > 0 \end{cases}

    ``p = 1`` is the ``lr / tau`` rule of staleness-aware async SGD (Zhang et al. 2016; with
    ``1 + d`` so that ``d = 0`` keeps the step), ``p = 1/2`` its square-root variant, and
    ``K > 0`` anneals the factor from ``(1+d)^{-p}`` to 1 over ``K`` steps like PipeMare's
    learning-rate rescheduling (T1). Delayed GD on a quadratic with curvature ``h`` is stable
    only for ``lr * h < 2 sin(pi / (2 (2d + 1)))`` (about ``pi / (2d+1)``), hence the scaling.
    Place it *after* the optimiser (scale-invariant optimisers such as Adam would undo it).

    Args:
      delays: static delays (see :func:`delays.delayed_gradients`).
      power: ``p >= 0``.
      anneal_steps: ``K >= 0``; 0 keeps the factor constant.

    Returns:
      ``optax.GradientTransformation`` with :class:`ScaleByDelayState`; ``d_l = 0`` leaves
      pass through bitwise.
    """
    delays = delays_lib.validate_delays(delays)
    power = _float_hparam("lr_power", power, lo=0.0)
    anneal_steps = delays_lib._to_delay(anneal_steps, " lr_anneal_steps")  # int >= 0

    def init_fn(params):
        del params
        return ScaleByDelayState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        del params
        ds, leaves, treedef = delays_lib._flat_delays(delays, updates)
        if anneal_steps > 0:
            frac = jnp.minimum(state.count.astype(jnp.float32) / anneal_steps, 1.0)
            expo = -power * (1.0 - frac)
        else:
            expo = -power
        outs = []
        for d, u in zip(ds, leaves):
            if d == 0 or power == 0.0:
                outs.append(u)
            else:
                factor = jnp.power(jnp.float32(1 + d), expo)
                outs.append((u * factor).astype(jnp.result_type(u)))
        return (jax.tree.unflatten(treedef, outs),
                ScaleByDelayState(count=optax.safe_int32_increment(state.count)))

    return optax.GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------------------------
# Delay-compensated gradients (DC-ASGD), stale weights stashed or reconstructed (LayerPipe2).


class DelayCompensatedState(NamedTuple):
    """State of :func:`delay_compensated_gradients`.

    Every array has a leading "copies" axis so that ``d_l = 0`` leaves store nothing.

    Attributes:
      count: int32 ``[]``, update calls so far (step ``k``).
      grad_buffer: per leaf ``[d_l, *shape]``: ring buffer of gradients (slot ``k mod d_l``).
      weight_buffer: per leaf ``[d_l, *shape]``: the params each buffered gradient was
        computed at (``stale_weights="stash"``), else ``()``.
      weight_ema: per leaf ``[min(d_l, 1), *shape]``: pipeline-aware EMA of the params
        (``stale_weights="ema"``), else ``()``.
      mean_square: per leaf ``[min(d_l, 1), *shape]``: EMA of the squared delayed gradient
        (``adaptive=True``), else ``()``.
    """

    count: jax.Array
    grad_buffer: optax.Updates
    weight_buffer: Any
    weight_ema: Any
    mean_square: Any


def _state_buffers(kept: dict[str, Any]) -> dict[str, Any]:
    """All buffer fields of :class:`DelayCompensatedState`: those ``kept``, ``()`` for the rest."""
    return {name: kept.get(name, ()) for name in DelayCompensatedState._fields if name != "count"}


def delay_compensated_gradients(delays: delays_lib.Delays, dc_lambda: float = 0.04, *,
                                adaptive: bool = False, momentum: float = 0.95,
                                eps: float = 1e-7,
                                stale_weights: str = "stash") -> optax.GradientTransformation:
    r"""Delays gradients and compensates them for staleness (DC-ASGD, Zheng et al. 2017).

    The gradient ``g_{k-d}`` computed at ``w_{k-d}`` is corrected towards the gradient at the
    current weights with a first-order Taylor step whose Hessian is approximated by the
    diagonal outer product ``lambda g (.) g``:

    .. math::

        \tilde g_k = g_{k-d} + \lambda_k\, g_{k-d} \odot g_{k-d} \odot (w_k - w_{k-d}),

    with ``lambda_k = lambda`` (DC-ASGD-c) or, if ``adaptive``,
    ``lambda_k = lambda / sqrt(MS_k + eps)``, ``MS_k = m MS_{k-1} + (1-m) g_{k-d}^2``
    (DC-ASGD-a). ``g_j = 0`` for ``j < 0``, so nothing is emitted during the first ``d`` steps.

    ``stale_weights="stash"`` keeps ``w_{k-d}`` beside the gradient in the ring buffer
    (``2 d`` copies per leaf). ``stale_weights="ema"`` reconstructs it instead with
    LayerPipe2's pipeline-aware moving average (one copy per leaf): an EMA of the params whose
    decay is set by the layer's delay, ``beta_l = d_l / (d_l + 1)``,

    .. math:: \bar w_k = \beta_l \bar w_{k-1} + (1 - \beta_l) w_k, \qquad \bar w_0 = w_0,

    which lags the params by ``beta/(1-beta) = d_l`` steps and so equals ``w_{k-d}`` exactly when
    the weights move at constant velocity. (This is our first-order reading of LayerPipe2's
    reconstruction; the paper's exact recursion may differ.)

    Use it in place of ``delayed_gradients`` *before* the optimiser; it reads ``params`` (the
    current weights ``w_k``, which are also the weights the fresh gradient ``g_k`` was
    computed at in the buffer model), so the train step must call
    ``tx.update(grads, opt_state, params)``.

    Args:
      delays: static delays (see :func:`delays.delayed_gradients`).
      dc_lambda: ``lambda >= 0`` (0 gives plain delayed gradients).
      adaptive: DC-ASGD-a scaling of lambda by the RMS of the delayed gradient.
      momentum: ``m`` in ``[0, 1)`` of the mean square (adaptive only).
      eps: ``> 0``, inside the square root (adaptive only).
      stale_weights: ``"stash"`` or ``"ema"``.

    Returns:
      ``optax.GradientTransformation`` with :class:`DelayCompensatedState`.

    Raises:
      ValueError: bad hyperparameters or delays; ``update`` without ``params``.
    """
    delays = delays_lib.validate_delays(delays)
    dc_lambda = _float_hparam("dc_lambda", dc_lambda, lo=0.0)
    momentum = _float_hparam("dc_momentum", momentum, lo=0.0, hi=1.0, hi_open=True)
    eps = _float_hparam("dc_eps", eps, lo=0.0)
    if adaptive and eps <= 0.0:
        raise ValueError(f"dc_eps must be > 0 for adaptive DC-ASGD, got {eps}")
    if stale_weights not in ("stash", "ema"):
        raise ValueError(f"stale_weights must be 'stash' or 'ema', got {stale_weights!r}")

    # the state fields this configuration keeps (the others stay ``()``), each with the number
    # of copies a leaf of delay d stores and their initial value
    zeros = lambda p: jnp.zeros(jnp.shape(p), jnp.result_type(p))
    fields = {"grad_buffer": (lambda d: d, zeros)}
    if stale_weights == "stash":
        fields["weight_buffer"] = (lambda d: d, zeros)
    else:
        fields["weight_ema"] = (lambda d: min(d, 1), jnp.asarray)
    if adaptive:
        fields["mean_square"] = (lambda d: min(d, 1), zeros)

    def init_fn(params):
        ds, leaves, treedef = delays_lib._flat_delays(delays, params)
        state = {name: jax.tree.unflatten(treedef, [
            jnp.broadcast_to(init(p), (n_of_d(d),) + tuple(jnp.shape(p))).astype(jnp.result_type(p))
            for d, p in zip(ds, leaves)]) for name, (n_of_d, init) in fields.items()}
        return DelayCompensatedState(count=jnp.zeros([], jnp.int32), **_state_buffers(state))

    def compensate(d, g, w, parts, count):
        """One leaf with ``d > 0``: the compensated delayed gradient and the leaf's new state."""
        parts = dict(parts)
        g_old, parts["grad_buffer"] = delays_lib._ring_step(parts["grad_buffer"], g, d, count)
        if "weight_buffer" in parts:
            w_old, parts["weight_buffer"] = delays_lib._ring_step(parts["weight_buffer"], w, d, count)
        else:
            beta = d / (d + 1.0)
            w_old = beta * parts["weight_ema"][0] + (1.0 - beta) * w.astype(parts["weight_ema"].dtype)
            parts["weight_ema"] = w_old[None]
        lam = dc_lambda
        if "mean_square" in parts:
            ms = momentum * parts["mean_square"][0] + (1.0 - momentum) * jnp.square(g_old)
            parts["mean_square"] = ms[None]
            lam = dc_lambda / jnp.sqrt(ms + eps)
        comp = g_old + lam * g_old * g_old * (w.astype(g_old.dtype) - w_old.astype(g_old.dtype))
        return comp.astype(g_old.dtype), parts

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("delay_compensated_gradients (DC-ASGD) needs the current params: "
                             "call tx.update(grads, opt_state, params)")
        ds, g_leaves, treedef = delays_lib._flat_delays(delays, updates)
        w_leaves = treedef.flatten_up_to(params)
        stored = {name: treedef.flatten_up_to(getattr(state, name)) for name in fields}
        outs, new = [], {name: [] for name in fields}
        for i, (d, g, w) in enumerate(zip(ds, g_leaves, w_leaves)):
            parts = {name: leaves[i] for name, leaves in stored.items()}
            delays_lib._check_buffer(parts["grad_buffer"], g, d, "delay_compensated_gradients")
            out, parts = (g, parts) if d == 0 else compensate(d, g, w, parts, state.count)
            outs.append(out)
            for name, part in parts.items():
                new[name].append(part)
        new_state = {name: jax.tree.unflatten(treedef, parts) for name, parts in new.items()}
        return (jax.tree.unflatten(treedef, outs),
                DelayCompensatedState(count=state.count + 1, **_state_buffers(new_state)))

    return optax.GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------------------------
# Weight prediction (SpecTrain / PipeMare discrepancy correction).


class WeightPredictionState(NamedTuple):
    """State of :func:`track_weight_velocity`.

    Attributes:
      velocity: params-shaped pytree, EMA of the applied per-step updates
        ``v_k = beta v_{k-1} + (1 - beta) u_k`` (``u_k = w_{k+1} - w_k``).
      horizon: pytree of float32 ``[]`` per leaf, the prediction horizon
        ``h_l = horizon_scale * d_l`` in steps.
    """

    velocity: optax.Updates
    horizon: Any


def track_weight_velocity(delays: delays_lib.Delays, decay: float = 0.0,
                          horizon_scale: float = 1.0) -> optax.GradientTransformation:
    r"""Tracks a smoothed weight velocity for weight prediction; updates pass through unchanged.

    Must be the *last* transform of the chain so that it sees the updates actually applied:

    .. math:: v_k = \beta v_{k-1} + (1 - \beta) u_k, \qquad v_0 = 0.

    The train step then evaluates the gradient at the predicted weights (see
    :func:`params_for_gradient`)

    .. math:: \hat w^{(l)}_k = w^{(l)}_k + h_l\, v^{(l)}_{k-1}, \qquad h_l = s\, d_l,

    an estimate of ``w_{k+d_l}``, the weights the gradient will be applied to in the buffer
    model. For SGD ``v`` is ``-lr`` times a momentum-smoothed gradient, which is SpecTrain's
    ``w - s lr v``; unlike SpecTrain the velocity is measured on the applied updates, so it
    works for any optimiser (also PipeMare's T2 uses an EMA of weight differences).

    Args:
      delays: static delays.
      decay: ``beta`` in ``[0, 1)``. The default 0 uses the last applied update, which for
        momentum SGD or Adam is already a smoothed velocity (SpecTrain's choice); raise it for
        momentum-free SGD, whose raw steps are noisy.
      horizon_scale: ``s >= 0`` (1 predicts exactly ``d_l`` steps ahead).

    Returns:
      ``optax.GradientTransformation`` with :class:`WeightPredictionState`.
    """
    delays = delays_lib.validate_delays(delays)
    decay = _float_hparam("velocity_decay", decay, lo=0.0, hi=1.0, hi_open=True)
    horizon_scale = _float_hparam("horizon_scale", horizon_scale, lo=0.0)

    def init_fn(params):
        ds, leaves, treedef = delays_lib._flat_delays(delays, params)
        vel = [jnp.zeros(jnp.shape(p), jnp.result_type(p)) for p in leaves]
        hor = [jnp.asarray(horizon_scale * d, jnp.float32) for d in ds]
        return WeightPredictionState(jax.tree.unflatten(treedef, vel),
                                     jax.tree.unflatten(treedef, hor))

    def update_fn(updates, state, params=None):
        del params
        leaves, treedef = jax.tree.flatten(updates)
        vels = treedef.flatten_up_to(state.velocity)
        if decay == 0.0:  # the last applied update itself (no read of the old velocity)
            new_v = [u.astype(v.dtype) for u, v in zip(leaves, vels)]
        else:
            new_v = [(decay * v + (1.0 - decay) * u.astype(v.dtype)).astype(v.dtype)
                     for u, v in zip(leaves, vels)]
        return updates, WeightPredictionState(jax.tree.unflatten(treedef, new_v),
                                              state.horizon)

    return optax.GradientTransformation(init_fn, update_fn)


def predict_weights(params: PyTree, velocity: PyTree | WeightPredictionState,
                    delays: delays_lib.Delays, horizon_scale: float = 1.0) -> PyTree:
    r"""Predicted weights ``w_l + s d_l v_l`` (pure; ``d_l = 0`` leaves returned as is).

    Args:
      params: current params ``w``.
      velocity: params-shaped velocity ``v``, or a :class:`WeightPredictionState`.
      delays: static delays (int or prefix pytree).
      horizon_scale: ``s``.

    Returns:
      Params-shaped pytree ``\hat w``.
    """
    if isinstance(velocity, WeightPredictionState):
        velocity = velocity.velocity
    horizon_scale = _float_hparam("horizon_scale", horizon_scale, lo=0.0)
    ds, leaves, treedef = delays_lib._flat_delays(delays, params)
    vels = treedef.flatten_up_to(velocity)
    out = [p if d == 0 or horizon_scale == 0.0
           else (p + (horizon_scale * d) * v.astype(jnp.result_type(p))).astype(jnp.result_type(p))
           for d, p, v in zip(ds, leaves, vels)]
    return jax.tree.unflatten(treedef, out)


def _find_states(opt_state: PyTree) -> list[WeightPredictionState]:
    """All WeightPredictionState nodes inside an optimiser state."""
    is_wp = lambda x: isinstance(x, WeightPredictionState)
    return [x for x in jax.tree.leaves(opt_state, is_leaf=is_wp) if is_wp(x)]


def params_for_gradient(params: PyTree, opt_state: PyTree) -> PyTree:
    r"""The params at which the train step must evaluate the gradient.

    Identity (the same ``params`` object) unless ``opt_state`` contains a
    :class:`WeightPredictionState` (mitigation ``weight_prediction``), in which case it returns
    ``w_l + h_l v_l`` per leaf (``h_l = 0`` leaves bitwise unchanged). Pure and jit-friendly.

    Args:
      params: current params ``w_k``.
      opt_state: the state of a
        :func:`spikepipe_jax.train.optimizer.make_mitigated_optimizer` optimiser (any optax
        state).

    Returns:
      Params-shaped pytree to differentiate the loss at. Pass the *real* params to
      ``tx.update`` and ``optax.apply_updates``.

    Raises:
      ValueError: more than one WeightPredictionState in ``opt_state``.
    """
    states = _find_states(opt_state)
    if not states:
        return params
    if len(states) > 1:
        raise ValueError(f"opt_state holds {len(states)} WeightPredictionStates; expected one")
    state = states[0]
    leaves, treedef = jax.tree.flatten(params)
    vels = treedef.flatten_up_to(state.velocity)
    hors = treedef.flatten_up_to(state.horizon)
    out = [jnp.where(h > 0, (p + h * v.astype(jnp.result_type(p))).astype(jnp.result_type(p)), p)
           for p, v, h in zip(leaves, vels, hors)]
    return jax.tree.unflatten(treedef, out)


# --------------------------------------------------------------------------------------------
# Names and hyperparameters (the chain itself is built by train/optimizer.py).


def _parse_mitigation(mitigation: str) -> tuple[str, ...]:
    """Splits and validates a (``+``-joined) mitigation name."""
    if not isinstance(mitigation, str) or not mitigation.strip():
        raise ValueError(f"mitigation must be a non-empty string, one of {MITIGATIONS} or a "
                         f"'+'-joined combination, got {mitigation!r}")
    names = tuple(n.strip() for n in mitigation.split("+"))
    for n in names:
        if n not in _DEFAULTS:
            raise ValueError(f"unknown mitigation {n!r} in {mitigation!r}; known: {MITIGATIONS}")
    if len(set(names)) != len(names):
        raise ValueError(f"mitigation {mitigation!r} repeats a name")
    if "none" in names and len(names) > 1:
        raise ValueError(f"mitigation {mitigation!r}: 'none' cannot be combined")
    if "weight_prediction" in names and any(n.startswith("dc_") for n in names):
        raise ValueError(f"mitigation {mitigation!r}: dc_* and weight_prediction both correct the "
                         f"same staleness and would double-correct; pick one")
    for family in ("dc_", "lr_"):
        fam = [n for n in names if n.startswith(family)]
        if len(fam) > 1:
            raise ValueError(f"mitigation {mitigation!r} combines {fam}; use at most one {family}*")
    return names


def needs_params_for_gradient(mitigation: str) -> bool:
    """True if the train step must evaluate gradients at :func:`params_for_gradient` params."""
    return "weight_prediction" in _parse_mitigation(mitigation)


def mitigation_hparams(mitigation: str, **hparams: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The names in a (``+``-joined) mitigation and their hyperparameters, defaults overridden.

    Accepted overrides: ``lr_power``, ``lr_anneal_steps`` (lr_*); ``dc_lambda`` (dc_*),
    ``dc_momentum``, ``dc_eps`` (dc_asgd_adaptive); ``velocity_decay``, ``horizon_scale``
    (weight_prediction). Values are checked by the transforms that take them.

    Returns:
      ``(names, hparams)``: the validated names and ``{hyperparameter: value}`` of those names.

    Raises:
      ValueError: unknown or conflicting names, a hyperparameter the names do not take.
    """
    names = _parse_mitigation(mitigation)
    allowed: dict[str, Any] = {}
    for n in names:
        allowed.update(_DEFAULTS[n])
    unknown = sorted(set(hparams) - set(allowed))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {unknown} for mitigation {mitigation!r}; "
                         f"accepted: {sorted(allowed)}")
    return names, {**allowed, **hparams}

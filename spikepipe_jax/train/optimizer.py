"""The training optimiser, built in one place: every ``optax.chain`` of the training path.

From a config::

    make_optimizer(config, model, total_steps)
      base  = make_base_optimizer(config.train)                      # optimiser + LR schedule
      d_l   = pipeline.config_delays(config, L)                      # per-layer gradient delays
      tx    = make_mitigated_optimizer(base, layer_delays(d_l),
                                       config.pipeline.mitigation,
                                       config.pipeline.delay_position)

The transforms the chain is made of live in :mod:`~spikepipe_jax.train.delays`
(:func:`~spikepipe_jax.train.delays.delayed_gradients`) and
:mod:`~spikepipe_jax.train.mitigation` (DC-ASGD, delay-scaled steps, weight prediction); this
module only orders them. Those two modules never import this one.

The chain, brackets marking parts present only when selected::

    before: chain(delay_or_dc, base, [scale_by_delay], [track_weight_velocity])
    after:  chain(base, delayed_gradients, [scale_by_delay], [track_weight_velocity])

``delay_or_dc`` is ``delayed_gradients`` or, for a ``dc_*`` mitigation,
``delay_compensated_gradients``. With no delay and no mitigation the optimiser is ``base``
itself (its state is the plain optimiser's, no wrapper).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import optax

from spikepipe_jax.train import delays as delays_lib
from spikepipe_jax.train import mitigation as mitigation_lib
from spikepipe_jax.train import pipeline as pipeline_lib

OPTIMIZERS = ("adam", "adamw", "sgd", "momentum")
POSITIONS = ("before", "after")

__all__ = [
    "OPTIMIZERS",
    "POSITIONS",
    "check_position",
    "make_base_optimizer",
    "make_delayed_optimizer",
    "make_mitigated_optimizer",
    "make_optimizer",
    "make_training_optimizer",
]


def make_base_optimizer(train_cfg, total_steps: Optional[int] = None) -> optax.GradientTransformation:
    """The plain optimiser from ``config.train`` (no delays); ``total_steps`` for LR schedules."""
    peak = lr = float(train_cfg.learning_rate)
    if not peak > 0:
        raise ValueError(f"train.learning_rate must be positive, got {train_cfg.learning_rate!r}")
    schedule = train_cfg.get("lr_schedule", "constant")
    warmup = train_cfg.get("warmup_steps", 0)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"train.warmup_steps must be a non-negative integer, got {warmup!r}")
    if schedule == "cosine":
        if total_steps is None:
            raise ValueError("a cosine learning-rate schedule needs the total number of steps")
        lr = optax.cosine_decay_schedule(lr, max(1, total_steps - warmup), alpha=0.05)
    elif schedule != "constant":
        raise ValueError(f"unknown train.lr_schedule {schedule!r}; expected 'constant' or 'cosine'")
    if warmup:  # step k < warmup uses peak * (k + 1) / warmup, then the schedule above
        lr = optax.join_schedules([optax.linear_schedule(peak / warmup, peak, warmup - 1),
                                   lr if callable(lr) else optax.constant_schedule(lr)], [warmup])
    name = train_cfg.optimizer
    if name == "adam":
        return optax.adam(lr)
    if name == "adamw":
        return optax.adamw(lr, weight_decay=float(train_cfg.weight_decay))
    if name == "sgd":
        return optax.sgd(lr)
    if name == "momentum":
        return optax.sgd(lr, momentum=0.9)
    raise ValueError(f"unknown train.optimizer {name!r}; expected one of {OPTIMIZERS}")


def check_position(position: str) -> str:
    """Returns ``position`` if it is one of :data:`POSITIONS`, else raises ValueError naming it."""
    if position not in POSITIONS:
        raise ValueError(f"delay position must be one of {POSITIONS}, got {position!r}")
    return position


def make_mitigated_optimizer(base_optimizer: optax.GradientTransformation,
                             delays: delays_lib.Delays, mitigation: str = "none",
                             position: str = "before",
                             **hparams: Any) -> optax.GradientTransformation:
    """Delayed optimiser with a named stale-gradient mitigation (``config.pipeline.mitigation``).

    The chain is the one in the module docstring; the optimiser state is the tuple of its
    parts' states. ``dc_*`` mitigations need ``position="before"`` (they correct gradients,
    not optimiser updates).

    Args:
      base_optimizer: e.g. ``optax.adam(lr)``.
      delays: static per-leaf delays (int or params-prefix pytree, see
        :func:`~spikepipe_jax.train.delays.delayed_gradients`).
      mitigation: a name in ``mitigation.MITIGATIONS`` or a ``+``-joined combination.
      position: ``"before"``: stale gradients enter the optimiser (Adam's moments see
        ``g_{k-d}``); ``"after"``: the optimiser runs on fresh gradients and its update is
        applied ``d`` steps late.
      **hparams: overrides of the selected mitigations' hyperparameters (see
        :func:`~spikepipe_jax.train.mitigation.mitigation_hparams`).

    Returns:
      ``optax.GradientTransformation``. Its ``update`` must receive ``params``; gradients must
      be taken at ``mitigation.params_for_gradient(params, opt_state)``.

    Raises:
      ValueError: unknown name or hyperparameter, bad values, ``dc_*`` with ``"after"``.
    """
    names, hp = mitigation_lib.mitigation_hparams(mitigation, **hparams)
    position = check_position(position)
    delays = delays_lib.validate_delays(delays)

    dc = [n for n in names if n.startswith("dc_")]
    if dc and position != "before":
        raise ValueError(f"mitigation {dc[0]!r} compensates stale *gradients* and needs "
                         f"position='before', got {position!r}")
    if dc:
        front = mitigation_lib.delay_compensated_gradients(
            delays, hp["dc_lambda"], adaptive=dc[0] == "dc_asgd_adaptive",
            momentum=hp.get("dc_momentum", 0.95), eps=hp.get("dc_eps", 1e-7),
            stale_weights="ema" if dc[0] == "dc_asgd_ema" else "stash")
        parts = [front, base_optimizer]
    else:
        delay = delays_lib.delayed_gradients(delays)
        parts = [delay, base_optimizer] if position == "before" else [base_optimizer, delay]
    if any(n.startswith("lr_") for n in names):
        parts.append(mitigation_lib.scale_by_delay(delays, hp["lr_power"], hp["lr_anneal_steps"]))
    if "weight_prediction" in names:
        parts.append(mitigation_lib.track_weight_velocity(delays, hp["velocity_decay"],
                                                          hp["horizon_scale"]))
    return optax.chain(*parts)


def make_delayed_optimizer(optimizer: optax.GradientTransformation, delays: delays_lib.Delays,
                           position: str = "before") -> optax.GradientTransformation:
    """Wraps an optimiser with per-leaf gradient delays, no mitigation.

    ``chain(delayed_gradients, optimizer)`` for ``"before"`` (state
    ``(DelayedGradientsState, opt_state)``), ``chain(optimizer, delayed_gradients)`` for
    ``"after"`` (state ``(opt_state, DelayedGradientsState)``); see
    :func:`make_mitigated_optimizer`.
    """
    return make_mitigated_optimizer(optimizer, delays, "none", position)


def make_training_optimizer(
        optimizer: optax.GradientTransformation, delays: delays_lib.Delays, mitigation: str = "none",
        position: str = "before", **hparams: Any,
) -> tuple[optax.GradientTransformation, Optional[Callable[[Any, Any], Any]]]:
    """Delayed, mitigated optimiser plus the train step's gradient-point function.

    Returns:
      ``(tx, params_for_gradient)``: ``tx`` from :func:`make_mitigated_optimizer`;
      ``params_for_gradient`` is :func:`spikepipe_jax.train.mitigation.params_for_gradient`
      when the mitigation evaluates gradients at predicted weights, else ``None`` (use the
      current params). Either way ``tx.update`` must receive the real params.
    """
    tx = make_mitigated_optimizer(optimizer, delays, mitigation, position, **hparams)
    pfg = (mitigation_lib.params_for_gradient
           if mitigation_lib.needs_params_for_gradient(mitigation) else None)
    return tx, pfg


def make_optimizer(config, model, total_steps: Optional[int] = None
                   ) -> tuple[optax.GradientTransformation, Optional[Callable]]:
    """The training optimiser of a config: base optimiser + per-layer gradient delays + mitigation.

    Returns ``(tx, params_for_gradient)``; ``params_for_gradient(params, opt_state)`` gives the
    parameters at which the train step evaluates the gradient (None: the current parameters).
    With no delay and mitigation ``"none"``, ``tx`` is the base optimiser itself.
    """
    base = make_base_optimizer(config.train, total_steps)
    delays = pipeline_lib.config_delays(config, model.num_layers)
    mitigation = config.pipeline.get("mitigation", "none")
    if not any(delays) and mitigation == "none":
        return base, None
    return make_training_optimizer(base, delays_lib.layer_delays(delays), mitigation=mitigation,
                                   position=config.pipeline.delay_position)

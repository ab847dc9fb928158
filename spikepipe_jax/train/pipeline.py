"""From ``config.pipeline`` to gradient delays and the optimiser chain that applies them.

``config.pipeline.delays``:
  * ``"none"``: synchronous training, d_l = 0 (GPipe-equivalent weights).
  * ``"1f1b"``: PipeDream 1F1B with one stage per weight layer: d_l = L − 1 − l.
  * ``"fully_pipelined"``: the fully pipelined F/B/W timeline (``schedule.delays_for``).
  * one int per weight layer, as a comma-separated string ``"3,2,1,0"`` (ConfigDict fields keep
    their type, so the command line and configs use this form) or a list of ints.
  * optionally scaled by ``config.pipeline.delay_scale`` (the study's "2× pipeline" setting).
The delays go through :func:`spikepipe_jax.schedule.delays_for`, the same function the scheduler
uses, so a schedule's speed and its gradient delays come from one place.
"""

from __future__ import annotations

from typing import Callable, Optional

import optax

OPTIMIZERS = ("adam", "adamw", "sgd", "momentum")


def make_base_optimizer(train_cfg, total_steps: Optional[int] = None) -> optax.GradientTransformation:
    """The plain optimiser from ``config.train`` (no delays); ``total_steps`` for LR schedules."""
    lr = float(train_cfg.learning_rate)
    if not lr > 0:
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
    if warmup:  # step k < warmup uses lr * (k + 1) / warmup, then the schedule above
        peak = float(train_cfg.learning_rate)
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


def resolve_delays(pipeline_cfg, num_layers: int) -> list[int]:
    """Per-layer delays d_l from ``config.pipeline`` (validated)."""
    spec = pipeline_cfg.delays
    scale = pipeline_cfg.get("delay_scale", 1)
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 0:
        raise ValueError(f"pipeline.delay_scale must be a non-negative integer, got {scale!r}")
    if isinstance(spec, str) and spec.replace(",", "").replace(" ", "").isdigit():
        spec = [int(v) for v in spec.split(",")]  # "3,2,1,0" from the command line
    from spikepipe_jax.schedule import delays_for
    try:
        delays = delays_for(spec, num_layers=num_layers)
    except ValueError as err:
        raise ValueError(f"bad pipeline.delays {spec!r} for {num_layers} weight layers: {err}") from err
    return [int(d) * scale for d in delays]


def make_optimizer(config, model, total_steps: Optional[int] = None
                   ) -> tuple[optax.GradientTransformation, Optional[Callable]]:
    """The training optimiser: base optimiser + per-layer gradient delays + mitigation.

    Returns ``(tx, params_for_gradient)``; ``params_for_gradient(params, opt_state)`` gives the
    parameters at which the train step evaluates the gradient (None: the current parameters).
    """
    base = make_base_optimizer(config.train, total_steps)
    delays = resolve_delays(config.pipeline, model.num_layers)
    mitigation = config.pipeline.get("mitigation", "none")
    if not any(delays) and mitigation == "none":
        return base, None
    from spikepipe_jax.train import delays as delays_lib
    return delays_lib.make_training_optimizer(base, delays_lib.layer_delays(delays),
                                              mitigation=mitigation,
                                              position=config.pipeline.delay_position)

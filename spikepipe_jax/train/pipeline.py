"""From ``config.pipeline`` to the per-layer gradient delays d_l.

``config.pipeline.delays``:
  * ``"none"``: synchronous training, d_l = 0 (GPipe-equivalent weights).
  * ``"1f1b"``: PipeDream 1F1B: d_l = S − 1 − stage(l), with ``pipeline.stages`` S (default: one
    stage per weight layer, d_l = L − 1 − l).
  * ``"fully_pipelined"``: the fully pipelined F/B/W timeline (``schedule.delays_for``).
  * one int per weight layer, as a comma-separated string ``"3,2,1,0"`` (ConfigDict fields keep
    their type, so the command line and configs use this form) or a list of ints.
  * optionally scaled by ``config.pipeline.delay_scale`` (the study's "2× pipeline" setting).
The delays go through :func:`spikepipe_jax.schedule.delays_for`, the same function the scheduler
uses, so a schedule's speed and its gradient delays come from one place. The optimiser chain
that applies them is built in :mod:`spikepipe_jax.train.optimizer`.
"""

from __future__ import annotations

from spikepipe_jax.schedule import delays_for


def config_delays(config, num_layers: int) -> list[int]:
    """Per-layer delays d_l of a config: :func:`resolve_delays` for its stages
    (``pipeline.stages``, :func:`spikepipe_jax.train.stages.config_stages`)."""
    from spikepipe_jax.train import stages as stages_lib

    return resolve_delays(config.pipeline, num_layers,
                          stage_map=stages_lib.stage_map(stages_lib.config_stages(config)))


def resolve_delays(pipeline_cfg, num_layers: int, stage_map=None) -> list[int]:
    """Per-layer delays d_l from ``config.pipeline`` (validated); ``stage_map`` (layer -> stage)
    for ``"1f1b"`` / ``"fully_pipelined"`` (default: one stage per layer)."""
    spec = pipeline_cfg.delays
    scale = pipeline_cfg.get("delay_scale", 1)
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 0:
        raise ValueError(f"pipeline.delay_scale must be a non-negative integer, got {scale!r}")
    if isinstance(spec, str) and spec.replace(",", "").replace(" ", "").isdigit():
        spec = [int(v) for v in spec.split(",")]  # "3,2,1,0" from the command line
    try:
        delays = delays_for(spec, num_layers=num_layers, stages=stage_map)
    except ValueError as err:
        raise ValueError(f"bad pipeline.delays {spec!r} for {num_layers} weight layers: {err}") from err
    return [int(d) * scale for d in delays]

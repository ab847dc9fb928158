"""Pipeline stages: which consecutive weight layers each stage of an inter-layer pipeline runs.

:func:`partition_layers` splits the layers ``0 .. L-1`` into ``S`` contiguous, non-empty
stages so that the largest stage cost (the pipeline's bottleneck, which sets its throughput) is
as small as possible. The costs can come from the cost model (cycles of ``F_l + B_l + W_l``) or
from measured per-layer times; the partition is exact (dynamic programming), pure Python, and
deterministic.

Stage ``s`` is the half-open layer range ``[start_s, stop_s)``: ``start_0 = 0``,
``stop_{S-1} = L`` and ``stop_s = start_{s+1}``.

:func:`config_stages` is the one place a config's ``pipeline.stages`` becomes layer ranges: the
pipeline executor runs them (:mod:`spikepipe_jax.train.executor`) and the gradient delays of
``pipeline.delays="1f1b"`` / ``"fully_pipelined"`` are derived for them
(:func:`spikepipe_jax.train.pipeline.config_delays`), so the simulator and the executor agree on
the stages.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

from spikepipe_jax.schedule.partition import partition_contiguous  # the project's one partitioner

__all__ = ["check_costs", "config_stages", "layer_costs", "num_stages", "partition_layers", "stage_costs",
           "stage_map"]


def check_costs(costs: Sequence[float]) -> list[float]:
    """Checks per-layer costs and returns them as a list of floats.

    Raises:
      ValueError: ``costs`` is not a non-empty sequence of finite numbers ``>= 0`` (names the
        offending value and its layer).
    """
    if isinstance(costs, (str, bytes)) or not hasattr(costs, "__len__") or not hasattr(costs, "__iter__"):
        raise ValueError(f"costs must be a sequence of per-layer costs, got {costs!r}")
    out = []
    for l, c in enumerate(costs):
        if isinstance(c, bool) or not isinstance(c, numbers.Real) or not math.isfinite(c) or c < 0:
            raise ValueError(f"cost of layer {l} must be a finite number >= 0, got {c!r}")
        out.append(float(c))
    if not out:
        raise ValueError("costs is empty: a network has at least one weight layer")
    return out


def _check_num_stages(num_stages: int, num_layers: int) -> int:
    if isinstance(num_stages, bool) or not isinstance(num_stages, numbers.Integral):
        raise ValueError(f"num_stages must be an integer, got {num_stages!r}")
    num_stages = int(num_stages)
    if num_stages < 1:
        raise ValueError(f"num_stages must be >= 1, got {num_stages}")
    if num_stages > num_layers:
        raise ValueError(f"num_stages={num_stages} exceeds the {num_layers} layers: every stage "
                         f"needs at least one layer")
    return num_stages


def stage_costs(costs: Sequence[float], stages: Sequence[tuple[int, int]]) -> list[float]:
    """The cost of each stage: the exactly rounded sum (``math.fsum``) of its layers' costs."""
    costs = check_costs(costs)
    return [math.fsum(costs[a:b]) for a, b in stages]


def partition_layers(costs: Sequence[float], num_stages: int) -> list[tuple[int, int]]:
    """Contiguous partition of the layers into ``num_stages`` stages minimising the largest stage cost.

    Exact, by the dynamic program of :func:`spikepipe_jax.schedule.partition.partition_contiguous`
    (no cut costs here): among optimal partitions the one with the lexicographically smallest
    stage lengths (each stage, from the first, as short as the optimum allows), so the result is
    deterministic; early stages hold the most micro-batches in flight in a 1F1B pipeline, so
    they get the fewer layers.

    Args:
      costs: per-layer costs ``c_0 .. c_{L-1}``, finite numbers ``>= 0``.
      num_stages: ``S`` with ``1 <= S <= L``.

    Returns:
      ``S`` half-open layer ranges ``[(start, stop), ...]``, contiguous, covering ``0 .. L-1``,
      none empty.

    Raises:
      ValueError: bad costs, or ``num_stages`` not an integer in ``[1, L]`` (names the value).
    """
    costs = check_costs(costs)
    n = len(costs)
    num_stages = _check_num_stages(num_stages, n)
    part = partition_contiguous(costs, [0.0] * n, num_stages)
    return [(part.index(s), n - part[::-1].index(s)) for s in range(num_stages)]


def num_stages(pipeline_cfg, num_layers: int) -> int:
    """``S`` from ``pipeline.stages``: ``0`` (the default) is one stage per weight layer (``L``).

    Raises:
      ValueError: not an integer in ``[0, L]`` (names the value).
    """
    v = pipeline_cfg.get("stages", 0)
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
        raise ValueError(f"pipeline.stages must be an integer >= 0 (0: one stage per weight layer), got {v!r}")
    if v > num_layers:
        raise ValueError(f"pipeline.stages={v} exceeds the network's {num_layers} weight layers "
                         f"(every stage needs at least one)")
    return int(v) or num_layers


def layer_costs(config) -> list[float]:
    """Per-layer cost for balancing stages: the cost model's cycles of each layer's training
    tasks (forward, both gradients, LIF recurrences; :mod:`spikepipe_jax.hardware.mapping`)."""
    from spikepipe_jax.hardware import mapping

    costs: dict[int, float] = {}
    for t in mapping.training_tasks_from_config(config):
        if t["layer"] >= 0:
            costs[t["layer"]] = costs.get(t["layer"], 0.0) + float(t["cycles"])
    return [costs[l] for l in sorted(costs)]


def config_stages(config) -> tuple[tuple[int, int], ...]:
    """The stages of a config: ``pipeline.stages`` ranges of its weight layers, balanced by the
    cost model (:func:`layer_costs`, :func:`partition_layers`); one per layer when ``S = L``."""
    from spikepipe_jax.spec import parse_spec

    n = len(parse_spec(config.model.layers, config.model.input_shape))
    s = num_stages(config.pipeline, n)
    if s == n:
        return tuple((l, l + 1) for l in range(n))
    if s == 1:
        return ((0, n),)
    return tuple(partition_layers(layer_costs(config), s))


def stage_map(stages: Sequence[tuple[int, int]]) -> list[int]:
    """The stage index of every weight layer."""
    return [s for s, (a, b) in enumerate(stages) for _ in range(a, b)]

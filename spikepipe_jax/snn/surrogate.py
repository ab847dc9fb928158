"""Surrogate spike functions: exact Heaviside forward, smooth derivative backward.

Each factory returns ``spike_fn(x) -> (x > 0).astype(x.dtype)`` whose derivative is replaced by
a surrogate, defined with ``jax.custom_jvp`` so it works under ``grad``, ``vjp``, ``jvp``,
``vmap`` and ``jit``. ``x`` is the shifted membrane ``mem - threshold``. Definitions and defaults
follow snnTorch 1.0's ``snntorch.surrogate`` so results compare one to one:

* ``fast_sigmoid(slope=25)``: dS/dx = 1 / (slope·|x| + 1)²  (Zenke & Ganguli 2018, SuperSpike)
* ``arctan(alpha=2)``:        dS/dx = (alpha/2) / (1 + (π/2·alpha·x)²)  (Fang et al. 2021)
* ``triangle(threshold=1)``:  dS/dx = θ for x < 0, −θ for x ≥ 0 (snnTorch's released code).
* ``straight_through()``:     dS/dx = 1.

The factories do not jit: they are called inside jitted code.
"""

from __future__ import annotations

import inspect
from typing import Callable

import jax
import jax.numpy as jnp

SpikeFn = Callable[[jax.Array], jax.Array]


def heaviside(x: jax.Array) -> jax.Array:
    """Exact step ``1[x > 0]`` in the input dtype (0 at x == 0, as snnTorch)."""
    return (x > 0).astype(x.dtype)


def custom(derivative: Callable[[jax.Array], jax.Array]) -> SpikeFn:
    """Builds a spike function with Heaviside forward and ``derivative(x)`` as its derivative."""

    @jax.custom_jvp
    def spike(x):
        return heaviside(x)

    @spike.defjvp
    def _spike_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return heaviside(x), (derivative(x) * t).astype(x.dtype)

    return spike


def fast_sigmoid(slope: float = 25.0) -> SpikeFn:
    r"""Fast-sigmoid surrogate (snnTorch ``surrogate.fast_sigmoid``).

    .. math:: S = \Theta(x), \qquad \frac{\partial S}{\partial x} = \frac{1}{(k|x| + 1)^2}, \; k = \text{slope}.
    """
    return custom(lambda x: 1.0 / (slope * jnp.abs(x) + 1.0) ** 2)


def arctan(alpha: float = 2.0) -> SpikeFn:
    r"""Arctan surrogate (snnTorch ``surrogate.atan``, the default of ``snn.Leaky``).

    .. math:: \frac{\partial S}{\partial x} = \frac{\alpha/2}{1 + (\frac{\pi}{2}\alpha x)^2}.
    """
    return custom(lambda x: (alpha / 2.0) / (1.0 + (jnp.pi / 2.0 * alpha * x) ** 2))


def triangle(threshold: float = 1.0) -> SpikeFn:
    r"""Triangular surrogate (snnTorch ``surrogate.triangular``), as released in snnTorch 1.0.

    The released code computes ``grad = threshold * g`` and negates it where ``x >= 0``; it does
    not zero the gradient far from threshold. We follow that code exactly:

    .. math:: \frac{\partial S}{\partial x} = \begin{cases} \theta & x < 0 \\ -\theta & x \ge 0 \end{cases}
    """
    return custom(lambda x: jnp.where(x >= 0, -threshold, threshold))


def straight_through() -> SpikeFn:
    """Straight-through estimator: derivative 1 everywhere."""
    return custom(lambda x: jnp.ones_like(x))


_FACTORIES = {
    "fast_sigmoid": fast_sigmoid,
    "arctan": arctan,
    "atan": arctan,
    "triangle": triangle,
    "straight_through": straight_through,
}


def default_scale(name: str) -> float:
    """The factory's default slope/alpha/threshold (1.0 for ``straight_through``, which has none)."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown surrogate {name!r}; expected one of {sorted(_FACTORIES)}")
    params = list(inspect.signature(_FACTORIES[name]).parameters.values())
    return float(params[0].default) if params else 1.0


def make_surrogate(name: str, scale: float | None = None) -> SpikeFn:
    """Surrogate by name (config string); ``scale`` is slope/alpha/threshold when given."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown surrogate {name!r}; expected one of {sorted(_FACTORIES)}")
    factory = _FACTORIES[name]
    if name == "straight_through" or scale is None:
        return factory()
    return factory(float(scale))

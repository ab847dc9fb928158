r"""Leaky integrate-and-fire neurons as pure functions (snnTorch 1.0 ``snn.Leaky`` semantics).

Layout: time-major. A sequence of input currents is ``[T, *batch_shape]`` (e.g. ``[T, B, N]``
or ``[T, B, H, W, C]``); :func:`lif_scan` runs :func:`lif_step` over the leading axis with
``jax.lax.scan``.

One step, with :math:`U` the membrane, :math:`I` the input current, :math:`\theta` the threshold,
:math:`\beta \in [0, 1]` the decay (clipped as snnTorch does) and :math:`\Theta` the Heaviside step::

    R[t]   = Θ(U[t-1] − θ)                       reset from the *previous* membrane (no grad by default)
    subtract:  U[t] = β·U[t-1] + I[t] − R[t]·θ
    zero:      U[t] = β·(1 − R[t])·U[t-1] + I[t]
    none:      U[t] = β·U[t-1] + I[t]
    S[t]   = Θ(U[t] − θ)                          spike from the *new* membrane (surrogate grad)

i.e. integrate first, then fire; the reset a spike causes is applied at the next step. This is
``snn.Leaky(beta, threshold, reset_mechanism=..., reset_delay=True)`` of snnTorch 1.0
(``mem_reset`` is computed from the previous membrane and detached, then ``state_function`` and
``fire``). Spikes are exact 0/1 in the membrane dtype.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from spikepipe_jax.snn import surrogate as surrogate_lib

RESETS = ("subtract", "zero", "none")


def _check_reset(reset: str) -> None:
    if reset not in RESETS:
        raise ValueError(f"unknown reset {reset!r}; expected one of {RESETS}")


def _broadcasts_to(shape: tuple, target: tuple) -> bool:
    if len(shape) > len(target):
        return False
    return all(s in (1, t) for s, t in zip(shape[::-1], target[::-1]))


def lif_step(mem: jax.Array, current: jax.Array, *, beta, threshold=1.0, reset: str = "subtract",
             surrogate: Optional[surrogate_lib.SpikeFn] = None, reset_grad: bool = False
             ) -> tuple[jax.Array, jax.Array]:
    """One LIF update (see module docstring for the equations).

    Args:
      mem: previous membrane ``U[t-1]``, any shape.
      current: input current ``I[t]``, same shape as ``mem``.
      beta: decay, a scalar or an array broadcastable to ``mem`` (per-neuron), clipped to [0, 1];
        may be a learnable parameter (gradients flow through it).
      threshold: firing threshold θ (scalar or broadcastable array).
      reset: ``"subtract"`` (snnTorch default), ``"zero"`` or ``"none"``.
      surrogate: spike function with a surrogate derivative (default: ``arctan()``, the
        default of ``snn.Leaky``).
      reset_grad: if True, the reset term keeps its (surrogate) gradient; snnTorch detaches it.

    Returns:
      ``(mem, spk)``: the new membrane ``U[t]`` and the spikes ``S[t]``.
    """
    _check_reset(reset)
    spike_fn = surrogate if surrogate is not None else surrogate_lib.arctan()
    beta = jnp.clip(jnp.asarray(beta, mem.dtype), 0.0, 1.0)
    if reset == "none":
        new_mem = beta * mem + current
    else:
        shifted = mem - threshold
        r = spike_fn(shifted) if reset_grad else jax.lax.stop_gradient(surrogate_lib.heaviside(shifted))
        if reset == "subtract":
            new_mem = beta * mem + current - r * threshold
        else:
            new_mem = beta * (1.0 - r) * mem + current
    spk = spike_fn(new_mem - threshold)
    return new_mem, spk


def lif_scan(currents: jax.Array, *, beta, threshold=1.0, reset: str = "subtract",
             mem0: Optional[jax.Array] = None, surrogate: Optional[surrogate_lib.SpikeFn] = None,
             reset_grad: bool = False, remat: bool = False, bias: Optional[jax.Array] = None
             ) -> tuple[jax.Array, jax.Array]:
    """Runs :func:`lif_step` over the leading time axis with ``jax.lax.scan``.

    Args:
      currents: ``[T, ...]`` input currents.
      beta, threshold, reset, surrogate, reset_grad: as in :func:`lif_step`.
      mem0: initial membrane ``[...]`` (default zeros, as snnTorch's ``init_leaky``).
      remat: wrap the step in ``jax.checkpoint`` (recompute in the backward pass; memory for long
        T). It applies to the reverse-time scan (per-neuron beta, ``reset="zero"``,
        ``reset_grad``); the scalar-beta subtract/none path keeps only the membranes for its
        matrix BPTT, which is all a checkpointed step would keep, so it ignores ``remat``.
      bias: optional array broadcastable to ``currents.shape[1:]`` (e.g. a layer's ``[F]``
        bias), added to every step's current inside the loop: the same values as
        ``lif_scan(currents + bias)`` without a separate pass over ``[T, ...]`` (XLA does
        not fuse an add into a while loop's input); differentiable like ``currents``.

    Returns:
      ``(spk, mem)``, both ``[T, ...]``.
    """
    _check_reset(reset)
    if currents.ndim < 1 or currents.shape[0] < 1:
        raise ValueError(f"currents must have a leading time axis of length >= 1, got shape {currents.shape}")
    if mem0 is None:
        mem0 = jnp.zeros(currents.shape[1:], currents.dtype)
    if bias is None:
        bias = jnp.zeros((), currents.dtype)
    elif not _broadcasts_to(jnp.shape(bias), currents.shape[1:]):
        raise ValueError(f"bias of shape {jnp.shape(bias)} does not broadcast to one step's "
                         f"currents {currents.shape[1:]}")

    def step(mem, current, beta, bias):
        return lif_step(mem, current + bias, beta=beta, threshold=threshold, reset=reset,
                        surrogate=surrogate, reset_grad=reset_grad)

    def scan(currents, beta, mem0, bias):
        def body(mem, current):
            mem, spk = step(mem, current, beta, bias)
            return mem, (spk, mem)

        return jax.lax.scan(jax.checkpoint(body) if remat else body, mem0, currents)[1]

    def mem_loop(currents, beta, mem0, bias):
        # Membranes only, written over (a copy of) the currents as the loop consumes them: step
        # t reads slot t and writes U[t] back to it, so XLA updates the buffer in place and
        # needs neither a zero-filled output stack nor a second [T, ...] buffer.
        dtype = jnp.promote_types(mem0.dtype, currents.dtype)  # lif_step's membrane dtype

        def body(t, carry):
            mem, buf = carry
            mem, _ = step(mem, jax.lax.dynamic_index_in_dim(buf, t, keepdims=False), beta, bias)
            return mem, jax.lax.dynamic_update_index_in_dim(buf, mem, t, 0)

        carry = (mem0.astype(dtype), currents.astype(dtype))
        return jax.lax.fori_loop(0, currents.shape[0], body, carry)[1]

    if (reset in ("subtract", "none") and not reset_grad and jnp.ndim(beta) == 0
            and isinstance(threshold, (int, float))):
        # The loop emits only the membranes; the spikes are one elementwise pass after it (the
        # same values; through the surrogate, the same gradients): a loop step is then one
        # fused kernel plus one copy instead of three kernels (benchmarks/README.md section 5).
        spike_fn = surrogate if surrogate is not None else surrogate_lib.arctan()
        mem = _linear_backward_scan(mem_loop)(currents, jnp.asarray(beta), mem0,
                                              jnp.asarray(bias, currents.dtype))
        return spike_fn(mem - threshold), mem
    return scan(currents, beta, mem0, bias)


def _linear_backward_scan(mem_scan):
    r"""The membrane loop of ``lif_scan`` with its BPTT as one matrix product instead of a
    reverse-time loop (the spikes' surrogate term reaches it through ``\bar U_t``).

    With a detached reset and a scalar decay, the membrane recursion is linear in the past
    membrane, :math:`\partial U_t / \partial U_{t-1} = \beta` (subtract / none), so the adjoint
    :math:`\delta_t = \bar U_t + \bar S_t\,\sigma'(U_t-\theta) + \beta\,\delta_{t+1}` is a
    discounted reverse cumulative sum, :math:`\delta = M \ell` with :math:`M_{ts} = \beta^{s-t}`
    for :math:`s \ge t`: a ``[T, T] x [T, B·N]`` GEMM instead of T dependent elementwise steps.
    Then :math:`\partial L/\partial I_t = \delta_t`, :math:`\partial L/\partial\beta = \sum_t \delta_t
    U_{t-1}` (through the clip to [0, 1]), :math:`\partial L/\partial U_{-1} = \beta\,\delta_0` and
    :math:`\partial L/\partial b = \sum_t \delta_t` (summed over the axes ``b`` was broadcast along).
    Same values as differentiating the scan (tested against snnTorch and a NumPy BPTT).
    """

    @jax.custom_vjp
    def run(currents, beta, mem0, bias):
        return mem_scan(currents, beta, mem0, bias)

    def fwd(currents, beta, mem0, bias):
        mem = mem_scan(currents, beta, mem0, bias)
        return mem, (mem, beta, mem0, bias)

    def bwd(res, local):
        mem, beta, mem0, bias = res  # local: dL/dU_t from later uses of U_t (incl. S_t = σ(U_t − θ))
        b, clip_vjp = jax.vjp(lambda x: jnp.clip(x.astype(mem.dtype), 0.0, 1.0), beta)
        t = jnp.arange(mem.shape[0])
        lag = t[None, :] - t[:, None]  # [T, T]: s - t
        m = jnp.where(lag >= 0, b ** jnp.maximum(lag, 0).astype(mem.dtype), 0.0)
        # full f32 (no TF32 on GPUs): it replaces the exact f32 reverse-time recurrence
        delta = jnp.matmul(m, local.reshape(mem.shape[0], -1),
                           precision=jax.lax.Precision.HIGHEST).reshape(mem.shape)
        prev = jnp.concatenate([mem0[None], mem[:-1]], axis=0)  # U_{t-1}
        (d_beta,) = clip_vjp(jnp.sum(delta * prev).astype(mem.dtype))
        # d bias: delta summed over time and the axes the bias was broadcast along
        lead = delta.ndim - bias.ndim
        axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(bias.shape) if s == 1)
        d_bias = jnp.sum(delta, axis=axes).reshape(bias.shape)
        return delta, d_beta.astype(beta.dtype), b * delta[0], d_bias.astype(bias.dtype)

    run.defvjp(fwd, bwd)
    return run

r"""Mapping SNN training onto a systolic array: tasks F_l, B_l, W_l with cycles and bytes.

Per weight layer ``l`` (a :class:`spikepipe_jax.spec.LayerInfo`), batch ``B`` and ``T`` time
steps, with ``P_l`` output pixels of the op (``Ho * Wo``; 1 for dense), ``K_l`` its fan-in
(``k*k*C`` or input features), ``F_l`` its features and ``n_l`` its LIF neurons (after pooling):

* ``F_l`` forward. The inputs of the layer are spikes already known for all ``T`` steps (or the
  encoded input), and the synapses have no recurrence, so time folds into the GEMM rows:
  ``M = B*T*P_l, K = K_l, N = F_l`` (im2col of the zero-padded input for conv). Then, on the
  vector unit, each pooling of the currents (one update per pooled input element) and the LIF
  forward recurrence, sequential in ``t`` and elementwise across ``B * n_l`` neurons.
* ``B_l`` activation gradient. On the vector unit, the LIF backward recurrence in reverse time
  (surrogate derivative, membrane-gradient carry), then the backward of each pooling
  (unpooling the current gradients to the op shape). Then, for ``l >= 1``, the input-gradient
  GEMM with ``W_l^T``: dense ``M = B*T, K = F_l, N = K_l``; conv: the transposed convolution,
  computed as a direct convolution of the zero-dilated (by the stride) and zero-padded (by
  ``k - 1 - p``) output gradient with the spatially flipped kernel whose in/out channels are
  swapped, i.e. the GEMM ``M = B*T*H*W`` (input pixels), ``K = k*k*F_l``, ``N = C`` (input
  channels). ``B_0`` has no GEMM (nothing below needs a gradient), only its vector part.
* ``W_l`` weight gradient: ``dW[K_l, F_l] = X^T dY``, the GEMM ``M = K_l, K = B*T*P_l, N = F_l``
  (reduction over batch, time and output pixels).

Vector unit model: ``V`` lanes (``vector_lanes``; 0 means ``V = cols``, one lane per array
column), each lane doing one elementwise update per cycle. A sequential recurrence over ``T``
steps of ``E`` elements costs ``T * ceil(E / V)`` cycles; a parallel pass over ``E`` elements
costs ``ceil(E / V)``. So

.. math::
   \text{vec}(F_l) = \sum_{\text{pools}} \lceil B T E_\text{pool\,in} / V \rceil
                     + T \lceil B n_l / V \rceil ,\qquad
   \text{vec}(B_l) = T \lceil B n_l / V \rceil
                     + \sum_{\text{pools}} \lceil B T E_\text{pool\,in} / V \rceil ,

and ``vec(W_l) = 0``. A task's ``cycles`` is ``gemm_cycles + vector_cycles`` (the array and the
vector unit do not overlap within a task). GEMM cycles are SCALE-Sim 3.0.0's (see
:mod:`spikepipe_jax.hardware.systolic`).

``macs`` counts useful multiply-accumulates, the ones whose operands are not padding or dilation
zeros: for dense ``B*T*K_l*F_l``; for conv ``B*T*C*F_l*V_h*V_w`` with ``V_h`` the number of
(output row, kernel row) pairs that land inside the unpadded input (``V_w`` likewise). It is the
same for ``F_l``, ``B_l`` and ``W_l`` (every forward product appears once in each gradient) and
is exactly what XLA's cost analysis counts (2 FLOPs per MAC) for the layer's
``lax.conv_general_dilated``/matmul and their VJPs. The GEMM shape ``m*k*n`` also counts the
zeros the array multiplies (padding, transposed-conv dilation), so ``macs <= m*k*n``.

Bytes (``ceil(bits / 8)`` of each tensor; spikes at ``spike_bits``, everything else at
``float_bits``; the network input at ``input_bits``, by default ``spike_bits``):

* ``F_l``: in = input spikes ``B*T*in_size``; weights = ``w`` and ``b``; out = output spikes and
  the membrane potentials saved for ``B_l`` (``B*T*n_l`` each), plus for max pooling a 1-bit
  argmax mask per pooling input element.
* ``B_l``: in = gradient w.r.t. the layer's spikes and the saved membranes (``B*T*n_l`` floats
  each) plus the max-pool masks; weights = ``w`` (``l >= 1``); out = gradient w.r.t. the op
  output (``B*T*op_size`` floats, consumed by ``W_l``) and, for ``l >= 1``, w.r.t. the layer
  input (``B*T*in_size`` floats, consumed by ``B_{l-1}``).
* ``W_l``: in = input spikes and the op-output gradient; weights = 0; out = ``dW`` and ``db``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from spikepipe_jax.hardware.systolic import DATAFLOWS, positive_int, dataflow_code, gemm_cost_exact
from spikepipe_jax.spec import LayerInfo, parse_spec


def _nbytes(count: int, bits: int) -> int:
    return -(-count * bits // 8)


def _valid_taps(size: int, kernel: int, stride: int, padding: int) -> int:
    """Number of (output index, kernel index) pairs reading inside an unpadded input of ``size``."""
    out = (size + 2 * padding - kernel) // stride + 1
    total = 0
    for o in range(out):
        start = o * stride - padding
        total += max(0, min(size, start + kernel) - max(0, start))
    return total


def useful_macs_per_sample(info: LayerInfo) -> int:
    """MACs per sample and time step whose operands are not padding zeros (XLA's count)."""
    if info.kind == "dense":
        return info.fan_in * info.features
    h, w, c = info.in_shape
    vh = _valid_taps(h, info.kernel, info.stride, info.padding)
    vw = _valid_taps(w, info.kernel, info.stride, info.padding)
    return vh * vw * c * info.features


def layer_gemms(info: LayerInfo, batch: int, num_steps: int) -> dict[str, tuple[int, int, int] | None]:
    """GEMM shapes ``(m, k, n)`` of the layer's F, B and W tasks (``B`` is None for layer 0)."""
    bt = batch * num_steps
    fwd = (bt * info.out_pixels, info.fan_in, info.features)
    if info.index == 0:
        bwd = None
    elif info.kind == "dense":
        bwd = (bt, info.features, info.fan_in)
    else:
        h, w, c = info.in_shape
        bwd = (bt * h * w, info.kernel * info.kernel * info.features, c)
    wgt = (info.fan_in, bt * info.out_pixels, info.features)
    return {"F": fwd, "B": bwd, "W": wgt}


def _pool_inputs(info: LayerInfo) -> list[int]:
    """Elements per sample entering each pooling of the layer, in order."""
    sizes, shape = [], tuple(info.op_shape)
    for p in info.pools:
        sizes.append(math.prod(shape))
        shape = (shape[0] // p.window, shape[1] // p.window, shape[2])
    return sizes


def vector_work(info: LayerInfo, kind: str, batch: int, num_steps: int) -> list[tuple[int, int]]:
    """Elementwise work of the layer's task ``kind`` as ``(sequential steps, elements)`` terms.

    A term ``(s, e)`` costs ``s * ceil(e / V)`` cycles on ``V`` lanes: the LIF recurrence is
    ``(T, B * n_l)``, each pooling (forward or backward) ``(1, B * T * pool input size)``.
    """
    if kind == "W":
        return []
    terms = [(num_steps, batch * info.num_neurons)]
    terms += [(1, batch * num_steps * e) for e in _pool_inputs(info)]
    return terms


def vector_cycles(info: LayerInfo, kind: str, batch: int, num_steps: int, lanes: int) -> int:
    """Vector-unit cycles of the layer's task ``kind`` on ``lanes`` lanes (module docstring)."""
    return sum(s * -(-e // lanes) for s, e in vector_work(info, kind, batch, num_steps))


def _validate(infos, batch, num_steps, rows, cols, dataflow, spike_bits, float_bits,
              vector_lanes, input_bits) -> tuple[int, ...]:
    """Checks the arguments of :func:`training_tasks`; returns ``(code, lanes, batch, num_steps,
    rows, cols, spike_bits, float_bits, input_bits)`` as Python ints (``input_bits`` filled in)."""
    if len(infos) == 0:
        raise ValueError("infos is empty: need at least one weight layer")
    for i, info in enumerate(infos):
        if not isinstance(info, LayerInfo):
            raise ValueError(f"infos[{i}] must be a spec.LayerInfo, got {type(info).__name__}")
    sizes = [positive_int(name, v) for name, v in (
        ("batch", batch), ("num_steps", num_steps), ("rows", rows), ("cols", cols),
        ("spike_bits", spike_bits), ("float_bits", float_bits))]
    in_bits = sizes[4] if input_bits is None else positive_int("input_bits", input_bits)
    if isinstance(vector_lanes, bool) or not isinstance(vector_lanes, int) or vector_lanes < 0:
        raise ValueError(f"vector_lanes must be a non-negative integer (0 = cols), got {vector_lanes!r}")
    return (dataflow_code(dataflow), vector_lanes or sizes[3], *sizes, in_bits)


def training_tasks(infos: Sequence[LayerInfo], *, batch: int, num_steps: int, rows: int,
                   cols: int, dataflow: str, spike_bits: int = 1, float_bits: int = 32,
                   vector_lanes: int = 0, input_bits: int | None = None) -> list[dict[str, Any]]:
    """Training tasks of one iteration with their GEMM shapes, cycles, MACs and bytes.

    Args:
      infos: weight layers from :func:`spikepipe_jax.spec.parse_spec`.
      batch: batch size B.
      num_steps: time steps T.
      rows, cols: systolic array R x C.
      dataflow: ``"os"``, ``"ws"`` or ``"is"`` (all GEMMs).
      spike_bits: bits per spike (1, or 8 for one byte).
      float_bits: bits per membrane potential, gradient, weight.
      vector_lanes: lanes of the vector unit; 0 means ``cols``.
      input_bits: bits per element of the network input (layer 0's input); None means
        ``spike_bits`` (use ``float_bits`` for direct/analog input coding).

    Returns:
      ``[F_0..F_{L-1}, B_{L-1}..B_0, W_0..W_{L-1}]``, each a dict of plain Python values:
      ``name`` ("F0", "B3", ...), ``layer``, ``kind`` ("F"|"B"|"W"), ``cycles`` (=
      ``gemm_cycles + vector_cycles``), ``gemm_cycles``, ``vector_cycles``, ``macs`` (useful
      MACs of the GEMM, 0 without one), ``gemm`` (``{"m", "k", "n"}`` or None), ``bytes_in``,
      ``bytes_out``, ``bytes_weights``, ``batch`` (B) and ``num_steps`` (T). For B tasks
      ``vector_cycles`` is the LIF (and unpool) backward, run first, and ``gemm_cycles`` the
      input-gradient GEMM.

    Raises:
      ValueError: naming the bad argument (non-positive sizes, unknown dataflow, ...).
    """
    (code, lanes, batch, num_steps, rows, cols, spike_bits, float_bits,
     in_bits0) = _validate(infos, batch, num_steps, rows, cols, dataflow, spike_bits, float_bits,
                           vector_lanes, input_bits)
    df = DATAFLOWS[code]
    bt = batch * num_steps

    def make(info: LayerInfo, kind: str) -> dict[str, Any]:
        l = info.index
        shape = layer_gemms(info, batch, num_steps)[kind]
        if shape is None:
            gemm, g_cycles, macs = None, 0, 0
        else:
            gemm = dict(zip("mkn", (int(s) for s in shape)))
            g_cycles = int(gemm_cost_exact(*shape, rows, cols, df).cycles)
            macs = bt * useful_macs_per_sample(info)
        v_cycles = vector_cycles(info, kind, batch, num_steps, lanes)
        in_bits = in_bits0 if l == 0 else spike_bits
        op_size = math.prod(info.op_shape)
        n_out = info.num_neurons
        masks = sum(_nbytes(bt * e, 1) for p, e in zip(info.pools, _pool_inputs(info))
                    if p.kind == "maxpool")
        w_bytes = _nbytes(info.num_weights, float_bits)
        wb_bytes = _nbytes(info.num_weights + info.features, float_bits)
        spikes_in = _nbytes(bt * info.in_size, in_bits)
        grad_op = _nbytes(bt * op_size, float_bits)
        if kind == "F":
            b_in, b_w = spikes_in, wb_bytes
            b_out = _nbytes(bt * n_out, spike_bits) + _nbytes(bt * n_out, float_bits) + masks
        elif kind == "B":
            b_in = 2 * _nbytes(bt * n_out, float_bits) + masks
            b_w = w_bytes if l > 0 else 0
            b_out = grad_op + (_nbytes(bt * info.in_size, float_bits) if l > 0 else 0)
        else:
            b_in, b_w, b_out = spikes_in + grad_op, 0, wb_bytes
        return {"name": f"{kind}{l}", "layer": int(l), "kind": kind,
                "cycles": int(g_cycles + v_cycles), "gemm_cycles": int(g_cycles),
                "vector_cycles": int(v_cycles), "macs": int(macs), "gemm": gemm,
                "bytes_in": int(b_in), "bytes_out": int(b_out), "bytes_weights": int(b_w),
                "batch": int(batch), "num_steps": int(num_steps)}

    order = ([(i, "F") for i in infos] + [(i, "B") for i in reversed(infos)]
             + [(i, "W") for i in infos])
    return [make(info, kind) for info, kind in order]


def training_tasks_from_config(config: Any, **overrides: Any) -> list[dict[str, Any]]:
    """:func:`training_tasks` for a network config (``configs/<net>.py``).

    Reads ``config.model.layers/input_shape/num_steps``, ``config.train.batch_size`` and
    ``config.hardware.rows/cols/dataflow/spike_bits/float_bits/vector_lanes``; the network input
    is costed at ``float_bits`` when ``config.data.encoding == "direct"`` (analog input), else at
    ``spike_bits``. Keyword ``overrides`` (any argument of :func:`training_tasks` except
    ``infos``) take precedence.
    """
    hw = config.hardware
    infos = parse_spec(config.model.layers, config.model.input_shape)
    kwargs: dict[str, Any] = dict(
        batch=config.train.batch_size, num_steps=config.model.num_steps, rows=hw.rows,
        cols=hw.cols, dataflow=hw.dataflow, spike_bits=hw.spike_bits, float_bits=hw.float_bits,
        vector_lanes=hw.vector_lanes)
    unknown = set(overrides) - set(kwargs) - {"input_bits"}
    if unknown:
        raise ValueError(f"unknown override(s) {sorted(unknown)}; expected some of "
                         f"{sorted(kwargs) + ['input_bits']}")
    kwargs.update(overrides)
    if "input_bits" not in overrides:
        encoding = getattr(getattr(config, "data", None), "encoding", "rate")
        kwargs["input_bits"] = kwargs["float_bits"] if encoding == "direct" else kwargs["spike_bits"]
    return training_tasks(infos, **kwargs)

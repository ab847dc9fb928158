r"""Communication between processors: transfer times and bytes moved per iteration.

**Link model** (:class:`CommModel`): processors are connected by links of
``link_bytes_per_cycle`` bytes per cycle and ``link_latency_cycles`` start-up latency.  Sending
``b`` bytes from one processor to another takes

.. math:: t_{\mathrm{comm}}(b) = \lambda + \lceil b / \beta \rceil

cycles (0 on the same processor; ``link_bytes_per_cycle = 0`` means an ideal link, 0 cycles).
Transfers delay the consumer (they enter every precedence constraint between processors) but do
not occupy the processors: a DMA engine moves data while the array computes, as in PipeDream.

**Bytes communicated** (:func:`bytes_communicated`), per iteration of a schedule: for every edge
``u -> v`` whose tasks run on different processors, the edge's ``bytes`` cross from
``proc(u)`` to ``proc(v)``.  Edges out of one task with the same non-empty ``tag`` carry the same
tensor (e.g. the spikes of layer l go both to ``F_{l+1}`` and to ``W_{l+1}``), so they are sent
once per destination processor (the largest of them); untagged edges each count.  For a training
graph built by ``graph_from_tasks`` this counts: activations as spikes (``spikes<l>``),
membrane potentials and deltas (``membranes<l>``, ``delta<l>``) where a layer's forward and
backward tasks are on different processors, gradients between layers (``grad<l>``), and the
updated weights (``weights<l>``) where a layer's weight update is not on the processor of its
forward (or input-gradient) task, including the pieces of split tasks, and the partial weight
gradients of a W task split by batch (``wgrad<l>``) and the partial GEMM outputs of an F or BG
task split by its reduction dimension (``psum<l>``) where a piece is not on its sum's processor.

**All bytes that training moves** (:func:`training_bytes`): the cost model's per-task memory
traffic, :math:`\sum_{\text{tasks}} (\text{bytes\_in} + \text{bytes\_out} + \text{bytes\_weights})`
(each task reads its operands and weights and writes its result once per iteration); for a graph
without those numbers, the sum of the edge bytes.  Communication overheads are given as a
percentage of this total.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

from spikepipe_jax.schedule.graph import TaskGraph


@dataclasses.dataclass(frozen=True)
class CommModel:
    """Inter-processor link: bandwidth (bytes/cycle, 0 = ideal) and latency (cycles)."""

    link_bytes_per_cycle: float = 0.0
    link_latency_cycles: int = 0

    def __post_init__(self):
        bw = self.link_bytes_per_cycle
        if not isinstance(bw, (int, float)) or isinstance(bw, bool) or not math.isfinite(bw) or bw < 0:
            raise ValueError(f"link_bytes_per_cycle must be a finite number >= 0, got {bw!r}")
        if isinstance(self.link_latency_cycles, bool) or not isinstance(self.link_latency_cycles, int) \
                or self.link_latency_cycles < 0:
            raise ValueError(f"link_latency_cycles must be an integer >= 0, got {self.link_latency_cycles!r}")

    def transfer_cycles(self, nbytes: int) -> int:
        """Cycles to move ``nbytes`` between two different processors."""
        if self.link_bytes_per_cycle <= 0:
            return self.link_latency_cycles
        return self.link_latency_cycles + math.ceil(nbytes / self.link_bytes_per_cycle)

    def to_json(self) -> dict:
        return {"link_bytes_per_cycle": self.link_bytes_per_cycle,
                "link_latency_cycles": self.link_latency_cycles}


def bytes_communicated(g: TaskGraph, processor_of: Mapping[str, int]) -> int:
    """Bytes crossing processors per iteration (definition in the module docstring)."""
    groups: dict[tuple[str, str, int], int] = {}
    total = 0
    for e in g.edges:
        if e.src == e.dst:
            continue
        p, q = processor_of[e.src], processor_of[e.dst]
        if p == q:
            continue
        if e.tag:
            key = (e.src, e.tag, q)
            groups[key] = max(groups.get(key, 0), e.bytes)
        else:
            total += e.bytes
    return total + sum(groups.values())


def bytes_by_tensor(g: TaskGraph, processor_of: Mapping[str, int]) -> dict[str, int]:
    """:func:`bytes_communicated` split by tensor: the tag without its layer number and block
    suffix (``"spikes"``, ``"grad"``, ``"membranes"``, ``"delta"``, ``"weights"``, ``"wgrad"``,
    ``"psum"``; ``""`` for untagged edges)."""
    groups: dict[tuple[str, str, int], int] = {}
    out: dict[str, int] = {}
    for e in g.edges:
        if e.src == e.dst or processor_of[e.src] == processor_of[e.dst]:
            continue
        kind = e.tag.split(">")[0].rstrip("0123456789")
        if e.tag:
            key = (e.src, e.tag, processor_of[e.dst])
            groups[key] = max(groups.get(key, 0), e.bytes)
        else:
            out[kind] = out.get(kind, 0) + e.bytes
    for (_, tag, _), b in groups.items():
        kind = tag.split(">")[0].rstrip("0123456789")
        out[kind] = out.get(kind, 0) + b
    return out


def training_bytes(g: TaskGraph) -> int:
    """All bytes training moves per iteration (module docstring); >= 1."""
    tot = sum(t.bytes_in + t.bytes_out + t.bytes_weights for t in g.tasks)
    if tot == 0:
        tot = sum(e.bytes for e in g.edges)
    return max(1, tot)


__all__ = ["CommModel", "bytes_communicated", "bytes_by_tensor", "training_bytes"]

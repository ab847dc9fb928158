"""Random task graphs and a hand-made training task list, for tests, docs and benchmarks.

Pure Python; every generator is deterministic given its seed (``random.Random(seed)``).
"""

from __future__ import annotations

import random
from typing import Any

from spikepipe_jax.schedule.graph import Edge, Task, TaskGraph


def random_graph(seed: int, num_tasks: int, *, max_out_degree: int = 3, window: int = 20,
                 back_edges: int = 0, max_distance: int = 3,
                 duration_range: tuple[int, int] = (1, 100),
                 bytes_range: tuple[int, int] = (0, 0)) -> TaskGraph:
    """Random task graph: a random DAG of distance-0 edges plus loop-carried back edges.

    Tasks are ``t0 .. t{n-1}``; task i gets 0..``max_out_degree`` distance-0 successors among the
    next ``window`` tasks; ``back_edges`` edges go from a task to one with a lower or equal index
    with distance 1..``max_distance`` (loops).  Uses ``random.Random(seed)``.
    """
    if num_tasks <= 0:
        raise ValueError(f"num_tasks must be positive, got {num_tasks}")
    rng = random.Random(seed)
    lo, hi = duration_range
    blo, bhi = bytes_range
    tasks = tuple(Task(f"t{i}", rng.randint(lo, hi)) for i in range(num_tasks))
    edges = []
    for i in range(num_tasks - 1):
        cand = range(i + 1, min(num_tasks, i + 1 + window))
        for j in rng.sample(cand, min(len(cand), rng.randint(0, max_out_degree))):
            edges.append(Edge(f"t{i}", f"t{j}", 0, rng.randint(blo, bhi)))
    for _ in range(back_edges):
        i = rng.randrange(0, num_tasks)
        j = rng.randrange(max(0, i - window), i + 1)
        edges.append(Edge(f"t{i}", f"t{j}", rng.randint(1, max_distance), rng.randint(blo, bhi)))
    return TaskGraph(tasks, tuple(edges))


def toy_training_tasks(num_layers: int = 3, *, seed: int = 0, scale: int = 1000) -> list[dict[str, Any]]:
    """Hand-made task list in the cost model's format (for tests and docs; not a cost model).

    Layer l gets random GEMM sizes; cycles are ``m*k*n / scale`` plus a vector part.
    """
    rng = random.Random(seed)
    out_f, out_b, out_w = [], [], []
    for l in range(num_layers):
        m, k, n = rng.choice([64, 128, 256]), rng.choice([64, 256, 1024]), rng.choice([16, 64, 256])
        gem = max(1, m * k * n // scale)
        vec = max(1, m * n // 50)
        spikes = m * n // 8
        wbytes = k * n * 4
        out_f.append(dict(name=f"F{l}", layer=l, kind="F", cycles=gem + vec, gemm_cycles=gem,
                          vector_cycles=vec, macs=m * k * n, gemm=dict(m=m, k=k, n=n),
                          bytes_in=m * k // 8, bytes_out=spikes, bytes_weights=wbytes))
        bg = gem if l > 0 else 0
        out_b.append(dict(name=f"B{l}", layer=l, kind="B", cycles=bg + 2 * vec, gemm_cycles=bg,
                          vector_cycles=2 * vec, macs=m * k * n if l else 0,
                          gemm=dict(m=m, k=n, n=k) if l else None, bytes_in=m * n * 8,
                          bytes_out=m * k * 4 if l else 0, bytes_weights=wbytes if l else 0))
        out_w.append(dict(name=f"W{l}", layer=l, kind="W", cycles=gem + n, gemm_cycles=gem,
                          vector_cycles=n, macs=m * k * n, gemm=dict(m=k, k=m, n=n),
                          bytes_in=m * k // 8 + m * n * 4, bytes_out=wbytes, bytes_weights=wbytes))
    return out_f + out_b[::-1] + out_w


__all__ = ["random_graph", "toy_training_tasks"]

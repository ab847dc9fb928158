"""Speed and quality of the pure-Python SpikePipe scheduler on large random task graphs.

Command:  python -m benchmarks.scheduler [--tasks=1000] [--processors=64] [--repeats=3]
Prints one JSON line per graph family: the wall time of ``modulo_schedule`` (bounds included,
median of repeats, one core), the period, the lower bound and their ratio, the share of tasks on
loops and the winning phase.  Families (``graph.random_graph`` with 1000 tasks, 0-3 local
successors each within a window of 30, durations 1..100, seed 2024, unless said otherwise):

* ``acyclic``: no loop-carried edges;
* ``loops_300``: 300 back edges of distance 1..3 (a few small loops);
* ``loops_300_bytes``: as loops_300 with 0..4096 bytes per edge and a 64 B/cycle link
  (transfer times also constrain the loops, and the bytes moved are reduced at the end);
* ``loops_1000``: 1000 back edges (about 3/4 of the tasks on loops);
* ``loops_3000``: 3000 back edges (almost every task on a loop);
* ``training_995``: a 50-layer toy training graph (``graph.toy_training_tasks``, LayerPipe2
  delays, B split into LIF/GEMM, every F/BL/BG/W task cut into 5 pieces: 995 tasks, 6145
  edges), ideal links.

Goal: <= 2 s per graph on 64 processors.

With ``--quality`` (default on) it also prints the list scheduler's quality on many smaller
random graphs given as JSON (``{"quality": ...}``: mean and max of period / lower bound over
``--quality_graphs`` graphs of 5..120 tasks on P in {2, 3, 4, 6, 8, 16}, local-window and
Erdos-Renyi-like families with 0..n/4 back edges) and, on graphs small enough for the exact
branch and bound (3..9 tasks, durations 1..9, 0..6 back edges, P in {1, 2, 3}), its gap to the
optimum
(``{"exact_gap": ...}``).
"""

from __future__ import annotations

import json
import statistics
import time

from absl import app, flags

flags.DEFINE_integer("tasks", 1000, "Tasks per graph.")
flags.DEFINE_integer("processors", 64, "Processors P.")
flags.DEFINE_integer("repeats", 3, "Timed repeats (median reported).")
flags.DEFINE_integer("seed", 2024, "Graph seed.")
flags.DEFINE_bool("quality", True, "Also measure period / lower bound and the gap to the optimum.")
flags.DEFINE_integer("quality_graphs", 200, "Random graphs for the quality measurement.")
FLAGS = flags.FLAGS


def run(tasks: int, processors: int, repeats: int, seed: int) -> list[dict]:
    from spikepipe_jax.schedule import CommModel, lower_bound, modulo_schedule, random_graph, validate

    from spikepipe_jax.schedule import graph_from_tasks, layerpipe_delays, toy_training_tasks

    def training() -> object:
        layers = 50
        tasks = toy_training_tasks(layers, seed=1)
        plan = {f"{k}{l}": 5 for l in range(layers) for k in ("F", "W", "BL", "BG")
                if not (k == "BG" and l == 0)}
        return graph_from_tasks(tasks, delays=layerpipe_delays(layers), split_backward=True,
                                split=plan)

    families = {
        "acyclic": (lambda: random_graph(seed, tasks, window=30), CommModel()),
        "loops_300": (lambda: random_graph(seed, tasks, window=30, back_edges=300), CommModel()),
        "loops_300_bytes": (lambda: random_graph(seed, tasks, window=30, back_edges=300,
                                                 bytes_range=(0, 4096)), CommModel(64, 0)),
        "loops_1000": (lambda: random_graph(seed, tasks, window=30, back_edges=1000), CommModel()),
        "loops_3000": (lambda: random_graph(seed, tasks, window=30, back_edges=3000), CommModel()),
        "training_995": (training, CommModel()),
    }
    out = []
    for name, (make, comm) in families.items():
        g = make()
        times, s = [], None
        for _ in range(repeats):
            t = time.perf_counter()
            s = modulo_schedule(g, processors, comm=comm)
            times.append(time.perf_counter() - t)
        validate(s)
        lb = lower_bound(g, processors)
        out.append({"family": name, "tasks": len(g.tasks), "edges": len(g.edges), "processors": processors,
                    "seconds": round(statistics.median(times), 3), "period": s.period,
                    "lower_bound": lb, "ratio": round(s.period / lb, 4), "phase": s.info["phase"],
                    "on_loops": round(_loop_share(g), 3),
                    "within_2s": statistics.median(times) <= 2.0})
    return out


def quality(num_graphs: int) -> list[dict]:
    """Period / lower bound on random JSON graphs, and the gap to the exact optimum."""
    import json as _json
    import random

    from spikepipe_jax.schedule import (exact_schedule, graph_from_json, graph_to_json, lower_bound,
                                        modulo_schedule, random_graph, validate)

    rows = []
    for fam, window in (("local", 20), ("erdos_renyi", 10 ** 6)):
        ratios = []
        t0 = time.perf_counter()
        for seed in range(num_graphs // 2):
            rng = random.Random(seed)
            n = rng.randint(5, 120)
            procs = rng.choice([2, 3, 4, 6, 8, 16])
            g = random_graph(seed, n, window=min(window, n), max_out_degree=3 if window < n else 6,
                             back_edges=rng.randint(0, n // 4), max_distance=rng.randint(1, 4))
            g = graph_from_json(_json.loads(_json.dumps(graph_to_json(g))))
            s = modulo_schedule(g, procs)
            validate(s)
            ratios.append(s.period / lower_bound(g, procs))
        rows.append({"quality": fam, "graphs": len(ratios), "mean_period_over_lb": round(statistics.mean(ratios), 4),
                     "max_period_over_lb": round(max(ratios), 4),
                     "share_at_lb": round(sum(r == 1 for r in ratios) / len(ratios), 3),
                     "seconds": round(time.perf_counter() - t0, 2)})
    gaps, at_opt = [], 0
    for seed in range(num_graphs // 2):
        rng = random.Random(10_000 + seed)
        g = random_graph(seed, rng.randint(3, 9), back_edges=rng.randint(0, 6), window=5,
                         max_distance=2, duration_range=(1, 9))
        procs = rng.choice([1, 2, 3])
        opt = exact_schedule(g, procs)
        heur = modulo_schedule(g, procs)
        gaps.append(heur.period / opt.period)
        at_opt += heur.period == opt.period
    rows.append({"exact_gap": "list / optimum", "graphs": len(gaps), "mean": round(statistics.mean(gaps), 4),
                 "max": round(max(gaps), 4), "share_optimal": round(at_opt / len(gaps), 3)})
    return rows


def _loop_share(g) -> float:
    from spikepipe_jax.schedule import CommModel
    from spikepipe_jax.schedule.indexed import IndexedGraph
    prep = IndexedGraph(g, CommModel())
    return sum(prep.in_loop) / max(1, prep.n)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
    for row in run(FLAGS.tasks, FLAGS.processors, FLAGS.repeats, FLAGS.seed):
        print(json.dumps(row), flush=True)
    if FLAGS.quality:
        for row in quality(FLAGS.quality_graphs):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    app.run(main)

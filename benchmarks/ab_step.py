"""A/B timing of spikepipe_jax's training step between checkouts (or XLA flag sets).

    git worktree add /tmp/base <commit>
    .venv/bin/python -m benchmarks.ab_step --nets=fc_small --steps=160 --rounds=16 /tmp/base .
    .venv/bin/python -m benchmarks.ab_step --nets=conv_medium --steps=32 --rounds=8 . '.|--xla_cpu_use_xnnpack=false'

Each argument is a source tree (a checkout of this repository), optionally followed by ``|``
and an ``XLA_FLAGS`` value for it. One worker process per argument builds the step of
``benchmarks/train_step.py`` (``make_spikepipe_step``: B=128, the config's T, rate-coded
random input, configuring the allocator in-process as that tree does) from *its* tree and stays
alive; the driver then asks the workers in turn, in ``--rounds`` rounds with the order reversed
every other round, to time their share of ``--steps`` steps (the flags of
``benchmarks/train_step.py``; only the first of ``--nets`` is used). So other load on a shared machine falls on
all variants alike, which single runs one after another do not give. Prints the median and
the fastest step per variant (the numbers of ``benchmarks/README.md`` section 5 were measured
this way).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

from benchmarks import train_step
from spikepipe_jax.experiments import exit_with_error

FLAGS = flags.FLAGS  # --nets, --steps, --rounds, --settle_s: defined by benchmarks.train_step

_WORKER = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from benchmarks import train_step as bt
step, info = bt.make_spikepipe_step(bt.net_spec(sys.argv[2], 128, 0, {}))
for _ in range(3):
    step()
print(json.dumps(info), flush=True)
for line in sys.stdin:
    times = []
    for _ in range(int(line)):
        t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
    print(json.dumps(times), flush=True)
"""


def _start(variant: str, net: str) -> subprocess.Popen:
    tree, _, xla_flags = variant.partition("|")
    tree = os.path.abspath(tree)
    if not os.path.isfile(os.path.join(tree, "benchmarks", "train_step.py")):
        raise ValueError(f"{tree!r} is not a checkout of this repository (no benchmarks/train_step.py)")
    env = dict(os.environ)
    if xla_flags:
        env["XLA_FLAGS"] = xla_flags
    return subprocess.Popen([sys.executable, "-c", _WORKER, tree, net], cwd=tree, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def main(argv):
    variants = argv[1:]
    if not variants:
        raise app.UsageError("give one or more source trees (optionally 'tree|XLA_FLAGS')")
    net = FLAGS.nets[0]
    try:
        workers = [_start(v, net) for v in variants]
    except ValueError as e:
        exit_with_error(e)
    try:
        for v, w in zip(variants, workers):
            line = w.stdout.readline()
            if not line:
                raise RuntimeError(f"worker for {v!r} failed to build the step")
            print(v, line.strip(), flush=True)
        times = {v: [] for v in variants}
        for r, steps in enumerate(train_step._split(FLAGS.steps, FLAGS.rounds)):
            for v, w in (list(zip(variants, workers)) if r % 2 == 0 else list(zip(variants, workers))[::-1]):
                time.sleep(FLAGS.settle_s)  # the other worker's threads go idle (see train_step)
                w.stdin.write(f"{steps}\n")
                w.stdin.flush()
                times[v] += json.loads(w.stdout.readline())
    finally:
        for w in workers:
            w.kill()
    for v in variants:
        print(f"{v:40s} median {statistics.median(times[v]) * 1e3:8.2f} ms   fastest {min(times[v]) * 1e3:8.2f} ms"
              f"   ({len(times[v])} steps)")


if __name__ == "__main__":
    app.run(main)

"""One process of a 2-process SpikePipe task-executor run (``jax.distributed``, TCP messages).

``python -m tests.task_executor_procs PID PORT PHASE DIR NET STEPS SAVE_AT`` with
``XLA_FLAGS=--xla_force_host_platform_device_count=D`` in each process: the schedule has one
processor per device of both processes (2 D). ``PHASE``:

* ``full``: runs STEPS mini-batches, saving after SAVE_AT (each process its own file in
  ``DIR/ck``; the run goes on with the state ``save`` returns), and the drain;
* ``resume``: new processes restore from ``DIR/ck`` and run the rest and the drain.

Process 0 writes the parameters (``DIR/<phase>.npz``, gathered from both processes), the
per-iteration ``[loss, correct]`` it reported and the bytes each process sent.
"""

from __future__ import annotations

import json
import os
import sys


def main(pid: int, port: int, phase: str, out: str, net: str, steps: int, save_at: int) -> None:
    from spikepipe_jax import runtime
    runtime.initialize_distributed(f"localhost:{port}", 2, pid)
    import jax
    import numpy as np

    from spikepipe_jax.train import task_executor, transport
    from tests.test_task_executor import _setup

    processors = jax.device_count()
    cfg, model, tx, encode, xs, ys, params = _setup(net, processors, steps)
    sched, delays = task_executor.config_schedule(cfg, processors)
    ex = task_executor.TaskExecutor(model, sched, delays, tx, loss_name=cfg.train.loss, num_classes=10,
                                    encode_fn=encode, devices=jax.devices(), batch_size=cfg.train.batch_size,
                                    num_steps=cfg.model.num_steps, input_shape=cfg.model.input_shape,
                                    transport_factory=transport.for_jax_distributed)
    key, ck = jax.random.key(2), os.path.join(out, "ck")
    st, start, mets = ex.init(params), 0, []
    if phase == "resume":
        st, _ = ex.restore_latest(ck, st, warn=print)
        start = st["fed"]
    for k in range(start, steps):
        st, m = ex.step(st, xs[k], ys[k], key)
        mets += m["finished"]
        if phase == "full" and k + 1 == save_at:
            st = ex.save(ck, st)
    st, m = ex.drain(st)
    mets += m["finished"]
    got = ex.params(st)  # a collective: every process
    sent = [int(b) for b in np.asarray(jax.experimental.multihost_utils.process_allgather(
        np.int64(ex.bytes_sent))).ravel()]
    if pid == 0:
        np.savez(os.path.join(out, f"{phase}.npz"), **{f"{n}/{k}": v for n, p in got.items() for k, v in p.items()})
        with open(os.path.join(out, f"{phase}.json"), "w") as f:
            json.dump({"metrics": [[float(a) for a in m] for m in mets], "bytes_sent": sent,
                       "bytes_per_iteration": ex.bytes_per_iteration(params), "delays": delays,
                       "placement": {p.task: p.processor for p in sched.placements}}, f)


if __name__ == "__main__":
    import jax.experimental.multihost_utils  # noqa: F401  (process_allgather)
    a = sys.argv[1:]
    main(int(a[0]), int(a[1]), a[2], a[3], a[4], int(a[5]), int(a[6]))

"""End to end: one epoch of real data through the user's training command against snnTorch.

Command (benchmarks/README.md, end-to-end section)::

    .venv/bin/python -m benchmarks.end_to_end --nets=fc_small,conv_medium,vgg_large \\
        --data_dir=/usr/share/datasets/fashion-mnist --peer_python=/tmp/benchvenv/bin/python \\
        --out=runs/bench/end_to_end.jsonl

For each net, two whole processes, one after the other, each timed from start to exit:

* ``spikepipe_jax``: ``python -m scripts.train --config=configs/<net>.py --workdir=<fresh>``
  with the hyper-parameters below passed as ``--config.*`` flags: exactly what a user runs
  (import, compile, train, evaluate, checkpoints), in the driver's environment;
* ``snntorch``: the same network and hyper-parameters in a plain snnTorch 1.0 loop
  (:func:`peer_main`, run by ``--peer_python`` as ``benchmarks/train_step.py`` runs its
  peers): the same files read with NumPy, ``spikegen.rate``, ``nn.Linear``/``nn.Conv2d`` +
  ``snn.Leaky`` (:func:`benchmarks.common.snntorch_net`), the config's loss, Adam with the
  config's learning-rate schedule (``LambdaLR`` of :func:`benchmarks.common.lr_factor`), an
  evaluation of the test set at the end.

Both get the same environment (the driver's; nothing is set for either). The native kernels
of spikepipe_jax are built first, untimed (``make native``: a one-time step per checkout). Hyper-parameters
(both sides): batch ``--batch`` (128), T = ``--num_steps`` (0: the config's), rate coding,
subtract reset, fast-sigmoid surrogate of the config's slope, the config's beta, threshold and
init gain, Adam at the config's learning rate (``--learning_rate`` overrides), no weight decay,
``--epochs`` epochs, evaluation batch = the config's ``train.eval_batch_size``, seed ``--seed``
(-1: the config's), and with ``--setup=config`` (the default) the config's readout, loss and
schedule: a spiking readout with ``ce_count`` (snnTorch ``SF.ce_count_loss``), or a membrane
readout with ``ce_mem`` (snnTorch: the output ``snn.Leaky(reset_mechanism="none")``, the
cross-entropy of its membrane at every step averaged over T and the batch, prediction the
argmax of the membrane's mean over T), a constant rate or cosine decay to 5 %, after
``train.warmup_steps`` of linear warm-up. ``--setup=pinned``: a spiking readout, ``ce_count``
and a constant rate without warm-up whatever the config says (the step benchmark's set-up and
that of the end-to-end runs before session 7; :data:`benchmarks.common.PINNED`).

Data: 28x28x1 nets read the IDX files of ``--data_dir`` (``--dataset``: fashion_mnist); a
32x32x3 net (vgg_large) reads CIFAR-10 pickles from ``--cifar_dir``, or, when that is empty,
CIFAR-shaped random images written to a temporary folder in the CIFAR-10 pickle format
(``--synthetic_train_steps`` x batch training images, ``--synthetic_test`` test images; the
accuracy is then chance and only the time and memory mean anything). ``--max_train`` /
``--max_test`` truncate real data (smoke tests).

Output: one JSON line per (framework, net) -- ``wall_s`` (whole process), ``test_accuracy``,
``peak_rss_mb`` (the process's peak resident set, ``wait4``), ``user_s`` / ``sys_s`` (CPU
time), ``steps``, ``loadavg_before`` / ``loadavg_after`` (1-minute load), ``command`` -- or
``{"framework", "net", "skipped": reason}`` when the peer cannot import torch/snntorch;
then one ``{"summary": net, ...}`` line: ``speedup`` (snnTorch wall / ours), ``accuracy_diff``
(ours - snnTorch, points), ``rss_ratio`` (ours / snnTorch) and whether each goal holds
(speedup >= 2, accuracy within 1 point, RSS at or below snnTorch's).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Optional

from absl import app, flags

from benchmarks.common import FIXED

FRAMEWORKS = ("spikepipe_jax", "snntorch")
_PREFIX = "@@e2e "  # the peer's result line starts with this

flags.DEFINE_list("nets", ["fc_small", "conv_medium", "vgg_large"], "Network configs (configs/<net>.py).")
flags.DEFINE_list("frameworks", list(FRAMEWORKS), f"Frameworks, among {FRAMEWORKS}.")
flags.DEFINE_string("data_dir", "/usr/share/datasets/fashion-mnist", "IDX files of the 28x28 dataset.")
flags.DEFINE_string("dataset", "fashion_mnist", "data.name of the 28x28 nets: fashion_mnist | mnist.")
flags.DEFINE_string("cifar_dir", "", "CIFAR-10 pickles for 32x32x3 nets; empty: CIFAR-shaped random data.")
flags.DEFINE_integer("epochs", 1, "Training epochs.")
flags.DEFINE_integer("batch", 128, "Batch size B.")
flags.DEFINE_integer("num_steps", 0, "T; 0 = the config's model.num_steps.")
flags.DEFINE_float("learning_rate", 0.0, "Adam learning rate; 0 = the config's.")
flags.DEFINE_enum("setup", "config", ["config", "pinned"],
                  "config: the config's readout, loss and learning-rate schedule (fc_small, conv_medium: membrane "
                  "readout, ce_mem, warm-up + cosine); pinned: spiking readout, ce_count, constant rate "
                  "(benchmarks.common.PINNED; the step benchmark's and the earlier end-to-end runs').")
flags.DEFINE_integer("seed", -1, "Seed of both frameworks' runs; -1 = the config's.")
flags.DEFINE_integer("max_train", 0, "Keep the first N training samples of real data (0 = all).")
flags.DEFINE_integer("max_test", 0, "Keep the first N test samples of real data (0 = all).")
flags.DEFINE_integer("synthetic_train_steps", 20, "Training steps on CIFAR-shaped random data.")
flags.DEFINE_integer("synthetic_test", 512, "Test images of CIFAR-shaped random data.")
flags.DEFINE_string("peer_python", "", "Python with torch + snntorch (benchmarks/requirements.txt); "
                    "default $SPIKEPIPE_PEER_PYTHON, else this interpreter.")
flags.DEFINE_string("workdir", "", "Folder for the runs' workdirs and logs (default: a temporary one, removed).")
flags.DEFINE_integer("timeout_s", 3600, "Seconds one process may take.")
flags.DEFINE_string("out", "", "Optional path: also write the JSON lines there (atomically).")
flags.DEFINE_string("peer_spec", "", "(internal) run the snnTorch peer on this JSON description.")
FLAGS = flags.FLAGS

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- the snnTorch peer
def peer_main(spec: dict) -> None:
    """One whole snnTorch run of ``spec``; prints the result line (``_PREFIX`` + JSON)."""
    try:
        import torch
        from snntorch import functional as SF
        from snntorch import spikegen
    except ImportError as e:
        print(_PREFIX + json.dumps({"skipped": f"{type(e).__name__}: {e}"}), flush=True)
        return
    import numpy as np

    from benchmarks import common

    t0 = time.perf_counter()
    torch.manual_seed(spec["seed"])
    xtr, ytr, xte, yte = common.load_images(spec)
    net = common.snntorch_net(spec)
    b, t_steps = spec["batch"], spec["num_steps"]
    steps_per_epoch = len(xtr) // b
    opt = torch.optim.Adam(net.parameters(), lr=spec["learning_rate"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, functools.partial(
        common.lr_factor, schedule=spec["lr_schedule"], warmup_steps=spec["warmup_steps"],
        total_steps=steps_per_epoch * spec["epochs"]))
    membrane = spec["readout"] == "membrane"
    if membrane:  # ce_mem: cross-entropy of the output membrane at every step, mean over T and B
        def loss_fn(spk, mem, y):
            return torch.nn.functional.cross_entropy(mem.flatten(0, 1), y.repeat(mem.shape[0]))
    else:
        count_loss = SF.ce_count_loss()

        def loss_fn(spk, mem, y):
            return count_loss(spk, y)
    rng = np.random.default_rng(spec["seed"])
    step, loss = 0, float("nan")
    for _ in range(spec["epochs"]):
        order = rng.permutation(len(xtr))
        for i in range(steps_per_epoch):
            idx = order[i * b:(i + 1) * b]
            data = spikegen.rate(torch.from_numpy(xtr[idx]), num_steps=t_steps)
            loss_t = loss_fn(*net(data), torch.from_numpy(ytr[idx]))
            opt.zero_grad()
            loss_t.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 50 == 0:
                print(f"step {step} loss {float(loss_t):.4f} {time.perf_counter() - t0:.1f} s", flush=True)
        loss = float(loss_t)
    train_s = time.perf_counter() - t0
    correct, eb = 0, spec["eval_batch_size"]
    with torch.no_grad():
        for s in range(0, len(xte), eb):
            data = spikegen.rate(torch.from_numpy(xte[s:s + eb]), num_steps=t_steps)
            spk, mem = net(data)
            logits = mem.mean(0) if membrane else spk.sum(0)
            correct += int((logits.argmax(1) == torch.from_numpy(yte[s:s + eb])).sum())
    print(_PREFIX + json.dumps({"test_accuracy": correct / len(xte), "steps": step, "train_loss": loss,
                                "train_s": round(train_s, 2), "eval_s": round(time.perf_counter() - t0 - train_s, 2),
                                "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)


# ----------------------------------------------------------------------------- driver


def run_spec(net: str, *, batch: int, num_steps: int, learning_rate: float, epochs: int,
             data: dict, setup: str = "config", seed: int = -1) -> dict:
    """The peer's description of ``net`` and the ``--config.*`` flags that give scripts.train the
    same hyper-parameters (every one the peer uses, explicitly). ``setup``: ``"config"`` (the
    config's readout, loss and schedule) or ``"pinned"`` (:data:`benchmarks.common.PINNED`).
    ``seed`` >= 0 replaces the config's seed (both frameworks)."""
    from benchmarks import common

    fixed = dict(FIXED)
    if learning_rate:
        fixed["train.learning_rate"] = learning_rate
    spec = common.net_spec(net, batch, num_steps, fixed, setup=setup)
    cfg = spec["config"]
    if seed >= 0:
        cfg["seed"] = seed
    spec.update(epochs=epochs, seed=int(cfg["seed"]), eval_batch_size=int(cfg["train"]["eval_batch_size"]),
                data=data, setup=setup)
    values = {**fixed, "seed": spec["seed"],
              "train.batch_size": batch, "train.epochs": epochs,
              "train.learning_rate": spec["learning_rate"], "model.num_steps": spec["num_steps"],
              "model.beta": spec["beta"], "model.threshold": spec["threshold"],
              "model.surrogate_scale": spec["slope"], "model.init_gain": spec["init_gain"],
              "model.readout": spec["readout"], "train.loss": spec["loss"],
              "train.lr_schedule": spec["lr_schedule"], "train.warmup_steps": spec["warmup_steps"],
              "train.eval_batch_size": spec["eval_batch_size"],
              "data.name": data["name"], "data.dir": data["dir"],
              "data.max_train": data["max_train"], "data.max_test": data["max_test"]}
    spec["train_flags"] = [f"--config.{k}={v}" for k, v in values.items()]
    return spec


def run_process(cmd: list[str], log_path: str, timeout_s: int, env: Optional[dict] = None) -> dict:
    """Runs ``cmd`` to its end: wall time, the process's own peak RSS and CPU times (``wait4``),
    its stdout+stderr (also written to ``log_path``)."""
    load0 = os.getloadavg()[0]
    with open(log_path, "w+") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=_REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = t0 + timeout_s
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, ru = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        text = log.read()
    return {"rc": proc.returncode, "wall_s": round(wall, 2), "peak_rss_mb": round(ru.ru_maxrss / 1024.0, 1),
            "user_s": round(ru.ru_utime, 2), "sys_s": round(ru.ru_stime, 2),
            "loadavg_before": round(load0, 2), "loadavg_after": round(os.getloadavg()[0], 2),
            "timed_out": wall > timeout_s, "output": text}


def _final_record(workdir: str) -> dict:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        finals = [json.loads(l) for l in f if '"final": true' in l]
    if not finals:
        raise RuntimeError(f"{workdir}/metrics.jsonl has no final record")
    return finals[-1]


def run_ours(spec: dict, root: str, timeout_s: int) -> dict:
    net = spec["net"]
    workdir = os.path.join(root, f"spikepipe_jax_{net}")
    shutil.rmtree(workdir, ignore_errors=True)
    cmd = [sys.executable, "-m", "scripts.train", f"--config=configs/{net}.py", *spec["train_flags"],
           f"--workdir={workdir}"]
    res = run_process(cmd, os.path.join(root, f"spikepipe_jax_{net}.log"), timeout_s)
    out = res.pop("output")
    if res["rc"] != 0:
        raise RuntimeError(f"scripts.train failed for {net} (rc={res['rc']}):\n{out[-3000:]}")
    final = _final_record(workdir)
    return {**res, "test_accuracy": final["test_accuracy"], "steps": final["step"],
            "train_eval_s": round(final["wall_s"], 2), "command": " ".join(cmd[1:])}


def run_peer(spec: dict, root: str, peer_python: str, timeout_s: int) -> dict:
    net = spec["net"]
    peer = {k: v for k, v in spec.items() if k not in ("config", "train_flags")}
    cmd = [peer_python, "-m", "benchmarks.end_to_end", f"--peer_spec={json.dumps(peer)}"]
    res = run_process(cmd, os.path.join(root, f"snntorch_{net}.log"), timeout_s)
    out = res.pop("output")
    lines = [l[len(_PREFIX):] for l in out.splitlines() if l.startswith(_PREFIX)]
    if res["rc"] != 0 or not lines:
        raise RuntimeError(f"snnTorch peer failed for {net} (rc={res['rc']}):\n{out[-3000:]}")
    got = json.loads(lines[-1])
    if "skipped" in got:
        return got
    return {**res, **got, "command": f"{peer_python} -m benchmarks.end_to_end --peer_spec=<{net}>"}


def _data_for(net: str, spec0: dict, *, data_dir: str, dataset: str, cifar_dir: str, batch: int,
              max_train: int, max_test: int, synthetic_steps: int, synthetic_test: int, root: str) -> dict:
    shape = tuple(spec0["input_shape"])
    if shape == (32, 32, 3):
        if cifar_dir:
            return {"kind": "cifar", "name": "cifar10", "dir": cifar_dir, "max_train": max_train,
                    "max_test": max_test, "synthetic": False}
        folder = os.path.join(root, "synthetic_cifar")
        n = synthetic_steps * batch
        from benchmarks import common
        common.write_synthetic_cifar(folder, n, synthetic_test)
        return {"kind": "cifar", "name": "cifar10", "dir": folder, "max_train": n,
                "max_test": synthetic_test, "synthetic": True}
    if shape != (28, 28, 1):
        raise ValueError(f"{net}: input shape {shape}; the benchmark runs 28x28x1 (IDX) or 32x32x3 (CIFAR) nets")
    return {"kind": "idx", "name": dataset, "dir": data_dir, "max_train": max_train, "max_test": max_test,
            "synthetic": False}


def run_benchmark(nets: list[str], frameworks: list[str], *, data_dir: str, dataset: str = "fashion_mnist",
                  cifar_dir: str = "", epochs: int = 1, batch: int = 128, num_steps: int = 0,
                  learning_rate: float = 0.0, max_train: int = 0, max_test: int = 0,
                  synthetic_train_steps: int = 20, synthetic_test: int = 512, peer_python: str = "",
                  workdir: str = "", timeout_s: int = 3600, setup: str = "config", seed: int = -1,
                  emit: Callable[[dict], None] = lambda r: print(json.dumps(r), flush=True)) -> list[dict]:
    """Runs the benchmark; returns (and ``emit``-s) the JSON records."""
    bad = [f for f in frameworks if f not in FRAMEWORKS]
    if bad:
        raise ValueError(f"unknown framework {bad[0]!r}; expected one of {FRAMEWORKS}")
    if min(epochs, batch, synthetic_train_steps, synthetic_test) <= 0 or min(num_steps, max_train, max_test) < 0:
        raise ValueError(f"epochs, batch, synthetic sizes must be positive and num_steps, max_train, max_test "
                         f">= 0; got {epochs}, {batch}, {synthetic_train_steps}, {synthetic_test}, "
                         f"{num_steps}, {max_train}, {max_test}")
    from benchmarks import common

    root = workdir or tempfile.mkdtemp(prefix="end_to_end_")
    os.makedirs(root, exist_ok=True)
    records: list[dict] = []

    def out(r):
        records.append(r)
        emit(r)

    if "spikepipe_jax" in frameworks:  # the native kernels' one-time build (`make native`), not timed
        subprocess.run([sys.executable, "-m", "spikepipe_jax.native"], cwd=_REPO, capture_output=True,
                       timeout=timeout_s)
    try:
        out({"machine": {"cpu_count": os.cpu_count(), "loadavg_before": [round(v, 2) for v in os.getloadavg()],
                         "epochs": epochs, "batch": batch, "peer_python": peer_python, "data_dir": data_dir,
                         "dataset": dataset, "cifar_dir": cifar_dir, "setup": setup}})
        for net in nets:
            spec0 = common.net_spec(net, batch, num_steps, FIXED, setup=setup)
            data = _data_for(net, spec0, data_dir=data_dir, dataset=dataset, cifar_dir=cifar_dir, batch=batch,
                             max_train=max_train, max_test=max_test, synthetic_steps=synthetic_train_steps,
                             synthetic_test=synthetic_test, root=root)
            spec = run_spec(net, batch=batch, num_steps=num_steps, learning_rate=learning_rate, epochs=epochs,
                            data=data, setup=setup, seed=seed)
            got: dict[str, dict] = {}
            for fw in frameworks:
                res = (run_ours(spec, root, timeout_s) if fw == "spikepipe_jax"
                       else run_peer(spec, root, peer_python or sys.executable, timeout_s))
                rec: dict[str, Any] = {"framework": fw, "net": net}
                if "skipped" not in res:
                    rec.update(batch=batch, num_steps=spec["num_steps"], epochs=epochs,
                               learning_rate=spec["learning_rate"], setup=setup, seed=spec["seed"],
                               readout=spec["readout"], loss=spec["loss"], lr_schedule=spec["lr_schedule"],
                               warmup_steps=spec["warmup_steps"], dataset=data["name"],
                               synthetic_data=data["synthetic"])
                rec.update(res)
                got[fw] = rec
                out(rec)
            ours, peer = got.get("spikepipe_jax"), got.get("snntorch")
            if ours and peer and "skipped" not in peer:
                speedup = peer["wall_s"] / ours["wall_s"]
                acc_diff = 100.0 * (ours["test_accuracy"] - peer["test_accuracy"])
                rss = ours["peak_rss_mb"] / peer["peak_rss_mb"]
                out({"summary": net, "speedup": round(speedup, 2), "accuracy_diff_points": round(acc_diff, 2),
                     "rss_ratio": round(rss, 3), "goal_speed": speedup >= 2.0,
                     "goal_accuracy": abs(acc_diff) <= 1.0 or bool(data["synthetic"]),
                     "goal_rss": rss <= 1.0})
        out({"machine_after": {"loadavg": [round(v, 2) for v in os.getloadavg()]}})
    finally:
        if not workdir:
            shutil.rmtree(root, ignore_errors=True)
    return records


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
    if FLAGS.peer_spec:
        peer_main(json.loads(FLAGS.peer_spec))
        return
    from spikepipe_jax.experiments import exit_with_error

    peer = FLAGS.peer_python or os.environ.get("SPIKEPIPE_PEER_PYTHON", "") or sys.executable
    lines = []

    def emit(r):
        lines.append(json.dumps(r))
        print(lines[-1], flush=True)

    try:
        run_benchmark(FLAGS.nets, FLAGS.frameworks, data_dir=FLAGS.data_dir, dataset=FLAGS.dataset,
                      cifar_dir=FLAGS.cifar_dir, epochs=FLAGS.epochs, batch=FLAGS.batch,
                      num_steps=FLAGS.num_steps, learning_rate=FLAGS.learning_rate, max_train=FLAGS.max_train,
                      max_test=FLAGS.max_test, synthetic_train_steps=FLAGS.synthetic_train_steps,
                      synthetic_test=FLAGS.synthetic_test, peer_python=peer, workdir=FLAGS.workdir,
                      timeout_s=FLAGS.timeout_s, setup=FLAGS.setup, seed=FLAGS.seed, emit=emit)
    except (ValueError, FileNotFoundError) as e:
        exit_with_error(e)
    if FLAGS.out:
        from spikepipe_jax.io import atomic_write_text
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
        atomic_write_text(FLAGS.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    app.run(main)

"""Training-step throughput of spikepipe_jax against snnTorch and Spyx on the same networks.

Command:  python -m benchmarks.train_step [--nets=fc_small,conv_medium] [--batch=128] [--steps=20]
              [--frameworks=spikepipe_jax,snntorch,spyx] [--peer_python=/path/to/venv/bin/python]

Measures samples/s of one whole jitted training step (rate encoding of a fixed random batch
``x ~ U[0, 1]``, forward over T, ``ce_count`` loss, BPTT, Adam update), compilation and two
warm-up steps excluded, as the median of ``--steps`` individually timed steps. Each
(framework, net) runs in its own worker process, all workers of a net are alive at once and
are driven round-robin in ``--rounds`` interleaved rounds, so that all frameworks see the same
machine load; before each worker's turn the driver waits ``--settle_s`` (0.25 s), because the
thread pools of the process that ran before keep spinning for a while after their work
(OpenBLAS ~0.1 s): an fc_small step started right after NumPy's matmul took 83-94 ms instead of
58, one started 0.1 s later 59. A ``matmul`` worker times a dense n x n float32 matmul (n = ``--matmul_size``;
XLA's and NumPy's BLAS) in the same rounds; the GEMM FLOP/s of each spikepipe_jax step (MACs of the
F, B, W tasks of :func:`spikepipe_jax.hardware.mapping.training_tasks`, 2 FLOPs each) is
printed against it.

Output (stdout, one JSON object per line):

* ``{"machine": ...}``: cpu count, load averages before the run, environment knobs.
* one line per (framework, net): ``framework`` (``spikepipe_jax`` | ``snntorch`` | ``spyx``),
  ``net``, ``samples_per_s``, ``peak_rss_mb`` (the worker's peak resident set, compilation
  included), ``step_s`` (median), ``cpu_s`` (median process CPU time per step, all threads),
  ``minor_faults`` (median page faults per step) and ``major_faults`` (all timed steps: pages
  read back from disk, e.g. library code the host's memory reclaim dropped),
  ``compile_s`` (build + first step), ``steps``; spikepipe_jax adds
  ``xla_temp_mb`` (XLA's temporary buffers) and ``gemm_gflops``; a framework that cannot
  be imported gives ``{"framework", "net", "skipped": reason}``.
* ``{"matmul": ...}``: dense-matmul GFLOP/s (median) of XLA and NumPy.
* ``{"summary": net, ...}``: the speed ratios spikepipe_jax / peer, and for spikepipe_jax the
  GEMM FLOP/s as a fraction of the best dense-matmul FLOP/s, from the median steps (the
  figures of record) and, as ``... fastest_step(s)``, from each worker's fastest step (less
  sensitive to other load on a shared machine, which stretches some steps of each worker).
* ``{"machine_after": ...}``: load averages after the run.

snnTorch and Spyx are not dependencies of the project: install them in a separate virtual
environment (``benchmarks/requirements.txt``) and point ``--peer_python`` (or the
``SPIKEPIPE_PEER_PYTHON`` environment variable) at its interpreter. The peer networks are
built idiomatically in each framework from the same spec (layer sizes, ``Leaky`` beta and
threshold, fast-sigmoid surrogate of the same slope, rate input, spike-count cross-entropy,
Adam at the config's learning rate): snnTorch runs ``nn.Conv2d``/``nn.Linear`` + ``snn.Leaky``
step by step over T; Spyx runs ``spyx.nn.Sequential`` of ``nnx`` layers and ``spyx.nn.LIF``
under ``spyx.nn.run`` (a ``lax.scan`` over T) with ``spyx.optimize.make_train_step``.

Every worker runs in the same environment as the driver (no allocator settings from the
benchmark): the spikepipe_jax worker configures glibc ``malloc`` in-process exactly as the
project's training commands do (:func:`spikepipe_jax.runtime.configure_allocator`, first
thing in the worker), so its numbers are those a user's ``scripts.train`` gets.

Variants for A/B measurements: a framework name may carry overrides in brackets, e.g.
``--frameworks='spikepipe_jax,spikepipe_jax[model.conv_impl=xla;model.remat=True]'``;
``model.*``/``data.*`` keys override the config, ``env.NAME=value`` sets a variable of that
worker's environment (``env.SPIKEPIPE_MALLOC=default`` leaves glibc ``malloc`` at its defaults).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Optional

from absl import app, flags

from benchmarks import common
from benchmarks.common import net_spec  # noqa: F401 - the workers' network description

FRAMEWORKS = ("spikepipe_jax", "snntorch", "spyx")
_JAX_WORKERS = ("spikepipe_jax", "spyx", "matmul")
_PREFIX = "@@bench "  # protocol lines on a worker's stdout start with this

flags.DEFINE_list("nets", ["fc_small", "conv_medium"], "Network configs (configs/<net>.py).")
flags.DEFINE_integer("batch", 128, "Batch size B.")
flags.DEFINE_integer("num_steps", 0, "Time steps T; 0 = the config's model.num_steps.")
flags.DEFINE_integer("steps", 20, "Timed training steps per (framework, net); the median is reported.")
flags.DEFINE_integer("rounds", 4, "Interleaved rounds the timed steps are split into.")
flags.DEFINE_list("frameworks", list(FRAMEWORKS), "Frameworks (variants: name[key=value;...]).")
flags.DEFINE_string("peer_python", "", "Python interpreter with torch/snntorch/spyx installed; "
                    "default $SPIKEPIPE_PEER_PYTHON, else this interpreter.")
flags.DEFINE_string("xla_flags", "", "XLA_FLAGS for the JAX workers (spikepipe_jax, spyx, matmul).")
flags.DEFINE_float("settle_s", 0.25, "Seconds the driver waits before each worker's turn (and the matmul "
                   "worker before each of its matmuls), so that the threads of the process that ran "
                   "before (OpenBLAS, OpenMP, Eigen spin-wait after their work) are idle; 0 = none.")
flags.register_validator("settle_s", lambda v: v >= 0, message="--settle_s must be >= 0")
flags.DEFINE_integer("matmul_size", 2048, "Side of the square matmul that measures the machine; 0 = skip.")
flags.DEFINE_integer("worker_timeout_s", 1800, "Seconds a worker may take for one command.")
flags.DEFINE_string("out", "", "Optional path: also write the JSON lines there (atomically).")
# Internal: worker mode.
flags.DEFINE_string("worker", "", "(internal) run as a worker for this framework.")
flags.DEFINE_string("worker_spec", "", "(internal) JSON network description for a worker.")
FLAGS = flags.FLAGS


# ----------------------------------------------------------------------------- network spec
def parse_variant(name: str) -> tuple[str, dict[str, str]]:
    """``"spikepipe_jax[model.remat=True;env.X=1]"`` -> ``("spikepipe_jax", {...})``."""
    name = name.strip()
    if "[" not in name:
        base, overrides = name, {}
    else:
        if not name.endswith("]"):
            raise ValueError(f"bad framework variant {name!r}: expected name[key=value;...]")
        base, body = name[:-1].split("[", 1)
        overrides = {}
        for item in filter(None, body.split(";")):
            if "=" not in item:
                raise ValueError(f"bad override {item!r} in {name!r}: expected key=value")
            k, v = item.split("=", 1)
            overrides[k.strip()] = v.strip()
    if base not in FRAMEWORKS and base != "matmul":
        raise ValueError(f"unknown framework {base!r}; expected one of {FRAMEWORKS}")
    return base, overrides


def gemm_flops_per_step(spec: dict) -> int:
    """2 x the useful MACs of all F, B, W tasks of one training step (the cost model's count)."""
    from spikepipe_jax import spec as spec_lib
    from spikepipe_jax.hardware import mapping

    infos = spec_lib.parse_spec(spec["layers"], spec["input_shape"])
    tasks = mapping.training_tasks(infos, batch=spec["batch"], num_steps=spec["num_steps"],
                                   rows=128, cols=128, dataflow="ws")
    return 2 * sum(t["macs"] for t in tasks)


# ----------------------------------------------------------------------------- workers
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _rate_inputs(spec: dict, seed: int = 0):
    import numpy as np
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, size=(spec["batch"], *spec["input_shape"])).astype(np.float32)
    y = rng.integers(0, spec["num_classes"], size=spec["batch"]).astype(np.int32)
    return x, y


def make_spikepipe_step(spec: dict) -> tuple[Callable[[], None], dict]:
    """A zero-argument function running one spikepipe_jax training step (blocking), and info.

    Configures glibc ``malloc`` first, as the project's training commands do
    (:func:`spikepipe_jax.runtime.configure_allocator`; ``info["allocator_configured"]``).
    """
    from spikepipe_jax import runtime
    allocator = runtime.configure_allocator()
    import jax
    import jax.numpy as jnp
    import ml_collections

    from spikepipe_jax import snn
    from spikepipe_jax.train import loop, optimizer

    cfg = ml_collections.ConfigDict(spec["config"])
    # as train_and_evaluate builds it: rate / latency inputs are 0/1 (snn.encoders.is_binary)
    model = snn.model_from_config(cfg.model)._replace(binary_input=snn.encoders.is_binary(cfg.data.encoding))
    tx = optimizer.make_base_optimizer(cfg.train)
    params = snn.init_params(jax.random.key(0), model)
    state = loop.TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))
    fn = loop.make_train_step(model, tx, loss_name="ce_count", encoding=cfg.data.encoding,
                              num_steps=spec["num_steps"], num_classes=spec["num_classes"])
    x, y = (jnp.asarray(a) for a in _rate_inputs(spec))
    key = jax.random.key(1)
    cpu_gemm = cfg.train.get("cpu_gemm", "eigen")
    compiled = jax.jit(fn, donate_argnums=(0,), compiler_options=loop.compiler_options(cpu_gemm)).lower(
        state, x, y, key).compile()
    info = {"jax": jax.__version__, "backend": jax.default_backend(), "remat": model.remat,
            "conv_impl": getattr(model, "conv_impl", "xla"), "encoding": cfg.data.encoding,
            "cpu_gemm": cpu_gemm, "allocator_configured": allocator}
    # which native kernels (spikepipe_jax/native) the compiled step calls
    from spikepipe_jax import native
    hlo = compiled.as_text()
    info["native_kernels"] = sorted(t for t in native.TARGETS.values() if t in hlo)
    try:
        mem = compiled.memory_analysis()
        info["xla_temp_mb"] = round(mem.temp_size_in_bytes / 2**20, 1)
    except Exception:  # noqa: BLE001 - memory_analysis is best effort on some backends
        pass
    box = {"state": state}

    def step():
        box["state"], metrics = compiled(box["state"], x, y, key)
        jax.block_until_ready(metrics["loss"])

    return step, info


def make_snntorch_step(spec: dict) -> tuple[Callable[[], None], dict]:
    """snnTorch: ``nn.Conv2d``/``nn.Linear`` + ``snn.Leaky``, looped over T as in its tutorials."""
    import snntorch as snn
    import torch
    from snntorch import functional as SF
    from snntorch import spikegen

    torch.manual_seed(0)
    net = common.snntorch_net(spec)
    opt = torch.optim.Adam(net.parameters(), lr=spec["learning_rate"])
    loss_fn = SF.ce_count_loss()
    xn, yn = _rate_inputs(spec)
    x = torch.from_numpy(xn).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    y = torch.from_numpy(yn).long()

    def step():
        data = spikegen.rate(x, num_steps=spec["num_steps"])
        spk, _ = net(data)
        loss = loss_fn(spk, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        float(loss)

    return step, {"torch": torch.__version__, "snntorch": snn.__version__,
                  "threads": torch.get_num_threads()}


def make_spyx_step(spec: dict) -> tuple[Callable[[], None], dict]:
    """Spyx 1.0: ``nnx`` layers + ``spyx.nn.LIF`` in ``spyx.nn.Sequential``, scanned by ``spyx.nn.run``."""
    import flax
    import jax
    import jax.numpy as jnp
    import optax
    import spyx
    from flax import nnx

    rngs = nnx.Rngs(0)
    act = spyx.axn.superspike(k=spec["slope"])  # 1/(1+k|x|)^2, snnTorch's fast_sigmoid
    mods = []
    for wl in spec["weight_layers"]:
        if wl["kind"] == "dense":
            fan_in = 1
            for s in wl["in_shape"]:
                fan_in *= s
            mods += [spyx.nn.Flatten(), nnx.Linear(fan_in, wl["features"], rngs=rngs)]
        else:
            p = wl["padding"]
            mods.append(nnx.Conv(wl["in_shape"][-1], wl["features"], (wl["kernel"],) * 2,
                                 strides=wl["stride"], padding=((p, p), (p, p)), rngs=rngs))
        for kind, w in wl["pools"]:
            pool = nnx.max_pool if kind == "maxpool" else nnx.avg_pool
            mods.append(lambda v, pool=pool, w=w: pool(v, (w, w), strides=(w, w)))
        mods.append(spyx.nn.LIF(tuple(wl["out_shape"]), beta=spec["beta"], threshold=spec["threshold"],
                                activation=act, rngs=rngs))
    model = spyx.nn.Sequential(*mods)
    optimizer = nnx.Optimizer(model, optax.adam(spec["learning_rate"]), wrt=nnx.Param)
    loss_ce = spyx.fn.integral_crossentropy(smoothing=0.0, time_axis=0)
    t_steps = spec["num_steps"]

    def loss_fn(m, x, y, key):
        spikes = jax.random.bernoulli(key, jnp.clip(x, 0.0, 1.0), (t_steps,) + x.shape).astype(x.dtype)
        traces, _ = spyx.nn.run(m, spikes)  # time-major [T, B, classes]
        return loss_ce(traces, y)

    train_step = spyx.optimize.make_train_step(loss_fn)
    xn, yn = _rate_inputs(spec)
    x, y = jnp.asarray(xn), jnp.asarray(yn)
    # keys split beforehand: an eager split per step would be one more dispatch in Spyx's time
    keys = list(jax.random.split(jax.random.key(1), 64))
    box = {"i": 0}

    def step():
        box["i"] += 1
        jax.block_until_ready(train_step(model, optimizer, x, y, keys[box["i"] % len(keys)]))

    return step, {"spyx": spyx.__version__, "flax": flax.__version__, "jax": jax.__version__}


def make_matmul_step(spec: dict) -> tuple[Callable[[], None], dict]:
    """One dense ``n x n`` float32 matmul with XLA (jnp) and one with NumPy, timed separately."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    n = int(spec["matmul_size"])
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    mm = jax.jit(jnp.matmul).lower(ja, jb).compile()
    times = {"xla": [], "numpy": []}

    settle_s = float(spec.get("settle_s", 0.0))

    def step():
        # each matmul waits for the other library's threads to go idle: right after NumPy's
        # matmul, OpenBLAS threads still spin and XLA's matmul measured 134-157 GFLOP/s
        # instead of ~200 (fc_small's GEMM fraction uses the better of the two anyway)
        time.sleep(settle_s)
        t0 = time.perf_counter()
        jax.block_until_ready(mm(ja, jb))
        times["xla"].append(time.perf_counter() - t0)
        time.sleep(settle_s)
        t0 = time.perf_counter()
        np.matmul(a, b)
        times["numpy"].append(time.perf_counter() - t0)

    return step, {"flop": 2 * n ** 3, "times": times}


_MAKERS = {"spikepipe_jax": make_spikepipe_step, "snntorch": make_snntorch_step,
           "spyx": make_spyx_step, "matmul": make_matmul_step}


def _send(obj: dict) -> None:
    sys.stdout.write(_PREFIX + json.dumps(obj) + "\n")
    sys.stdout.flush()


def worker_main(framework: str, spec: dict) -> None:
    """Worker loop: build + compile, 2 warm-up steps, then serve ``run N`` / ``quit`` on stdin."""
    try:
        t0 = time.perf_counter()
        step, info = _MAKERS[framework](spec)
        step()  # first call: compiles where the framework compiles lazily
        compile_s = time.perf_counter() - t0
        step()
        step()
    except ImportError as e:
        _send({"error": f"{type(e).__name__}: {e}", "skip": True})
        return
    times_box = info.pop("times", None)
    if times_box is not None:  # matmul: drop warm-up timings
        for v in times_box.values():
            v.clear()
    _send({"ready": True, "compile_s": compile_s, "info": info})
    times, cpu_times, faults = [], [], []
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "run":
            for _ in range(int(cmd[1])):
                r0 = resource.getrusage(resource.RUSAGE_SELF)
                c, t = time.process_time(), time.perf_counter()
                step()
                times.append(time.perf_counter() - t)
                cpu_times.append(time.process_time() - c)
                r1 = resource.getrusage(resource.RUSAGE_SELF)
                faults.append((r1.ru_minflt - r0.ru_minflt, r1.ru_majflt - r0.ru_majflt))
            _send({"done": int(cmd[1])})
        elif cmd[0] == "quit":
            break
    result = {"times": times, "cpu_times": cpu_times, "faults": faults, "peak_rss_mb": _peak_rss_mb()}
    if times_box is not None:
        result["matmul_times"] = times_box
    _send(result)


# ----------------------------------------------------------------------------- driver
class _Worker:
    """A worker subprocess speaking the line protocol."""

    def __init__(self, label: str, framework: str, spec: dict, python: str, env: dict, timeout_s: int):
        self.label, self.framework, self.timeout_s = label, framework, timeout_s
        self.stderr = tempfile.TemporaryFile(mode="w+")
        cmd = [python, "-m", "benchmarks.train_step", f"--worker={framework}",
               f"--worker_spec={json.dumps(spec)}"]
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.proc = subprocess.Popen(cmd, cwd=repo, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, bufsize=1)

    def read(self) -> dict:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                self.stderr.seek(0)
                tail = self.stderr.read()[-3000:]
                raise RuntimeError(f"worker {self.label} exited (rc={self.proc.poll()}):\n{tail}")
            if line.startswith(_PREFIX):
                return json.loads(line[len(_PREFIX):])
        raise TimeoutError(f"worker {self.label} took longer than {self.timeout_s} s")

    def command(self, cmd: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def _worker_env(framework: str, overrides: dict, xla_flags: str) -> dict:
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    if xla_flags and framework in _JAX_WORKERS:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + xla_flags).strip()
    for k, v in overrides.items():
        if k.startswith("env."):
            env[k[4:]] = v
    return env


def _split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_benchmark(nets: list[str], frameworks: list[str], *, batch: int, num_steps: int, steps: int,
                  rounds: int, peer_python: str, xla_flags: str = "",
                  matmul_size: int = 2048, timeout_s: int = 1800, settle_s: float = 0.25,
                  emit: Callable[[dict], None] = lambda r: print(json.dumps(r), flush=True)) -> list[dict]:
    """Runs the interleaved benchmark; returns (and ``emit``-s) the JSON records."""
    if batch <= 0 or steps <= 0 or rounds <= 0 or num_steps < 0 or settle_s < 0:
        raise ValueError(f"batch, steps, rounds must be positive and num_steps, settle_s >= 0; got "
                         f"{batch}, {steps}, {rounds}, {num_steps}, {settle_s}")
    variants = [(f, *parse_variant(f)) for f in frameworks]
    records: list[dict] = []

    def out(r):
        records.append(r)
        emit(r)

    out({"machine": {"cpu_count": os.cpu_count(), "loadavg_before": [round(v, 2) for v in os.getloadavg()],
                     "xla_flags": xla_flags, "batch": batch,
                     "steps": steps, "rounds": rounds, "settle_s": settle_s, "peer_python": peer_python}})
    matmul_gflops: dict[str, float] = {}
    for ni, net in enumerate(nets):
        workers: dict[str, _Worker] = {}
        results: dict[str, dict] = {}
        specs = {label: net_spec(net, batch, num_steps, overrides) for label, _, overrides in variants}
        try:
            for label, base, overrides in variants:
                spec = specs[label]
                python = sys.executable if base == "spikepipe_jax" else peer_python
                env = _worker_env(base, overrides, xla_flags)
                workers[label] = _Worker(label, base, spec, python, env, timeout_s)
            if ni == 0 and matmul_size > 0:  # the machine's matmul speed, in the first net's rounds
                workers["matmul"] = _Worker("matmul", "matmul", {"matmul_size": matmul_size, "settle_s": settle_s},
                                            sys.executable,
                                            _worker_env("matmul", {}, xla_flags), timeout_s)
            ready = {}
            for label, w in list(workers.items()):  # one compiles at a time
                ready[label] = w.read()
                if "error" in ready[label]:
                    results[label] = {"skipped": ready[label]["error"]}
                    w.close()
                    del workers[label]
            order = list(workers)
            for r, n in enumerate(_split(steps, rounds)):
                for label in order[r % len(order):] + order[:r % len(order)]:  # rotate the order
                    time.sleep(settle_s)  # the previous worker's spinning threads go idle
                    workers[label].command(f"run {n}")
            for label, w in workers.items():
                res = w.command("quit")
                w.proc.wait(timeout=60)
                results[label] = {**ready[label], **res}
        finally:
            for w in workers.values():
                w.close()
        if "matmul" in results:
            mt = results.pop("matmul")["matmul_times"]
            matmul_gflops = {k: 2 * matmul_size ** 3 / statistics.median(v) / 1e9 for k, v in mt.items()}
            out({"matmul": {"size": matmul_size, "xla_gflops": round(matmul_gflops["xla"], 1),
                            "numpy_gflops": round(matmul_gflops["numpy"], 1), "samples": len(mt["xla"])}})
        speeds, fastest, flops = {}, {}, {}
        for label, base, overrides in variants:
            res = results[label]
            rec: dict[str, Any] = {"framework": base, "net": net}
            if label != base:
                rec["variant"] = label
            if "skipped" in res:
                rec["skipped"] = res["skipped"]
                out(rec)
                continue
            med = statistics.median(res["times"])
            rec.update({"samples_per_s": round(batch / med, 1), "peak_rss_mb": round(res["peak_rss_mb"], 1),
                        "step_s": round(med, 5), "step_s_min": round(min(res["times"]), 5),
                        "cpu_s": round(statistics.median(res["cpu_times"]), 5),
                        "minor_faults": statistics.median(f[0] for f in res["faults"]),
                        "major_faults": sum(f[1] for f in res["faults"]),
                        "compile_s": round(res["compile_s"], 2), "steps": len(res["times"]),
                        "batch": batch, "num_steps": specs[label]["num_steps"]})
            rec.update(res.get("info", {}))
            if base == "spikepipe_jax":  # the variant's own network (overrides may change it)
                flops[label] = flop = gemm_flops_per_step(specs[label])
                rec["gemm_gflop_per_step"] = round(flop / 1e9, 6)
                rec["gemm_gflops"] = round(flop / med / 1e9, 2)
            speeds[label] = batch / med
            fastest[label] = batch / min(res["times"])
            out(rec)
        summary: dict[str, Any] = {"summary": net}
        for label, base, _ in variants:
            if base != "spikepipe_jax" or label not in speeds:
                continue
            for plabel, pbase, _ in variants:
                if pbase in ("snntorch", "spyx") and plabel in speeds:
                    summary[f"{label}/{plabel}"] = round(speeds[label] / speeds[plabel], 2)
                    summary[f"{label}/{plabel} fastest_steps"] = round(fastest[label] / fastest[plabel], 2)
            if matmul_gflops:
                best = max(matmul_gflops.values())
                summary[f"{label} gemm_fraction_of_matmul"] = round(
                    flops[label] * speeds[label] / batch / 1e9 / best, 3)
                summary[f"{label} gemm_fraction_of_matmul fastest_step"] = round(
                    flops[label] * fastest[label] / batch / 1e9 / best, 3)
        out(summary)
    out({"machine_after": {"loadavg": [round(v, 2) for v in os.getloadavg()]}})
    return records


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
    if FLAGS.worker:
        worker_main(FLAGS.worker, json.loads(FLAGS.worker_spec))
        return
    for f in FLAGS.frameworks:
        parse_variant(f)  # fail early on a bad name
    peer = FLAGS.peer_python or os.environ.get("SPIKEPIPE_PEER_PYTHON", "") or sys.executable
    lines = []

    def emit(r):
        lines.append(json.dumps(r))
        print(lines[-1], flush=True)

    run_benchmark(FLAGS.nets, FLAGS.frameworks, batch=FLAGS.batch, num_steps=FLAGS.num_steps,
                  steps=FLAGS.steps, rounds=FLAGS.rounds, peer_python=peer,
                  xla_flags=FLAGS.xla_flags,
                  matmul_size=FLAGS.matmul_size, timeout_s=FLAGS.worker_timeout_s,
                  settle_s=FLAGS.settle_s, emit=emit)
    if FLAGS.out:
        from spikepipe_jax.io import atomic_write_text
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
        atomic_write_text(FLAGS.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    app.run(main)

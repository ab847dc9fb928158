"""spikepipe_jax.runtime.configure_allocator: freed large blocks stay mapped for the next step."""
import json
import subprocess
import sys

import pytest

from spikepipe_jax import runtime

# A fresh process: configures (or not) malloc, then allocates, touches and frees a 64 MiB
# block five times, as XLA does with a step's temporary buffer, and reports the page faults
# of the last four rounds.
_CHILD = """
import ctypes, json, resource, sys
from spikepipe_jax import runtime
ok = runtime.configure_allocator()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
n = 64 << 20
faults = []
for i in range(5):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(n)
    libc.memset(p, 1, n)
    libc.free(p)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(json.dumps({"configured": ok, "again": runtime.configure_allocator(), "faults": faults[1:]}))
"""

glibc_linux = pytest.mark.skipif(runtime._libc() is None, reason="glibc Linux only")


def _child(repo_root, **env):
    import os
    proc = subprocess.run([sys.executable, "-c", _CHILD], cwd=repo_root, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env, "PYTHONPATH": str(repo_root)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@glibc_linux
def test_freed_large_blocks_are_not_faulted_in_again(repo_root):
    pages = (64 << 20) // 4096
    on = _child(repo_root, SPIKEPIPE_MALLOC="", GLIBC_TUNABLES="")
    assert on["configured"] and on["again"]
    assert max(on["faults"]) < pages // 100, on  # the block is reused, already mapped
    # glibc's defaults (switched off): each round maps the block anew and faults in every page
    off = _child(repo_root, SPIKEPIPE_MALLOC="default", GLIBC_TUNABLES="")
    assert not off["configured"]
    assert min(off["faults"]) > pages * 0.9, off


@glibc_linux
def test_glibc_tunables_of_the_user_take_precedence(repo_root):
    got = _child(repo_root, SPIKEPIPE_MALLOC="", GLIBC_TUNABLES="glibc.malloc.mmap_max=0")
    assert not got["configured"]


def test_a_no_op_without_glibc(monkeypatch):
    monkeypatch.setattr(runtime.sys, "platform", "darwin")
    assert runtime._libc() is None
    assert runtime.configure_allocator() is False
    assert runtime.release_free_memory() is False


@glibc_linux
def test_release_free_memory_runs_on_glibc():
    assert runtime.release_free_memory() is True


# A fresh process: configures (or not) the allocator, then calls a jitted computation of a
# few hundred ms on ready inputs, as the training loop calls its step, and reports whether its
# result was ready when the call returned (the call ran inline and has freed its buffers).
_STEPS_CHILD = """
import json
from spikepipe_jax import runtime
ok = runtime.configure_allocator()
import jax, jax.numpy as jnp
f = jax.jit(lambda x, s: jnp.tanh(jnp.sin(x * s) @ jnp.cos(x * s).T) @ x)
x = jax.block_until_ready(jnp.ones((2048, 2048), jnp.float32))
f(x, 1.0).block_until_ready()
ready = []
for i in range(4):
    s = jax.block_until_ready(jax.device_put(jnp.float32(1 + i)))
    y = f(x, s)
    ready.append(y.is_ready())
    y.block_until_ready()
print(json.dumps({"configured": ok, "async": jax.config.read("jax_cpu_enable_async_dispatch"), "ready": ready}))
"""


def _steps_child(repo_root, **env):
    import os
    proc = subprocess.run([sys.executable, "-c", _STEPS_CHILD], cwd=repo_root, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env, "PYTHONPATH": str(repo_root)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@glibc_linux
def test_steps_on_ready_inputs_run_inline(repo_root):
    on = _steps_child(repo_root, SPIKEPIPE_MALLOC="", GLIBC_TUNABLES="")
    assert on["configured"] and on["async"] is False and all(on["ready"]), on
    # switched off: JAX's asynchronous dispatch returns before the computation has run
    off = _steps_child(repo_root, SPIKEPIPE_MALLOC="default", GLIBC_TUNABLES="")
    assert off["async"] is True and not all(off["ready"]), off


# The start of the allocator children below: malloc through ctypes, the resident set in MiB.
_PRELUDE = """
import ctypes, json, sys
from spikepipe_jax import runtime
assert runtime.configure_allocator()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
"""


# A fresh process with the allocator configured: a 64 MiB block is touched and freed below a
# small block that stays, then a 128 MiB block (too large for the freed place) is touched; with
# release_free_memory between them the freed block's pages are given back first. Reports the
# peak RSS growth over the run in MiB.
_TRIM_CHILD = _PRELUDE + """
base = rss_mib()
a = libc.malloc(64 << 20); libc.memset(a, 1, 64 << 20)
pin = libc.malloc(1 << 20); libc.memset(pin, 1, 1 << 20)
libc.free(a)
if sys.argv[1] == "trim":
    runtime.release_free_memory()
b = libc.malloc(128 << 20); libc.memset(b, 1, 128 << 20)
print(json.dumps({"growth_mib": rss_mib() - base}))
"""


@glibc_linux
def test_release_free_memory_keeps_a_freed_buffer_out_of_the_peak(repo_root):
    """What the loop's trims around each evaluation are for: a freed train-step buffer that the
    larger evaluation buffer cannot reuse no longer adds to the resident set."""
    import os
    growth = {}
    for mode in ("keep", "trim"):
        proc = subprocess.run([sys.executable, "-c", _TRIM_CHILD, mode], cwd=repo_root, capture_output=True,
                              text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(repo_root)})
        assert proc.returncode == 0, proc.stderr[-2000:]
        growth[mode] = json.loads(proc.stdout)["growth_mib"]
    assert growth["keep"] > 180, growth  # 64 + 1 + 128 MiB resident
    assert growth["trim"] < growth["keep"] - 48, growth


# A fresh process with the allocator configured: a touched 64 MiB block is freed below a block
# that stays, so its place cannot hold a 64 MiB aligned request; make_room(64 MiB) then gives
# its pages back. A block of 65 MiB, placed at the heap's top, touched and freed, leaves room
# there: the next make_room does nothing.
_ROOM_CHILD = _PRELUDE + """
n = 64 << 20
a = libc.malloc(n); libc.memset(a, 1, n)
pin = libc.malloc(1 << 16); libc.memset(pin, 1, 1 << 16)
libc.free(a)
before = rss_mib()
hole = runtime.make_room(n)
after_hole = rss_mib()
b = libc.malloc(n + (1 << 20)); libc.memset(b, 1, n); libc.free(b)  # too large for the hole: at the top
top = runtime.make_room(n)
print(json.dumps({"hole": hole, "released_mib": before - after_hole, "top": top, "zero": runtime.make_room(0)}))
"""


@glibc_linux
def test_make_room_gives_pages_back_only_where_the_buffer_will_not_fit(repo_root):
    import os
    proc = subprocess.run([sys.executable, "-c", _ROOM_CHILD], cwd=repo_root, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(repo_root)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout)
    assert got["hole"] is True and got["released_mib"] > 48, got  # the stranded block's pages
    assert got["top"] is False and got["zero"] is False, got  # the freed top holds the next one


def test_make_room_is_a_no_op_without_glibc(monkeypatch):
    monkeypatch.setattr(runtime.sys, "platform", "darwin")
    assert runtime.make_room(1 << 20) is False


@glibc_linux
def test_make_room_is_a_no_op_where_the_allocator_is_switched_off(monkeypatch):
    # large blocks are then mapped anew each time: never resident, and no trim would help
    monkeypatch.setenv("SPIKEPIPE_MALLOC", "default")
    assert runtime.make_room(256 << 20) is False
    monkeypatch.setenv("SPIKEPIPE_MALLOC", "")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_max=0")
    assert runtime.make_room(256 << 20) is False


# A fresh process: a short conv_medium run (T=8, B=64, on random IDX files) logging every step,
# reporting the resident set (VmRSS) and its peak (VmHWM) in MiB at each log line.
_LOOP_CHILD = """
import gzip, json, os, sys, tempfile
import numpy as np
from spikepipe_jax import runtime
assert runtime.configure_allocator()
from spikepipe_jax import train
from configs import conv_medium

def status():
    with open("/proc/self/status") as f:
        d = {l.split(":")[0]: int(l.split()[1]) / 1024 for l in f if l.startswith(("VmRSS", "VmHWM"))}
    return d["VmRSS"], d["VmHWM"]

root = sys.argv[1]
rng = np.random.default_rng(0)
for split, n in (("train", 512), ("t10k", 128)):
    for kind, arr in (("images-idx3", rng.integers(0, 256, (n, 28, 28))), ("labels-idx1", rng.integers(0, 10, n))):
        arr = np.asarray(arr, np.uint8)
        with gzip.open(os.path.join(root, f"{split}-{kind}-ubyte.gz"), "wb") as f:
            f.write(bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
                    + arr.tobytes())
c = conv_medium.get_config()
c.data.name, c.data.dir = "fashion_mnist", root
c.model.num_steps, c.train.batch_size, c.train.eval_batch_size = 8, 64, 64
c.train.epochs, c.train.log_every_steps = 1, 1
recs = []
train.train_and_evaluate(c, os.path.join(root, "wd"), log=lambda m: recs.append([m.split()[0], *status()]))
print(json.dumps(recs))
"""


@glibc_linux
def test_the_training_steps_peak_stays_at_one_buffer(repo_root, tmp_path):
    """The steps reuse one buffer's memory: the resident peak does not grow after the first step
    (without runtime.make_room before each step it grew by a buffer in about half the runs)."""
    import os
    proc = subprocess.run([sys.executable, "-c", _LOOP_CHILD, str(tmp_path)], cwd=repo_root, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(repo_root)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    recs = json.loads(proc.stdout.strip().splitlines()[-1])
    start = next(r for r in recs if r[0] == "training")  # compiled, about to take the first step
    steps = [r for r in recs if r[0] == "step"]
    assert len(steps) == 8, recs
    buffer = steps[1][1] - start[1]  # resident growth over the first two steps: about a step buffer
    assert buffer > 40, recs  # a buffer worth measuring
    assert steps[-1][2] - steps[0][2] < 0.3 * buffer, recs  # the peak after step 1 vs the last step's

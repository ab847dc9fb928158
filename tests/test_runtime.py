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


# A fresh process with the allocator configured: a 64 MiB block is touched and freed below a
# small block that stays, then a 128 MiB block (too large for the freed place) is touched; with
# release_free_memory between them the freed block's pages are given back first. Reports the
# peak RSS growth over the run in MiB.
_TRIM_CHILD = """
import ctypes, json, resource, sys
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


@glibc_linux
def test_the_training_loop_trims_around_each_evaluation(tmp_path, monkeypatch):
    from spikepipe_jax import train
    from configs import fc_digits

    calls = []
    real = runtime.release_free_memory
    monkeypatch.setattr(runtime, "release_free_memory", lambda: calls.append(1) or real())
    c = fc_digits.get_config("smoke")
    c.train.epochs = 2
    train.train_and_evaluate(c, str(tmp_path), log=lambda s: None)
    assert len(calls) == 1 + 2 * 2  # after compiling, then before and after each of the 2 evaluations

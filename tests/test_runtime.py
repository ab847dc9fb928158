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

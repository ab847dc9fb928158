"""Process settings for the project's training processes: the glibc ``malloc`` configuration.

XLA:CPU allocates each jitted call's temporary buffer (tens to hundreds of MB for a training
step) with ``malloc`` and frees it when the call returns. glibc serves blocks that large with a
fresh ``mmap`` (above ``M_MMAP_THRESHOLD``) and unmaps them on ``free``, so every training step
page-faults its whole temporary buffer in again: most of a conv_medium epoch went to system
time (``benchmarks/README.md``, section 1 and the end-to-end section).
:func:`configure_allocator` makes the process keep freed memory for the next step instead:

* ``M_MMAP_MAX = 0``: large blocks come from the heap, not from their own mappings;
* ``M_TRIM_THRESHOLD``: the top of the heap is given back to the system only when more than
  this much is free there (here 2 GiB, the most ``mallopt`` takes; at 1 GiB conv_medium's
  heap was still trimmed and faulted in again every step), so the next step's buffer is
  already mapped;
* ``M_ARENA_MAX = 1``: one heap for all threads (XLA's worker threads would otherwise each
  get an arena, whose large blocks glibc can only ``mmap``).

A freed buffer is only reused if the next step's buffer is allocated after it was freed. With
JAX's asynchronous dispatch on CPU, XLA frees a step's temporary buffer in a callback that runs
after the step's outputs are marked ready, so the next step (dispatched as soon as they are)
sometimes allocated its buffer while the previous one was still held: the heap then grew by a
whole buffer each time, and kept it (measurements: benchmarks/README.md, section 1).
:func:`configure_allocator` therefore also turns JAX's CPU dispatch synchronous
(``jax_cpu_enable_async_dispatch=False``): a computation whose inputs are all ready then runs
inline, on the calling thread, and returns after its buffers are freed. The training loop
waits for each batch's transfer before the step (``train/loop.py``), so every step runs inline;
a computation with inputs still in flight is dispatched asynchronously as before.

Even so, a freed buffer's place cannot always hold the next one (the first step after
compiling or an evaluation, and at random: :func:`make_room`); the training loop therefore
calls :func:`make_room` before each step, which gives the free pages back when the next buffer
would land in new memory, so the peak stays at one buffer.

The training entry points (``scripts/train.py``, ``scripts/delay_study.py``,
``scripts/reproduce.py``) and :func:`spikepipe_jax.train.train_and_evaluate` (so the
notebooks too) call it; calling it again sets the same values. It acts on glibc Linux only (elsewhere, and when
``SPIKEPIPE_MALLOC=default`` or ``GLIBC_TUNABLES`` already sets ``glibc.malloc.*``, it does
nothing). Call it before JAX starts its threads (before the first JAX computation) for the
arena setting to cover them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import mmap
import os
import sys
from typing import Optional

# glibc <malloc.h> mallopt parameters
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8

DEFAULT_TRIM_THRESHOLD = 2**31 - 1  # bytes free at the heap's top before glibc gives memory back (mallopt's max)

def _libc() -> Optional[ctypes.CDLL]:
    if not sys.platform.startswith("linux"):
        return None
    return _load_glibc()


@functools.lru_cache(maxsize=1)
def _load_glibc() -> Optional[ctypes.CDLL]:
    """glibc with the prototypes used here (loaded once: :func:`make_room` runs every step)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only (not musl)
        libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
        libc.malloc.argtypes, libc.malloc.restype = (ctypes.c_size_t,), ctypes.c_void_p
        libc.free.argtypes = (ctypes.c_void_p,)
        libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)
    except (OSError, AttributeError):
        return None
    return libc


def _wanted() -> bool:
    """Whether the environment leaves the allocator to :func:`configure_allocator`."""
    return (os.environ.get("SPIKEPIPE_MALLOC", "") != "default"
            and "glibc.malloc" not in os.environ.get("GLIBC_TUNABLES", ""))


def configure_allocator(trim_threshold: int = DEFAULT_TRIM_THRESHOLD) -> bool:
    """Configures glibc ``malloc`` for XLA's per-step buffers (module docstring); idempotent.

    Returns whether the settings are in force; False on other platforms and C libraries, or when switched off by the
    environment (``SPIKEPIPE_MALLOC=default``, or ``GLIBC_TUNABLES`` naming ``glibc.malloc``,
    which then decides). When in force, JAX's CPU dispatch is made synchronous too (module
    docstring); it takes effect for a CPU backend created after the call.
    """
    if _wanted():
        libc = _libc()
        if libc is not None:
            ok = all(libc.mallopt(p, v) == 1 for p, v in ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0),
                                                         (M_TRIM_THRESHOLD, int(trim_threshold))))
            if ok:
                import jax  # here, not at module level: the scripts call this before anything imports JAX

                jax.config.update("jax_cpu_enable_async_dispatch", False)
            return ok
    return False


def release_free_memory() -> bool:
    """Gives the pages of the heap's free blocks back to the system (glibc ``malloc_trim(0)``).

    With the settings of :func:`configure_allocator` the heap never shrinks by itself: the
    compiler's memory, freed after compiling the train step, would stay resident beside the
    step's temporary buffer, which goes above it. The training loop calls this after compiling
    the steps, and :func:`make_room` before a step whose buffer would go to new memory (e.g. the
    evaluation's after the train steps', vgg_large: 1.4 GB of evaluation buffer above 0.9 GB of
    train-step buffer without it). Returns whether it ran (glibc only).
    """
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


XLA_ALIGNMENT = 64  # XLA:CPU allocates its buffers with posix_memalign(64, n)


def make_room(nbytes: int, count: int = 1) -> bool:
    """Prepares the heap for a computation about to allocate ``count`` temporary buffers of
    ``nbytes`` each (XLA:CPU, one per device); call it just before the call.

    Where the buffers will land in free memory that is still resident (the previous step's
    buffer, freed), nothing is done: they reuse it. Otherwise they will fault in new pages
    while resident free memory elsewhere holds nothing, and the peak grows by a whole buffer.
    That happens when the previous buffer's place cannot hold the next one: the first step
    after compiling, the first after an evaluation (buffers of another size), and at random (an
    aligned request carves its block with a few bytes' slack on each side; glibc keeps those
    slivers in the thread's cache of small blocks, where they stay allocated and cut the freed
    block off from its neighbours, so that its place cannot hold the same request again); or
    when a larger free place, given back by an earlier trim, is chosen instead. Then the free
    pages are given back first (:func:`release_free_memory`), so the new placement does not
    add to the resident set.

    How it tells: it asks for blocks of the size the aligned requests need (``nbytes`` plus
    the alignment's slack) with plain ``malloc`` (no slivers), untouched (no pages faulted
    in), so glibc places them where it will place the buffers; asks the kernel which of their
    pages are resident (``mincore``), and frees them. Returns whether it gave memory back; False
    without glibc, for ``nbytes <= 0``, and where the environment switches
    :func:`configure_allocator` off (large blocks are then mapped on their own and never reuse
    memory anyway).
    """
    libc = _libc()
    if libc is None or nbytes <= 0 or count <= 0 or not _wanted():
        return False
    size = int(nbytes) + XLA_ALIGNMENT + 32  # glibc's memalign(a, n) takes a block of n + a + 32 bytes
    page = mmap.PAGESIZE
    vec = ctypes.create_string_buffer(size // page + 1)  # before the probes: not placed beside them
    blocks = [libc.malloc(size) for _ in range(count)]
    resident = total = 0
    for p in blocks:
        if not p:
            continue
        first = -(-p // page) * page  # the block's whole pages
        n = (p + size - first) // page
        if n > 0 and libc.mincore(ctypes.c_void_p(first), n * page, vec) == 0:
            resident += n - ctypes.string_at(vec, n).count(0)  # a byte per page, 1: resident
            total += n
    for p in blocks:
        libc.free(p)
    if total and resident < 0.9 * total:
        return release_free_memory()
    return False


ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


def initialize_distributed(coordinator: str = "", num_processes: int = 0, process_id: int = -1) -> bool:
    """Joins a multi-process JAX run (``jax.distributed.initialize``) when a coordinator is given.

    Arguments left empty come from ``$JAX_COORDINATOR_ADDRESS``, ``$JAX_NUM_PROCESSES`` and
    ``$JAX_PROCESS_ID``. With neither, nothing happens (one process) and False is returned. On the
    CPU backend the processes' collectives go through gloo. Call before the first JAX computation.

    Raises:
      ValueError: a coordinator without the process count or id, or values out of range (named).
    """
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR, "")
    if not coordinator:
        return False
    try:
        num_processes = num_processes or int(os.environ.get(ENV_NUM_PROCESSES, "0"))
        process_id = process_id if process_id >= 0 else int(os.environ.get(ENV_PROCESS_ID, "-1"))
    except ValueError as e:
        raise ValueError(f"${ENV_NUM_PROCESSES} / ${ENV_PROCESS_ID} must be integers: {e}") from None
    if num_processes < 1:
        raise ValueError(f"a multi-process run at {coordinator!r} needs the process count "
                         f"(--num_processes or ${ENV_NUM_PROCESSES}), got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process id {process_id} is not in [0, {num_processes}) "
                         f"(--process_id or ${ENV_PROCESS_ID})")
    import jax

    if os.environ.get("JAX_PLATFORMS", "cpu").split(",")[0] in ("cpu", ""):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    return True

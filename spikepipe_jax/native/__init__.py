"""Native XLA:CPU kernels (XLA FFI custom calls), built from source on first use.

``lif_dense.cc``: a LIF layer fused with the narrow dense layer that reads its spikes (a
classifier's readout), forward and backward; its JAX side is :mod:`spikepipe_jax.snn.fused`.
``col2im.cc``: the fold of the im2col convolution's input gradient
(:func:`spikepipe_jax.snn.layers._im2col_bwd`). ``binary_dense.cc``: products with a 0/1
(spike) operand, forward ``X W`` and weight gradient ``X^T G``, as sums of selected rows
(:func:`spikepipe_jax.snn.layers.binary_dense` and the im2col conv on spikes). ``parallel.h``: work split over XLA's
intra-op thread pool. Everything here is optional: when no C++ compiler is found,
the build fails, or ``SPIKEPIPE_NATIVE=0`` is set, :func:`load` returns ``None`` and the
networks run their pure-XLA path (same values, see ``tests/test_fused.py``).

The shared library is compiled with the system ``g++`` (``$CXX`` overrides it) against the
FFI headers shipped in jaxlib (``jax.ffi.include_dir()``), with ``-march=native`` (AVX-512
intrinsics where the CPU has them, portable loops elsewhere; ``$SPIKEPIPE_NATIVE_FLAGS`` adds
flags, e.g. ``-mno-avx512f``), into
``$SPIKEPIPE_NATIVE_DIR`` (default ``spikepipe_jax/native/_build/``, git-ignored). The file
name carries a hash of the source, the flags, the compiler, jaxlib's version and this CPU's
feature flags, so a changed source, toolchain or machine gets its own build (a new build
removes the older ones in that folder). The library is
written to a temporary name and renamed into place (concurrent builds, e.g. pytest-xdist
workers, cannot leave a half-written file). ``make native`` or ``python -m
spikepipe_jax.native`` builds it ahead of time and prints where it is.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple, Optional

HERE = Path(__file__).parent
SOURCES = (HERE / "lif_dense.cc", HERE / "col2im.cc", HERE / "binary_dense.cc")
HEADERS = (HERE / "parallel.h",)
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-ffp-contract=off", "-std=c++17", "-shared",
         "-fPIC")
# $SPIKEPIPE_NATIVE_FLAGS adds compiler flags (e.g. "-mno-avx512f" builds the portable loops)


def _flags() -> tuple[str, ...]:
    return FLAGS + tuple(os.environ.get("SPIKEPIPE_NATIVE_FLAGS", "").split())
# XLA FFI handler symbols in the library -> the custom-call target names they register as
TARGETS = {"LifDenseFwdHandler": "spikepipe_lif_dense_fwd",
           "LifDenseBwdHandler": "spikepipe_lif_dense_bwd",
           "Col2ImHandler": "spikepipe_col2im",
           "BinaryDenseFwdHandler": "spikepipe_binary_dense_fwd",
           "BinaryDenseWeightGradHandler": "spikepipe_binary_dense_wgrad",
           "BinaryConvFwdHandler": "spikepipe_binary_conv_fwd",
           "BinaryConvWeightGradHandler": "spikepipe_binary_conv_wgrad"}


class Native(NamedTuple):
    """The loaded library (``None`` in ``lib`` when unavailable) and why it is (un)available."""
    lib: Optional[ctypes.CDLL]
    path: Optional[Path]
    reason: str


def _build_dir() -> Path:
    return Path(os.environ.get("SPIKEPIPE_NATIVE_DIR") or Path(__file__).with_name("_build"))


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    import platform
    return platform.machine() + platform.processor()


def _compiler() -> Optional[str]:
    return shutil.which(os.environ.get("CXX", "g++"))


def library_path(compiler: str) -> Path:
    """Where the build for this source, compiler, jaxlib and CPU lives."""
    import jaxlib
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    texts = [f.read_text() for f in SOURCES + HEADERS]
    key = hashlib.sha256("\0".join([*texts, " ".join(_flags()), version,
                                    jaxlib.__version__, _cpu_flags()]).encode()).hexdigest()[:16]
    return _build_dir() / f"libspikepipe-{key}.so"


def build(compiler: str) -> Path:
    """Compiles the library if it is not there yet; returns its path (raises on failure)."""
    import jax.ffi
    path = library_path(compiler)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        cmd = [compiler, *_flags(), f"-I{jax.ffi.include_dir()}", *map(str, SOURCES), "-o", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"building the native kernels failed ({' '.join(cmd)}):\n"
                               f"{proc.stderr.strip()[-2000:]}")
        os.replace(tmp, path)
        for old in path.parent.glob("libspikepipe-*.so"):  # builds of older sources or flags
            if old != path:
                old.unlink(missing_ok=True)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


@functools.cache
def load() -> Native:
    """Builds (if needed) and loads the library once per process, registering its FFI targets
    for the CPU platform. Never raises: a failure is reported in ``Native.reason``."""
    if os.environ.get("SPIKEPIPE_NATIVE", "1") == "0":
        return Native(None, None, "disabled by SPIKEPIPE_NATIVE=0")
    compiler = _compiler()
    if compiler is None:
        return Native(None, None, f"no C++ compiler ({os.environ.get('CXX', 'g++')}) on PATH")
    try:
        import jax
        path = build(compiler)
        lib = ctypes.cdll.LoadLibrary(str(path))
        for symbol, target in TARGETS.items():
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    except Exception as e:  # noqa: BLE001 -- any failure means "use the XLA path"
        return Native(None, None, f"{type(e).__name__}: {e}")
    return Native(lib, path, "loaded")


def available() -> bool:
    """True when the native kernels are built, loaded and registered."""
    return load().lib is not None


def require(what: str) -> None:
    """Raises a ``RuntimeError`` naming ``what`` and the reason when the kernels are unavailable
    (for wrappers called directly; models decide with :func:`usable` first)."""
    if not available():
        raise RuntimeError(f"the native {what} kernel is not available ({load().reason})")


MODES = ("auto", "on", "off")


def usable(mode: str) -> bool:
    """Whether computations traced now should use the native kernels, for ``model.native``.

    ``"off"``: never. ``"auto"``: when the default backend is a single CPU device and the
    library is built (on several devices the batch is sharded, which these custom calls are
    not written for; other backends have their own libraries). ``"on"``: like ``"auto"``, but
    raises a ``ValueError`` naming the reason where ``"auto"`` would fall back. Each kernel's wrapper adds
    its own structural conditions (shapes, dtypes) on top.
    """
    if mode not in MODES:
        raise ValueError(f"unknown model.native {mode!r}; expected one of {MODES}")
    if mode == "off":
        return False
    import jax
    reasons = []
    if jax.default_backend() != "cpu":
        reasons.append(f"backend is {jax.default_backend()}, not cpu")
    if jax.local_device_count() != 1:
        reasons.append(f"{jax.local_device_count()} local devices (sharded batch)")
    elif jax.process_count() > 1:
        reasons.append(f"{jax.process_count()} processes (sharded batch)")
    if not reasons and not available():
        reasons.append(load().reason)
    if reasons and mode == "on":
        raise ValueError("model.native='on' but the native kernels cannot be used: " + "; ".join(reasons))
    return not reasons

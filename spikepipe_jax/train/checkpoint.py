"""Checkpoints: msgpack files (flax.serialization, written atomically through :mod:`spikepipe_jax.io`)
for the training state and (one file per process) the asynchronous pipeline executors' states,
orbax-checkpoint for the tick-synchronous pipeline executor's sharded state
(:class:`ShardedCheckpoints`); :func:`read_common_latest` lets several processes agree on the
step they resume from.

A training run keeps two: :func:`save_rotating` moves the newest checkpoint to
``<stem>.prev.msgpack`` before it writes the new one, and :func:`restore_latest` falls back to
that previous checkpoint when the newest one cannot be read (damaged on disk), saying so. Each
file is written atomically and the move is one ``os.replace``, so a kill at any point leaves at
least one complete checkpoint once the first has been written.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Optional

import flax.serialization
import jax
import numpy as np

from spikepipe_jax.io import atomic_write_bytes


def save(path: str, state: Any) -> None:
    """Serialises a pytree of arrays (msgpack, via flax.serialization) atomically."""
    atomic_write_bytes(path, flax.serialization.to_bytes(jax.device_get(state)))


def restore(path: str, template: Any) -> Any:
    """Restores a pytree saved by :func:`save` into the structure of ``template``."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return flax.serialization.from_bytes(template, data)
    except Exception as e:  # corrupt or from another network/optimiser
        raise ValueError(f"checkpoint {path} is corrupt or does not match this config "
                         f"(network/optimiser changed?): {type(e).__name__}: {e}") from None


def prev_path(path: str) -> str:
    """Where :func:`save_rotating` keeps the checkpoint before ``path``'s newest one."""
    stem, ext = os.path.splitext(path)
    return f"{stem}.prev{ext}"


def exists(path: str) -> bool:
    """Whether a rotating checkpoint (newest or previous) exists at ``path``."""
    return os.path.exists(path) or os.path.exists(prev_path(path))


def save_rotating(path: str, state: Any) -> None:
    """Saves ``state`` at ``path``; the checkpoint it replaces becomes :func:`prev_path`."""
    if os.path.exists(path):
        os.replace(path, prev_path(path))
    save(path, state)


def restore_latest(path: str, template: Any, *,
                   warn: Callable[[str], None]) -> Optional[tuple[Any, str]]:
    """Restores the newest readable checkpoint of :func:`save_rotating` into ``template``'s
    structure (:func:`read_latest`)."""
    return read_latest(path, lambda p: restore(p, template), warn=warn)


def _gather_steps(step: int) -> list[int]:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(np.int32(step))).ravel().tolist()


def load_msgpack(path: str) -> Any:
    """A msgpack checkpoint file's contents (host arrays), ValueError naming it if unreadable."""
    try:
        with open(path, "rb") as f:
            return flax.serialization.msgpack_restore(f.read())
    except Exception as e:
        raise ValueError(f"checkpoint {path} is corrupt: {type(e).__name__}: {e}") from None


def read_common_latest(path: str, step_of: Callable[[Any], int], build: Callable[[Any, str], Any], *,
                       warn: Callable[[str], None], load: Callable[[str], Any] = load_msgpack
                       ) -> Optional[tuple[Any, str]]:
    """This process's part of the newest checkpoint every process can resume from.

    ``load(path)`` reads a file (ValueError if it cannot), ``step_of`` its step, ``build(loaded,
    path)`` makes the state from it (placing arrays on devices; with several processes that may
    be a collective, so it runs only once the processes have agreed on the step). Returns
    ``(state, path read)`` or ``None``. One process: :func:`read_latest`. Several: every process
    saves its part at the same steps and keeps the previous file, so a run killed between two
    processes' writes leaves some one checkpoint ahead: those read their previous one (the newest
    step every process has), saying so; where one process has none yet, all start afresh. Raises
    ValueError naming each process's step where no common step is saved (e.g. files removed by
    hand)."""
    if jax.process_count() == 1:
        return read_latest(path, lambda p: build(load(p), p), warn=warn)
    got = read_latest(path, load, warn=warn)  # (contents, path): damaged newest -> previous
    steps = _gather_steps(-1 if got is None else step_of(got[0]))
    target = min(steps)
    if got is not None and step_of(got[0]) > target:
        ahead = f"the processes' checkpoints are at steps {steps} (process 0, 1, ...; -1: none)"
        if target < 0:
            warn(f"{ahead}: every process starts afresh")
            got = None
        elif got[1] == path and os.path.exists(prev_path(path)):
            try:
                older = load(prev_path(path))
            except ValueError:
                older = None
            if older is not None and step_of(older) == target:
                warn(f"{ahead}: resuming every process from step {target} ({prev_path(path)} here)")
                got = (older, prev_path(path))
    steps = _gather_steps(-1 if got is None else step_of(got[0]))
    if len(set(steps)) > 1:
        raise ValueError(f"the processes' checkpoints in {os.path.dirname(path)} are at different steps {steps} "
                         f"(process 0, 1, ...; -1: none) and no step is saved by all; use a new workdir")
    return None if got is None else (build(*got), got[1])


def read_latest(path: str, read: Callable[[str], Any], *,
                warn: Callable[[str], None]) -> Optional[tuple[Any, str]]:
    """Reads the newest readable of ``path`` and :func:`prev_path` with ``read`` (which raises
    ValueError for a file it cannot read).

    Returns ``(state, path read)``, or ``None`` where neither file exists. A newest checkpoint
    that cannot be read is moved to ``<path>.corrupt`` (so the next save does not rotate it
    over the good one) and the previous one is read instead, with a ``warn`` message that says
    so. Raises ValueError (the newest file's error, naming the previous one too) when neither
    can be read.
    """
    prev = prev_path(path)
    if os.path.exists(path):
        try:
            return read(path), path
        except ValueError as e:
            if not os.path.exists(prev):
                raise
            try:
                state = read(prev)
            except ValueError as e_prev:
                raise ValueError(f"{e}; the previous checkpoint {prev} cannot be read either "
                                 f"({e_prev})") from None
            os.replace(path, path + ".corrupt")
            warn(f"{e}; moved it to {path}.corrupt and resumed from the previous checkpoint {prev}")
            return state, prev
    if os.path.exists(prev):  # killed between the rotation and the new file's rename
        return read(prev), prev
    return None


ORBAX_DIR = "checkpoint_orbax"  # the tick-synchronous executor's checkpoints, in a workdir


class _OrbaxInfoFilter(logging.Filter):
    """Drops orbax's INFO/DEBUG records (several per save) from absl's log; warnings stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


def _quiet_orbax() -> None:
    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, _OrbaxInfoFilter) for f in absl_logger.filters):
        absl_logger.addFilter(_OrbaxInfoFilter())


class ShardedCheckpoints:
    """The pipeline executor's checkpoints: orbax-checkpoint, each array saved from its shards.

    Its state (``train.executor.ExecState``: a parameter copy per stage, the optimiser states, the
    rings of in-flight residuals, inputs and labels) is sharded over the ``("data", "stage")``
    mesh and, in several processes, spread over them. orbax writes every process's shards itself
    (no gather to process 0), compresses them, and saves ~5x faster here than gathering the
    state into one msgpack file (``python -m benchmarks.checkpoint``, benchmarks/README.md).

    Same guarantees as :func:`save_rotating` / :func:`restore_latest`: a step is written into a
    temporary directory and renamed when complete (orbax's atomic commit), the two newest steps
    are kept, and a newest step that cannot be read is moved aside (``<step>.corrupt``) and the
    previous one read instead, with a warning. Every process calls every method.
    """

    def __init__(self, directory: str):
        import orbax.checkpoint as ocp

        _quiet_orbax()
        self._ocp = ocp
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(
                max_to_keep=2, create=True, enable_async_checkpointing=False))

    def steps(self) -> list[int]:
        """The finished checkpoints' steps, newest first."""
        self._manager.reload()
        return sorted(self._manager.all_steps(), reverse=True)

    def exists(self) -> bool:
        return bool(self.steps())

    def save(self, step: int, state: Any) -> None:
        """Saves ``state`` as step ``step`` (replacing one of that step, e.g. after a resume)."""
        if step in self._manager.all_steps():
            self._manager.delete(step)
        self._manager.save(step, args=self._ocp.args.StandardSave(state), force=True)
        self._manager.wait_until_finished()

    def restore_latest(self, template: Any, *, warn: Callable[[str], None]) -> Optional[tuple[Any, str]]:
        """The newest readable step into ``template``'s structure and shardings, and its path;
        None without checkpoints. Raises ValueError when none can be read."""
        abstract = jax.tree.map(self._ocp.utils.to_shape_dtype_struct, template)
        errors = []
        for step in self.steps():
            path = os.path.join(self.directory, str(step))
            try:
                state = self._manager.restore(step, args=self._ocp.args.StandardRestore(abstract))
            except Exception as e:  # damaged on disk, or from another network / optimiser
                errors.append(f"checkpoint {path} is corrupt or does not match this config "
                              f"(network/optimiser changed?): {type(e).__name__}: {e}")
                if jax.process_index() == 0:
                    os.replace(path, path + ".corrupt")
                self._manager.reload()
                continue
            if errors:
                warn(f"{'; '.join(errors)}; moved it aside (<step>.corrupt) and resumed from the previous "
                     f"checkpoint {path}")
            return state, path
        if errors:
            raise ValueError("; ".join(errors))
        return None

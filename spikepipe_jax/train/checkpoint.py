"""Checkpoints: msgpack files (flax.serialization, written atomically through :mod:`spikepipe_jax.io`)
for the training state, orbax-checkpoint for the pipeline executor's sharded state
(:class:`ShardedCheckpoints`).

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


def check_same_step(directory: str, step: int) -> None:
    """With several processes (each restored its own part of a checkpoint, ``step``; -1 for none)
    every one must have read the same step: a collective over all processes, raising ValueError
    naming each process's step otherwise. Nothing to check in one process."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils
    steps = np.asarray(multihost_utils.process_allgather(np.int32(step))).ravel().tolist()
    if len(set(steps)) > 1:
        raise ValueError(f"the processes' checkpoints in {directory} are at different steps {steps} (process 0, 1, "
                         f"...; -1: none); remove the newer ones or use a new workdir")


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


ORBAX_DIR = "checkpoint_orbax"  # the pipeline executor's checkpoints, in the run's workdir


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

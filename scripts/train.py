"""Trains a spiking network from a config file.

    python -m scripts.train --config=configs/fc_digits.py --workdir=runs/fc_digits
    python -m scripts.train --config=configs/conv_medium.py --config.data.dir=/data/mnist --workdir=runs/cm
    python -m scripts.train --config=configs/fc_digits.py:smoke --workdir=/tmp/smoke

Re-running the same command after the process was killed resumes from the last checkpoint (or,
if that file is damaged, from the one before it, with a warning). Bad input (a missing or failing
config file, unknown config key, shapes that do not fit, missing data, T <= 0, NaN loss, a workdir
another run is using) ends with a one-line ``error: ...`` and exit status 1.

Several processes (hosts, or local processes for a test): the same command in each, with
``--coordinator_address=host:port --num_processes=N --process_id=i`` (or the environment
variables ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``); all devices
of all processes form the mesh, and process 0 alone writes the workdir.
"""

import os
import traceback

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
from spikepipe_jax import runtime  # noqa: E402

runtime.configure_allocator()  # glibc malloc settings for XLA's per-step buffers, before JAX starts

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from spikepipe_jax.experiments import exit_with_error  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Network/experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for metrics.jsonl, config.json and checkpoints.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "host:port of process 0 for a multi-process run "
                                   "(default $JAX_COORDINATOR_ADDRESS; empty: one process).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Processes of a multi-process run (default $JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's index (default $JAX_PROCESS_ID).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        runtime.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    except ValueError as e:
        exit_with_error(e)
    import jax
    from spikepipe_jax import train
    config = _CONFIG.value
    logging.info("config:\n%s", config)
    try:
        summary = train.train_and_evaluate(config, _WORKDIR.value)
    except (ValueError, FileNotFoundError, FloatingPointError, KeyError) as e:
        exit_with_error(e)
    if jax.process_index() == 0:
        print(f"final test accuracy: {summary['test_accuracy']:.4f} "
              f"({summary['step']} steps, {summary['wall_s']:.1f} s, workdir {_WORKDIR.value})", flush=True)


def _config_arg(argv) -> str:
    """The value given to --config (``path[:arg]``), "" when absent."""
    for i, a in enumerate(argv[1:], 1):
        if a.startswith(("--config=", "-config=")):
            return a.split("=", 1)[1]
        if a in ("--config", "-config") and i + 1 < len(argv):
            return argv[i + 1]
    return ""


def _raised_in(e: BaseException, path: str) -> bool:
    """Whether ``e`` was raised by code in file ``path``."""
    target = os.path.abspath(path)
    return any(os.path.abspath(f.filename) == target for f in traceback.extract_tb(e.__traceback__))


def parse_flags(argv):
    """absl flag parsing with a one-line error instead of a traceback: a config file that is
    missing or fails to load (named), an unknown config key, a bad value."""
    config_file = _config_arg(argv).split(":", 1)[0]
    try:
        rest = flags.FLAGS(argv)
        _CONFIG.value.get("seed")  # config_flags defers a missing file's error to the first access
        return rest
    except OSError as e:  # the file could not be read (config_flags wraps the OS error)
        reason = ("no such file" if not os.path.exists(config_file) else
                  "a folder, not a file" if os.path.isdir(config_file) else str(e).strip().splitlines()[-1].strip())
        exit_with_error(OSError(f"cannot load config file {config_file!r}: {reason}"))
    except (KeyError, AttributeError) as e:
        keys = [a for a in argv[1:] if a.startswith("--config.")]
        if _raised_in(e, config_file):  # the config file's own code, not an override
            exit_with_error(ValueError(f"config file {config_file!r} failed to load: {type(e).__name__}: {e}"))
        exit_with_error(ValueError(f"unknown config key {str(e).strip() or type(e).__name__} in {keys}"))
    except (flags.Error, ValueError, TypeError) as e:
        msg = str(e).strip()
        if "Error whilst parsing config file" in msg:  # get_config raised: its traceback's last line
            msg = f"config file {config_file!r} failed to load: {msg.splitlines()[-1].strip()}"
        exit_with_error(ValueError(msg))
    except Exception as e:  # anything else is raised by the config file's own code
        exit_with_error(ValueError(f"config file {config_file!r} failed to load: {type(e).__name__}: {e}"))


if __name__ == "__main__":
    logging.set_stderrthreshold("info")
    app.run(main, flags_parser=parse_flags)

"""Trains a spiking network from a config file.

    python -m scripts.train --config=configs/fc_digits.py --workdir=runs/fc_digits
    python -m scripts.train --config=configs/conv_medium.py --config.data.dir=/data/mnist --workdir=runs/cm
    python -m scripts.train --config=configs/fc_digits.py:smoke --workdir=/tmp/smoke

Re-running the same command after the process was killed resumes from the last checkpoint.
Bad input (unknown config key, shapes that do not fit, missing data, T <= 0, NaN loss) ends
with a one-line ``error: ...`` and exit status 1.
"""

import os
import sys

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
from spikepipe_jax import runtime; runtime.configure_allocator()  # noqa: E402,E702 - glibc malloc, before JAX starts

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from spikepipe_jax.experiments import exit_with_error  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Network/experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for metrics.jsonl, config.json and checkpoints.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from spikepipe_jax import train
    config = _CONFIG.value
    logging.info("config:\n%s", config)
    try:
        summary = train.train_and_evaluate(config, _WORKDIR.value)
    except (ValueError, FileNotFoundError, FloatingPointError, KeyError) as e:
        exit_with_error(e)
    print(f"final test accuracy: {summary['test_accuracy']:.4f} "
          f"({summary['step']} steps, {summary['wall_s']:.1f} s, workdir {_WORKDIR.value})", flush=True)


def parse_flags(argv):
    """absl flag parsing with a one-line error (unknown config key, bad value) instead of a traceback."""
    try:
        return flags.FLAGS(argv)
    except (KeyError, AttributeError) as e:
        keys = [a for a in argv[1:] if a.startswith("--config.")]
        exit_with_error(ValueError(f"unknown config key {str(e).strip() or type(e).__name__} in {keys}"))
    except (flags.Error, ValueError, TypeError) as e:
        exit_with_error(e)


if __name__ == "__main__":
    logging.set_stderrthreshold("info")
    app.run(main, flags_parser=parse_flags)

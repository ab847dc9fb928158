"""Accuracy cost of pipeline gradient delays (and mitigation) over networks, settings and seeds.

    python -m scripts.delay_study --out=runs/delay_study                       # digits nets, 3 seeds (~15 min)
    python -m scripts.delay_study --out=/tmp/ds --nets=fc_digits --seeds=1 --smoke
    python -m scripts.delay_study --out=runs/ds_mnist --nets=fc_small --data_dir=/data/mnist   # GPU advised

Writes OUT/delay_study.{json,md,csv} and OUT/delay_study.png; re-running skips finished runs.
"""

import functools

from absl import app, flags

from spikepipe_jax import runtime
from spikepipe_jax.experiments import exit_with_error, run_script

runtime.configure_allocator()  # glibc malloc settings for XLA's per-step buffers (spikepipe_jax/runtime.py)

_OUT = flags.DEFINE_string("out", None, "Output folder.")
_NETS = flags.DEFINE_list("nets", ["fc_digits", "conv_digits", "deep_digits"], "Network configs.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per setting (0..seeds-1).", lower_bound=1)
_MITIGATE = flags.DEFINE_list("mitigate_nets", ["deep_digits"], "Networks that also run the mitigations.")
_SIMULATE = flags.DEFINE_list("simulate_nets", ["deep_digits"], "Networks that also run the pipeline simulator.")
_SETTINGS = flags.DEFINE_list("settings", [], "Only these setting names (default: all that apply).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny configs (tests).")
_EPOCHS = flags.DEFINE_integer("epochs", 0, "Override train.epochs (0: the config's).", lower_bound=0)
_DATA_DIR = flags.DEFINE_string("data_dir", "", "data.dir for networks on file datasets.")
flags.mark_flags_as_required(["out"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from spikepipe_jax.train import delay_study
    from spikepipe_jax.report import write_delay_study

    settings_for = functools.partial(delay_study.settings_for, mitigate_nets=_MITIGATE.value,
                                     simulate_nets=_SIMULATE.value, only=_SETTINGS.value or ())

    def overrides(config, net):
        if _DATA_DIR.value:
            config.data.dir = _DATA_DIR.value
        if _EPOCHS.value:
            config.train.epochs = _EPOCHS.value

    try:
        records = delay_study.run_study(_NETS.value, settings_for, range(_SEEDS.value), _OUT.value,
                                        config_arg="smoke" if _SMOKE.value else "", overrides=overrides)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        exit_with_error(e)
    paths = write_delay_study(records, delay_study.summarize(records), _OUT.value)
    print(open(paths["md"]).read())
    print("wrote", ", ".join(sorted(paths.values())))


if __name__ == "__main__":
    run_script(main)

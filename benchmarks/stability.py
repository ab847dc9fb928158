"""Why fc_small's training was fragile under gradient delays, and what fixed it (issue 14).

Command:  python -m benchmarks.stability [--steps=200] [--variants=...] [--delays=none,1.1] [--out=FILE]

Trains ``configs/fc_small.py`` on real Fashion-MNIST (``--data_dir``, default Debian's folder) for
``--steps`` steps in each *variant* (config overrides on top of the current defaults) and each
delay setting (per-layer delays, ``1.1`` = one step on both layers), and prints one JSON line per
run: final test accuracy on the first ``--max_test`` test images, the training-loss trace, and
every ``--stat_every`` steps the readout's activity (mean gap between the largest and the mean
logit; for a spiking readout also the share of samples whose output layer stayed silent) and
the gradient norm of each layer.
``benchmarks/README.md`` (section "Training stability") holds the results and their reading.
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from spikepipe_jax import data as data_lib
from spikepipe_jax import snn
from spikepipe_jax.experiments import load_config
from spikepipe_jax.train import loop, losses
from spikepipe_jax.train import optimizer as optimizer_lib

# The fc_small defaults before issue 14 (spiking readout, spike-count loss, constant learning
# rate, no warm-up), single changes to them, and today's defaults (configs/fc_small.py).
_OLD = {"model.readout": "count", "train.loss": "ce_count", "train.warmup_steps": 0, "train.lr_schedule": "constant"}
VARIANTS = {
    "old_defaults": _OLD,
    "old+warmup": {**_OLD, "train.warmup_steps": 100},
    "old+membrane_readout": {**_OLD, "model.readout": "membrane", "train.loss": "ce_mem"},
    "old+slope5": {**_OLD, "model.surrogate_scale": 5.0},
    "old+lr2e-4": {**_OLD, "train.learning_rate": 2e-4},
    "defaults_constant_lr": {"train.lr_schedule": "constant"},
    "defaults": {},
}

flags.DEFINE_list("variants", list(VARIANTS), f"Variants to run, from {list(VARIANTS)}.")
flags.DEFINE_list("delays", ["none", "1.1"], "Delay settings: none, 1f1b, or per-layer ints joined by '.'.")
flags.DEFINE_integer("steps", 200, "Training steps per run (batch 128).", lower_bound=1)
flags.DEFINE_integer("seed", 0, "PRNG seed.")
flags.DEFINE_integer("max_test", 2000, "Test images evaluated at the end.", lower_bound=1)
flags.DEFINE_integer("stat_every", 25, "Steps between readout/gradient statistics.", lower_bound=1)
flags.DEFINE_string("data_dir", "", "Fashion-MNIST folder (empty: Debian's dataset-fashion-mnist).")
flags.DEFINE_string("out", "", "Also append the JSON lines to this file.")
FLAGS = flags.FLAGS


def _config(overrides: dict, delays: str, steps: int):
    c = load_config("fc_small")
    c.data.name, c.data.dir = "fashion_mnist", FLAGS.data_dir
    c.data.max_train, c.data.max_test = steps * c.train.batch_size, FLAGS.max_test
    c.seed = FLAGS.seed
    for key, value in overrides.items():
        group, field = key.split(".")
        c[group][field] = value
    c.pipeline.delays = delays.replace(".", ",")
    return c


def run(variant: str, delays: str) -> dict:
    c = _config(VARIANTS[variant], delays, FLAGS.steps)
    model = loop.validate_config(c)
    ds = data_lib.load_dataset("fashion_mnist", c.data.dir, max_train=c.data.max_train, max_test=c.data.max_test)
    tx, params_for_gradient = optimizer_lib.make_optimizer(c, model, total_steps=FLAGS.steps)
    init_key, train_key, eval_key = jax.random.split(jax.random.key(c.seed), 3)
    params = snn.init_params(init_key, model)
    state = loop.TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))
    common = dict(loss_name=c.train.loss, encoding=c.data.encoding, num_steps=c.model.num_steps, num_classes=10)
    step_fn = jax.jit(loop.make_train_step(model, tx, params_for_gradient=params_for_gradient, **common))

    @jax.jit
    def stats(params, x, y, key):
        xt = snn.encode(c.data.encoding, x, c.model.num_steps, key)

        def loss_fn(p):
            out = snn.apply(p, model, xt)
            return losses.compute_loss(c.train.loss, out, y, 10), out

        (_, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        row = {"logit_spread": jnp.mean(out.logits.max(-1) - out.logits.mean(-1)),
               **{f"grad_norm_{k}": optax.global_norm(g) for k, g in grads.items()}}
        if model.readout == "count":  # logits are output spike counts
            row["silent_output"] = jnp.mean(out.logits.max(-1) == 0)
        return row

    order = np.random.default_rng([c.seed, 0]).permutation(len(ds.train_x))
    losses_trace, stat_rows = [], []
    t0 = time.perf_counter()
    for i in range(FLAGS.steps):
        idx = order[i * c.train.batch_size:(i + 1) * c.train.batch_size]
        xb, yb = ds.train_x[idx], ds.train_y[idx]
        if i % FLAGS.stat_every == 0:
            s = stats(state.params, xb, yb, jax.random.fold_in(eval_key, i))
            stat_rows.append({"step": i, **{k: round(float(v), 5) for k, v in s.items()}})
        state, m = step_fn(state, xb, yb, train_key)
        losses_trace.append(float(m["loss"]))
    eval_fn = jax.jit(loop.make_eval_step(model, **common))
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()[:1]), ("data",))
    acc, test_loss = loop.evaluate(eval_fn, state.params, ds.test_x, ds.test_y, batch_size=250, key=eval_key,
                                   data_sharding=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
    return {"variant": variant, "delays": delays, "steps": FLAGS.steps, "seed": c.seed,
            "overrides": VARIANTS[variant], "test_accuracy": round(acc, 4), "test_loss": round(test_loss, 4),
            "loss_every_10": [round(float(np.mean(losses_trace[j:j + 10])), 4)
                              for j in range(0, len(losses_trace), 10)],
            "stats": stat_rows, "wall_s": round(time.perf_counter() - t0, 1)}


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.variants) - set(VARIANTS))
    if unknown:
        raise app.UsageError(f"unknown variant(s) {unknown}; expected names from {list(VARIANTS)}")
    for variant in FLAGS.variants:
        for delays in FLAGS.delays:
            line = json.dumps(run(variant, delays))
            print(line, flush=True)
            if FLAGS.out:
                with open(FLAGS.out, "a") as f:
                    f.write(line + "\n")


if __name__ == "__main__":
    app.run(main)

"""Training: losses, optimiser chain with gradient delays, train/eval steps, loop, checkpoints."""

from spikepipe_jax.train.checkpoint import restore, save
from spikepipe_jax.train.losses import LOSSES, compute_loss, per_example_loss
from spikepipe_jax.train.step import TrainState, step_metrics
from spikepipe_jax.train.loop import (WorkdirBusyError, config_json, evaluate, make_eval_step,
                                      make_train_step, read_metrics, eval_curve,
                                      train_and_evaluate, validate_config, workdir_lock)
from spikepipe_jax.train.pipeline import config_delays, resolve_delays
from spikepipe_jax.train.optimizer import (OPTIMIZERS, POSITIONS, make_base_optimizer,
                                           make_delayed_optimizer, make_mitigated_optimizer,
                                           make_optimizer, make_training_optimizer)
from spikepipe_jax.train.delays import (DelayedGradientsState, broadcast_delays, delayed_gradients,
                                        layer_delays, validate_delays)
from spikepipe_jax.train.mitigation import (MITIGATIONS, DelayCompensatedState, ScaleByDelayState,
                                            WeightPredictionState, delay_compensated_gradients,
                                            mitigation_hparams, needs_params_for_gradient,
                                            params_for_gradient, predict_weights, scale_by_delay,
                                            track_weight_velocity)
from spikepipe_jax.train.stages import partition_layers, stage_costs

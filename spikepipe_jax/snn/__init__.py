"""Spiking neurons, surrogate gradients, layers, encoders and spec-built networks."""

from spikepipe_jax.snn.encoders import direct, encode, latency, rate
from spikepipe_jax.snn.layers import apply_op, apply_synapse, init_layer, pool
from spikepipe_jax.snn.models import (ModelDef, Output, apply, apply_stage, check_input_shape, check_stages,
                                      init_params, layer_currents, layer_neurons, model_from_config,
                                      stage_out_shape, whole)
from spikepipe_jax.snn.neurons import RESETS, lif_scan, lif_step
from spikepipe_jax.snn.surrogate import (arctan, custom, fast_sigmoid, heaviside, make_surrogate,
                                         straight_through, triangle)

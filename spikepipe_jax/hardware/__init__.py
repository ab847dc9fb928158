"""spikepipe_jax.hardware: systolic-array cost model of SNN training tasks.

* :mod:`~spikepipe_jax.hardware.systolic`  closed-form GEMM cycles (SCALE-Sim 3.0.0 exact), jnp
* :mod:`~spikepipe_jax.hardware.simulator` cycle-level NumPy systolic-array simulator
* :mod:`~spikepipe_jax.hardware.mapping`   F_l / B_l / W_l tasks of SNN training: cycles, bytes
* :mod:`~spikepipe_jax.hardware.sweep`     jitted, vmapped sweeps over networks and arrays
  (``hardware.sweep.sweep(...)``; the submodule keeps the name ``sweep``)
"""

from spikepipe_jax.hardware.mapping import (layer_gemms, training_tasks,
                                            training_tasks_from_config, useful_macs_per_sample,
                                            vector_cycles, vector_work)
from spikepipe_jax.hardware.simulator import SimResult, simulate_gemm
from spikepipe_jax.hardware.sweep import SweepGrid, default_grid, evaluate_grid
from spikepipe_jax.hardware.systolic import (DATAFLOWS, GemmCost, best_dataflow, compute_utilization,
                                             conv_cost, conv_cycles, conv_to_gemm, dataflow_code,
                                             gemm_cost, gemm_cost_exact, gemm_cost_unchecked,
                                             gemm_cycles, mapping_efficiency, scalesim_conv_to_gemm)

__all__ = [
    "DATAFLOWS", "GemmCost", "SimResult", "SweepGrid", "best_dataflow", "compute_utilization",
    "conv_cost", "conv_cycles", "conv_to_gemm", "dataflow_code", "default_grid", "evaluate_grid",
    "gemm_cost", "gemm_cost_exact", "gemm_cost_unchecked", "gemm_cycles", "layer_gemms",
    "mapping_efficiency", "scalesim_conv_to_gemm", "simulate_gemm", "training_tasks",
    "training_tasks_from_config", "useful_macs_per_sample", "vector_cycles", "vector_work",
]

"""spikepipe_jax: pipelined training of spiking neural networks in JAX (SpikePipe reproduction).

Subpackages (import them directly; this top level stays light so that the pure-Python
scheduler can be used without importing JAX):

* ``spikepipe_jax.spec``      network specs shared by the training and hardware paths
* ``spikepipe_jax.snn``       LIF neurons, surrogate gradients, layers, models, encoders
* ``spikepipe_jax.data``      embedded digits and file loaders (MNIST, CIFAR-10, N-MNIST)
* ``spikepipe_jax.train``     losses, optimisers, delayed gradients, train loop, checkpoints
* ``spikepipe_jax.hardware``  systolic-array cost model of SNN training tasks
* ``spikepipe_jax.schedule``  task graphs, bounds, pipelining baselines, SpikePipe scheduler
* ``spikepipe_jax.report``    tables and figures
"""

__version__ = "0.1.0"

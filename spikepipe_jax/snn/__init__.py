"""spikepipe_jax.snn."""

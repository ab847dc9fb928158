"""spikepipe_jax.train."""

"""spikepipe_jax.schedule."""

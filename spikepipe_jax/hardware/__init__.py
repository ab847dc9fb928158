"""spikepipe_jax.hardware."""

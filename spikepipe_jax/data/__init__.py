"""spikepipe_jax.data."""

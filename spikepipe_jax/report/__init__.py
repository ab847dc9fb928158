"""spikepipe_jax.report."""

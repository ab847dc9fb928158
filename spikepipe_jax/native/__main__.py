"""``python -m spikepipe_jax.native``: builds the native kernels now and says where they are."""

import sys

from spikepipe_jax import native

status = native.load()
if status.lib is None:
    print(f"native kernels unavailable ({status.reason}); the XLA path will be used")
    sys.exit(0)
print(f"native kernels: {status.path}")

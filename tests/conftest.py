"""Test configuration: environment pitfalls first, then 64-bit JAX for exactness tests.

Order matters: OPENBLAS_NUM_THREADS must be set before numpy / jax are imported
(jitted Cholesky/eigh otherwise run 100-1000x slower on small machines), and
x64 must be enabled before any array is created. The library itself never
touches the x64 flag; tests that check float32 behaviour use
``jax.enable_x64(False)`` locally.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    """A fixed PRNG key (tests derive every random quantity from it)."""
    return jax.random.key(0)

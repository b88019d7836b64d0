"""The standard-parameterisation log posterior: N(0, I) prior and Gaussian likelihood.

All densities include their normalising constants, so that they can be compared
exactly with the repriorised density (which adds a log-Jacobian).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from wide_bnn.data import RegressionData
from wide_bnn.nets import Network

__all__ = ["gaussian_log_likelihood", "log_likelihood", "log_posterior", "log_standard_normal"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def log_standard_normal(tree: Any) -> jax.Array:
    """``sum log N(leaf; 0, 1)`` over every entry of a pytree (a scalar)."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return jnp.zeros(())
    total = sum(jnp.sum(jnp.square(leaf)) for leaf in leaves)
    size = sum(leaf.size for leaf in leaves)
    return -0.5 * total - size * _HALF_LOG_2PI


def gaussian_log_likelihood(f: jax.Array, y: jax.Array, noise_std) -> jax.Array:
    """``sum log N(y; f, noise_std^2)`` over all entries; ``-inf`` if ``f`` is not finite.

    Parameters
    ----------
    f, y : jax.Array, shape (n, k)
        Network outputs and targets.
    noise_std : float or scalar array
        Observation noise standard deviation.
    """
    residual = (y - f) / noise_std
    value = -0.5 * jnp.sum(jnp.square(residual)) - y.size * (jnp.log(noise_std) + _HALF_LOG_2PI)
    # A NaN output (overflow in a deep net) must reject, not poison a sampler.
    return jnp.where(jnp.all(jnp.isfinite(f)), value, -jnp.inf)


def log_likelihood(net: Network, data: RegressionData, params: dict) -> jax.Array:
    """Gaussian log likelihood of the data under the network ``params`` (scalar)."""
    return gaussian_log_likelihood(net.apply(params, data.x), data.y, data.noise_std)


def log_posterior(net: Network, data: RegressionData, params: dict) -> jax.Array:
    """Unnormalised log posterior in the standard parameterisation.

    ``log N(params; 0, I) + sum log N(y; f(x; params), sigma^2)``, constants
    included (the evidence is the only missing term).

    Parameters
    ----------
    net : Network
    data : RegressionData
    params : dict
        ``{"hidden": ..., "readout": {"w", "b"}}`` as made by ``net.init``.

    Returns
    -------
    jax.Array, shape ()
        ``-inf`` where the network output is not finite.
    """
    return log_standard_normal(params) + log_likelihood(net, data, params)

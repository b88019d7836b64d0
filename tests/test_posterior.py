"""The standard log posterior against a hand computation, and its failure behaviour."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import wide_bnn as wb


def _tiny():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 2))
    y = rng.standard_normal((4, 2))
    return wb.mlp(hidden=(3,), out_dim=2, activation="erf"), wb.RegressionData(x, y, 0.3)


def test_log_posterior_matches_a_hand_computation(key):
    net, data = _tiny()
    params = net.init(key, data.x)
    f = np.asarray(net.apply(params, data.x))
    flat = np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(params)])
    log_prior = sum(-0.5 * v**2 - 0.5 * math.log(2 * math.pi) for v in flat)
    log_lik = 0.0
    for yi, fi in zip(np.ravel(np.asarray(data.y)), np.ravel(f), strict=True):
        log_lik += -0.5 * ((yi - fi) / 0.3) ** 2 - math.log(0.3) - 0.5 * math.log(2 * math.pi)
    value = wb.log_posterior(net, data, params)
    np.testing.assert_allclose(value, log_prior + log_lik, rtol=1e-12)
    np.testing.assert_allclose(wb.log_likelihood(net, data, params), log_lik, rtol=1e-12)


def test_gradient_matches_finite_differences(key):
    net, data = _tiny()
    params = net.init(key, data.x)
    flat, unravel = ravel_pytree(params)
    fn = lambda v: wb.log_posterior(net, data, unravel(v))
    grad = jax.grad(fn)(flat)
    eps = 1e-6
    for i in range(0, flat.size, 3):
        e = jnp.zeros_like(flat).at[i].set(eps)
        numeric = (fn(flat + e) - fn(flat - e)) / (2 * eps)
        np.testing.assert_allclose(grad[i], numeric, rtol=1e-6, atol=1e-6)


def test_non_finite_outputs_give_minus_infinity_not_nan(key):
    net, data = _tiny()
    params = net.init(key, data.x)
    params["readout"]["w"] = params["readout"]["w"].at[0, 0].set(jnp.inf)
    value = wb.log_posterior(net, data, params)
    assert value == -jnp.inf


def test_float32_stays_float32(key):
    with jax.enable_x64(False):
        x = np.ones((3, 2), np.float32)
        data = wb.RegressionData(x, np.zeros(3, np.float32), 0.1)
        net = wb.mlp(hidden=(4,))
        value = wb.log_posterior(net, data, net.init(key, data.x))
        assert value.dtype == jnp.float32

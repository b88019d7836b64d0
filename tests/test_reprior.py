"""Tests of the repriorisation map, its density, the collapsed marginal and the routes.

Float64 identities are checked to ~1e-9. Monte Carlo checks use z-scores against the
Monte Carlo standard error with a Bonferroni-corrected normal quantile (family-wise
level 1e-3); their seeds are fixed, not hunted (the ``_check_*`` helpers take the
seed so that they can be rerun with others).

Speed: each check is one jitted function (eager JAX compiles one kernel per primitive
and shape, which is several times slower here) and random inputs come from numpy.
"""

import math
from statistics import NormalDist

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from wide_bnn import gaussian
from wide_bnn.data import RegressionData
from wide_bnn.linalg import CholeskyError
from wide_bnn.nets import mlp, network, resnet
from wide_bnn.posterior import log_posterior
from wide_bnn.reprior import ReadoutConditional, Repriorisation

ROUTES = ("primal", "dual")
LOG_2PI = math.log(2 * math.pi)


# -- helpers ------------------------------------------------------------------------------


def make_problem(seed, *, n, d_in, out_dim, hidden, bias=0.1, noise_std=0.3, dtype=None):
    rng = np.random.default_rng(seed)
    dtype = dtype or jnp.float64
    x = jnp.asarray(rng.normal(size=(n, d_in)), dtype)
    y = jnp.asarray(rng.normal(size=(n, out_dim)), dtype)
    net = mlp(hidden, out_dim, "gelu", out_b_std=bias)
    return net, RegressionData(x, y, noise_std), random_like(net.init, rng, x)


def random_like(init, rng, x):
    """N(0, 1) parameters with the structure ``init(key, x)`` would give."""
    shapes = jax.eval_shape(init, jax.random.key(0), x)
    return jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), shapes)


def random_phi(params, seed):
    """Hidden part of ``params`` with fresh N(0, 1) readout coordinates."""
    rng = np.random.default_rng(seed)
    readout = jax.tree_util.tree_map(
        lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype), params["readout"]
    )
    return {"hidden": params["hidden"], "readout": readout}


def assert_trees_close(a, b, rtol=1e-9, atol=1e-9):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)


def assert_scalar_close(a, b, rtol=1e-10):
    a, b = float(a), float(b)
    assert abs(a - b) <= rtol * max(1.0, abs(a), abs(b)), (a, b, a - b)


def log_normal_sum(tree):
    leaves = jax.tree_util.tree_leaves(tree)
    return sum(float(-0.5 * jnp.sum(leaf**2) - 0.5 * leaf.size * LOG_2PI) for leaf in leaves)


def closed_form(psi, y, noise_var):
    """Posterior mean (p, k) and covariance (p, p) of B, and the marginal, in numpy."""
    psi, y = np.asarray(psi, float), np.asarray(y, float)
    n, p = psi.shape
    precision = psi.T @ psi + noise_var * np.eye(p)
    mean = np.linalg.solve(precision, psi.T @ y)
    cov = noise_var * np.linalg.inv(precision)
    c = psi @ psi.T + noise_var * np.eye(n)
    quad = np.sum(y * np.linalg.solve(c, y))
    marginal = -0.5 * (quad + y.shape[1] * np.linalg.slogdet(c)[1] + y.size * LOG_2PI)
    return mean, cov, marginal


def naive_log_marginal(psi, y, noise_var):
    n, k = y.shape
    c = psi @ psi.T + noise_var * jnp.eye(n, dtype=psi.dtype)
    quad = jnp.sum(y * jnp.linalg.solve(c, y))
    return -0.5 * (quad + k * jnp.linalg.slogdet(c)[1] + n * k * LOG_2PI)


def assert_moments(draws, mean, cov, *, alpha=1e-3):
    """z-tests of every mean and covariance entry of draws (N, p, k) against the truth.

    Columns are independent with covariance ``cov``; Bonferroni over all tests.
    """
    num, p, k = draws.shape
    centred = np.asarray(draws).reshape(num, p * k) - np.asarray(mean).reshape(p * k)
    full_cov = np.kron(np.asarray(cov), np.eye(k))  # row-major (p, k) flattening
    rows, cols = np.triu_indices(p * k)
    products = centred[:, rows] * centred[:, cols]
    z = np.concatenate(
        [
            centred.mean(0) / (centred.std(0) / math.sqrt(num)),
            (products.mean(0) - full_cov[rows, cols]) / (products.std(0) / math.sqrt(num)),
        ]
    )
    bound = NormalDist().inv_cdf(1 - alpha / (2 * z.size))
    assert np.max(np.abs(z)) < bound, f"max |z| = {np.max(np.abs(z)):.2f} >= {bound:.2f}"


def readout_of(net, params):
    return net.readout_matrix(params["readout"])


# -- linear model: the target is exactly N(0, I) ---------------------------------------------


def linear_features(net, x):
    psi = np.asarray(x) * net.out_w_std / math.sqrt(x.shape[1])
    return np.hstack([psi, np.full((x.shape[0], 1), net.out_b_std)])


@pytest.mark.parametrize("route", ROUTES)
def test_linear_model_is_exactly_standard_normal(route):
    net, data, params = make_problem(0, n=7, d_in=3, out_dim=2, hidden=())
    rp = Repriorisation(net, data, route=route)
    phis = [random_phi(params, i) for i in range(4)]
    zero = jax.tree_util.tree_map(jnp.zeros_like, phis[0])

    def first_column(z0):  # forward is affine in Z; its linear part is S
        z = jnp.zeros((4, 2), z0.dtype).at[:, 0].set(z0)
        return readout_of(net, rp.forward({"hidden": [], "readout": net.readout_from_matrix(z)}))

    @jax.jit
    def report(phis, zero):
        s = jax.jacobian(lambda v: first_column(v)[:, 0])(jnp.zeros(4))
        values = jnp.stack([rp.log_density(phi) for phi in phis])
        return values - rp.log_density(zero), readout_of(net, rp.forward(zero)), s

    differences, mean_at_zero, s = report(phis, zero)
    for phi, difference in zip(phis, differences, strict=True):
        sq = sum(float(jnp.sum(v**2)) for v in jax.tree_util.tree_leaves(phi))
        assert_scalar_close(difference, -0.5 * sq)
    mean, cov, _ = closed_form(linear_features(net, data.x), data.y, data.noise_std**2)
    np.testing.assert_allclose(mean_at_zero, mean, atol=1e-10)
    np.testing.assert_allclose(s @ s.T, cov, atol=1e-10)


def _check_linear_forward_moments(seed, route, num=20000):
    net, data, _ = make_problem(1, n=7, d_in=3, out_dim=2, hidden=())
    rp = Repriorisation(net, data, route=route)
    z = np.random.default_rng(seed).normal(size=(num, 4, 2))
    forward = jax.vmap(
        lambda z: readout_of(net, rp.forward({"hidden": [], "readout": net.readout_from_matrix(z)}))
    )
    mean, cov, _ = closed_form(linear_features(net, data.x), data.y, data.noise_std**2)
    assert_moments(jax.jit(forward)(z), mean, cov)


@pytest.mark.parametrize("route", ROUTES)
def test_linear_model_forward_of_standard_normal_has_posterior_moments(route):
    _check_linear_forward_moments(0, route)


# -- change of variables ------------------------------------------------------------------------


def _change_of_variables_report(rp, phi, params):
    net, data = rp.net, rp.data

    @jax.jit
    def report(phi, params):
        expected = log_posterior(net, data, rp.forward(phi)) + rp.log_det_jacobian(phi)
        return (
            rp.log_density(phi),
            expected,
            rp.inverse(rp.forward(phi)),
            rp.forward(rp.inverse(params)),
        )

    value, expected, phi_back, params_back = report(phi, params)
    assert_scalar_close(value, expected, rtol=1e-9)
    assert_trees_close(phi_back, phi)
    assert_trees_close(params_back, params)


def _check_change_of_variables(hidden, out_dim, bias, route):
    net, data, params = make_problem(2, n=6, d_in=3, out_dim=out_dim, hidden=hidden, bias=bias)
    phi = random_phi(params, 3)
    for kernel_reg in (None, 0.05):
        rp = Repriorisation(net, data, route=route, kernel_reg=kernel_reg)
        _change_of_variables_report(rp, phi, params)


# Fast suite: every depth, output count, bias setting and route appears (a covering
# design); the full grid runs with -m slow.
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    ("hidden", "out_dim", "bias"), [((5,), 1, 0.1), ((4, 3), 3, 0.0), ((3, 4, 2), 3, 0.1)]
)
def test_change_of_variables_and_round_trips(hidden, out_dim, bias, route):
    _check_change_of_variables(hidden, out_dim, bias, route)


@pytest.mark.slow
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("bias", [0.1, 0.0])
@pytest.mark.parametrize("out_dim", [1, 3])
@pytest.mark.parametrize("hidden", [(5,), (4, 3), (3, 4, 2)])
def test_change_of_variables_full_grid(hidden, out_dim, bias, route):
    _check_change_of_variables(hidden, out_dim, bias, route)


@pytest.mark.parametrize(("bias", "kernel_reg"), [(0.1, None), (0.0, 0.2)])
@pytest.mark.parametrize("route", ROUTES)
def test_log_det_equals_slogdet_of_jacobian(route, bias, kernel_reg):
    net, data, params = make_problem(4, n=4, d_in=2, out_dim=2, hidden=(3,), bias=bias)
    rp = Repriorisation(net, data, route=route, kernel_reg=kernel_reg)
    flat, unravel = ravel_pytree(random_phi(params, 5))

    @jax.jit
    def report(flat):
        jac = jax.jacobian(lambda v: ravel_pytree(rp.forward(unravel(v)))[0])(flat)
        return jnp.linalg.slogdet(jac), rp.log_det_jacobian(unravel(flat))

    (sign, logdet), log_det = report(flat)
    assert sign > 0
    assert_scalar_close(log_det, logdet, rtol=1e-9)


# -- collapsed form -------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_collapsed_identity_and_marginal_closed_form(route):
    net, data, params = make_problem(6, n=5, d_in=3, out_dim=2, hidden=(4,))
    rp = Repriorisation(net, data, route=route)
    other = Repriorisation(net, data, route=route, kernel_reg=3.0)
    phi = random_phi(params, 7)
    hidden = phi["hidden"]
    report = jax.jit(
        lambda phi: (
            rp.log_density(phi),
            rp.log_marginal(phi["hidden"]),
            other.log_marginal(phi["hidden"]),
            net.readout_features(phi["hidden"], data.x),
        )
    )
    density, marginal, other_marginal, psi = report(phi)
    assert_scalar_close(density, marginal + log_normal_sum(phi["readout"]))
    _, _, expected = closed_form(psi, data.y, data.noise_std**2)
    assert_scalar_close(marginal, expected + log_normal_sum(hidden))
    # The marginal uses sigma^2 whatever the map's kernel_reg.
    assert_scalar_close(other_marginal, marginal)


def _check_readout_draws(seed, route, num=20000):
    net, data, params = make_problem(8, n=5, d_in=3, out_dim=2, hidden=(6,))
    rp = Repriorisation(net, data, route=route)
    hidden = params["hidden"]
    keys = jax.random.split(jax.random.key(seed), num)
    draws = jax.jit(jax.vmap(lambda k: net.readout_matrix(rp.sample_readout(k, hidden))))(keys)
    mean, cov, _ = closed_form(net.readout_features(hidden, data.x), data.y, data.noise_std**2)
    assert_moments(draws, mean, cov)


@pytest.mark.parametrize("route", ROUTES)
def test_sample_readout_has_conditional_posterior_moments(route):
    _check_readout_draws(0, route)


@pytest.mark.parametrize("route", ROUTES)
def test_conditional_mean_cov_and_predictions_closed_form(route):
    net, data, params = make_problem(9, n=6, d_in=3, out_dim=2, hidden=(5,))
    rp = Repriorisation(net, data, route=route)
    x_test = jnp.asarray(np.random.default_rng(10).normal(size=(4, 3)))
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)

    @jax.jit
    def report(hidden, zero):
        cond = rp.conditional(hidden)
        zero = {"hidden": hidden, "readout": zero["readout"]}
        return (
            cond,
            cond.cov(),
            rp.predict_mean(hidden, x_test),
            rp.predict_cov(hidden, x_test),
            readout_of(net, rp.forward(zero)),
            net.readout_features(hidden, data.x),
            net.readout_features(hidden, x_test),
        )

    cond, cond_cov, pred_mean, pred_cov, mean_at_zero, psi, psi_test = report(
        params["hidden"], zero
    )
    assert isinstance(cond, ReadoutConditional)
    assert cond.route == route and bool(cond.ok)
    mean, cov, _ = closed_form(psi, data.y, data.noise_std**2)
    psi_test = np.asarray(psi_test)
    np.testing.assert_allclose(cond.mean, mean, atol=1e-10)
    np.testing.assert_allclose(cond_cov, cov, atol=1e-10)
    np.testing.assert_allclose(pred_mean, psi_test @ mean, atol=1e-10)
    np.testing.assert_allclose(pred_cov, psi_test @ cov @ psi_test.T, atol=1e-10)
    np.testing.assert_allclose(mean_at_zero, mean, atol=1e-10)  # T(h, 0) = E[B | h]


def _routes_report(rp, phi, params, x_test):
    hidden = params["hidden"]

    @jax.jit
    def report(phi, hidden):
        cond = rp.conditional(hidden)
        return (
            jax.value_and_grad(rp.log_marginal)(hidden),
            jax.value_and_grad(rp.log_density)(phi),
            rp.log_det_jacobian(phi),
            cond.mean,
            cond.cov(),
            rp.predict_mean(hidden, x_test),
            rp.predict_cov(hidden, x_test),
        )

    return report(phi, hidden)


@pytest.mark.parametrize(("n", "width"), [(4, 9), (12, 3)], ids=["n<p", "n>p"])
def test_primal_and_dual_routes_agree(n, width):
    net, data, params = make_problem(11, n=n, d_in=3, out_dim=2, hidden=(width,))
    phi = random_phi(params, 12)
    x_test = jnp.asarray(np.random.default_rng(13).normal(size=(3, 3)))
    reports = [
        _routes_report(Repriorisation(net, data, route=r), phi, params, x_test) for r in ROUTES
    ]
    assert_trees_close(reports[0], reports[1], rtol=1e-8, atol=1e-9)
    # Another kernel_reg: the coordinates of one params differ between routes by a
    # rotation, but the density of the same params agrees.
    rps = [Repriorisation(net, data, route=r, kernel_reg=0.05) for r in ROUTES]
    densities = [jax.jit(lambda p, rp=rp: rp.log_density(rp.inverse(p)))(params) for rp in rps]
    assert_scalar_close(densities[0], densities[1], rtol=1e-9)


def _finite_difference_grad(fn, flat, eps=1e-6):
    basis = jnp.eye(flat.size, dtype=flat.dtype)
    shifted = jnp.concatenate([flat[None, :] + eps * basis, flat[None, :] - eps * basis])
    values = jax.vmap(fn)(shifted)
    return (values[: flat.size] - values[flat.size :]) / (2 * eps)


@pytest.mark.parametrize("kernel_reg", [None, 0.2])
@pytest.mark.parametrize("route", ROUTES)
def test_gradients_match_finite_differences(route, kernel_reg):
    net, data, params = make_problem(14, n=4, d_in=2, out_dim=2, hidden=(3,))
    rp = Repriorisation(net, data, route=route, kernel_reg=kernel_reg)
    phi = random_phi(params, 15)
    flat, unravel = ravel_pytree(phi)
    flat_h, unravel_h = ravel_pytree(phi["hidden"])
    density = lambda v: rp.log_density(unravel(v))
    marginal = lambda v: rp.log_marginal(unravel_h(v))

    @jax.jit
    def report(flat, flat_h):
        return (
            (jax.grad(density)(flat), _finite_difference_grad(density, flat)),
            (jax.grad(marginal)(flat_h), _finite_difference_grad(marginal, flat_h)),
        )

    for grad, fd in report(flat, flat_h):
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6)


# -- the pure functional core --------------------------------------------------------------


def test_row_gram_derivative_is_autodiffs():
    # The written-out reverse-mode derivative of psi psi^T, with a non-symmetric cotangent
    # (a symmetric one would hide a missing transpose).
    rng = np.random.default_rng(19)
    psi = jnp.asarray(rng.normal(size=(5, 9)))
    g_kernel = jnp.asarray(rng.normal(size=(5, 5)))
    value, pullback = jax.vjp(gaussian._row_gram, psi)
    expected_value, expected_pullback = jax.vjp(lambda a: a @ a.T, psi)
    np.testing.assert_allclose(value, expected_value, rtol=1e-14)
    np.testing.assert_allclose(pullback(g_kernel)[0], expected_pullback(g_kernel)[0], rtol=1e-12)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("n", "p"), [(5, 9), (9, 5)])
def test_marginal_gradient_matches_autodiff_incl_noise_var(n, p, route):
    rng = np.random.default_rng(16)
    psi = jnp.asarray(rng.normal(size=(n, p)))
    y = jnp.asarray(rng.normal(size=(n, 3)))
    fast = jax.value_and_grad(
        lambda a, b, s: gaussian.log_marginal_gaussian(a, b, s, route=route), argnums=(0, 1, 2)
    )
    slow = jax.value_and_grad(naive_log_marginal, argnums=(0, 1, 2))
    noise_vars = jnp.array([0.3, 0.01])
    both = jax.jit(jax.vmap(lambda s: (fast(psi, y, s), slow(psi, y, s))))
    (v1, g1), (v2, g2) = both(noise_vars)
    np.testing.assert_allclose(v1, v2, rtol=1e-10)
    assert_trees_close(g1, g2, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("route", ROUTES)
def test_noise_var_gradient_of_reprior_density(route):
    # Latent noise (NumPyro): the fast exact density and its literal evaluation with
    # kernel_reg = noise_var are the same function of the (traced) noise variance.
    rng = np.random.default_rng(18)
    psi, y, z = (jnp.asarray(rng.normal(size=s)) for s in [(6, 4), (6, 2), (4, 2)])
    fast = lambda s: gaussian.reprior_log_density(psi, y, z, s, route=route)
    literal = lambda s: gaussian.reprior_log_density(psi, y, z, s, kernel_reg=s, route=route)

    @jax.jit
    def report(s):
        fd = (fast(s * (1 + 1e-6)) - fast(s * (1 - 1e-6))) / (2e-6 * s)
        return fast(s), literal(s), jax.grad(fast)(s), jax.grad(literal)(s), fd

    for s in (0.05, 0.7):
        value, literal_value, grad, literal_grad, fd = report(s)
        assert_scalar_close(value, literal_value, rtol=1e-10)
        assert_scalar_close(grad, literal_grad, rtol=1e-8)
        assert_scalar_close(grad, fd, rtol=1e-6)


@pytest.mark.parametrize("route", ROUTES)
def test_pure_functions_match_the_class(route):
    net, data, params = make_problem(21, n=5, d_in=3, out_dim=2, hidden=(4,))
    rp = Repriorisation(net, data, route=route, kernel_reg=0.4)
    phi = random_phi(params, 22)

    @jax.jit
    def report(phi):
        psi = net.readout_features(phi["hidden"], data.x)
        z = readout_of(net, phi)
        b = gaussian.unwhiten(psi, data.y, z, 0.4, route=route)
        return (
            (b, readout_of(net, rp.forward(phi))),
            (gaussian.whiten(psi, data.y, b, 0.4, route=route), z),
            (gaussian.log_det(psi, data.y, 0.4, route=route), rp.log_det_jacobian(phi)),
        )

    for got, want in report(phi):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_conditional_is_a_pytree_under_jit_and_vmap():
    net, data, _ = make_problem(23, n=4, d_in=2, out_dim=1, hidden=(6,))
    rng = np.random.default_rng(24)
    hiddens = [random_like(net.init, rng, data.x)["hidden"] for _ in range(3)]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *hiddens)
    keys = jax.random.split(jax.random.key(24), 3)
    for route in ROUTES:
        rp = Repriorisation(net, data, route=route)

        @jax.jit
        def report(stacked, keys, rp=rp):
            conds = jax.vmap(rp.conditional)(stacked)
            single = rp.conditional(jax.tree_util.tree_map(lambda a: a[1], stacked))
            return conds, jax.vmap(ReadoutConditional.sample)(conds, keys), single.sample(keys[1])

        conds, draws, single_draw = report(stacked, keys)
        assert conds.route == route and conds.mean.shape == (3, 7, 1)
        assert draws.shape == (3, 7, 1) and bool(jnp.all(conds.ok))
        np.testing.assert_allclose(draws[1], single_draw, atol=1e-12)


def test_auto_route_picks_the_smaller_matrix():
    net, data, _ = make_problem(0, n=6, d_in=2, out_dim=1, hidden=(10,))
    assert Repriorisation(net, data).route == "dual"
    net, data, _ = make_problem(0, n=20, d_in=2, out_dim=1, hidden=(10,))
    assert Repriorisation(net, data).route == "primal"
    assert Repriorisation(net, data, route="dual").route == "dual"


# -- other networks -------------------------------------------------------------------------------


def _check_network(net, data, params):
    phi = random_phi(params, 25)
    for route, kernel_reg in (("primal", None), ("dual", 0.1)):
        rp = Repriorisation(net, data, route=route, kernel_reg=kernel_reg)
        _change_of_variables_report(rp, phi, params)
    rps = [Repriorisation(net, data, route=r) for r in ROUTES]
    marginals = [jax.jit(jax.value_and_grad(rp.log_marginal))(params["hidden"]) for rp in rps]
    assert_trees_close(marginals[0], marginals[1], rtol=1e-8, atol=1e-9)


def test_resnet():
    rng = np.random.default_rng(26)
    x = jnp.asarray(rng.normal(size=(3, 4, 4, 2)))
    y = jnp.asarray(rng.normal(size=(3, 2)))
    net = resnet(3, num_blocks=1, out_dim=2)
    _check_network(net, RegressionData(x, y, 0.2), random_like(net.init, rng, x))


def test_custom_network_without_readout_bias():
    def init_hidden(key, x):
        return {"a": jax.random.normal(key, (x.shape[1], 5), x.dtype)}

    net = network(init_hidden, lambda h, x: jnp.tanh(x @ h["a"]), out_dim=2, out_b_std=0.0)
    rng = np.random.default_rng(29)
    x = jnp.asarray(rng.normal(size=(4, 3)))
    y = jnp.asarray(rng.normal(size=(4, 2)))
    _check_network(net, RegressionData(x, y, 0.2), random_like(net.init, rng, x))


# -- failures and precision --------------------------------------------------------------------


def _overflowing_network():
    # Finite parameters, infinite features: exp overflows for a > ~0.71.
    def init_hidden(key, x):
        return {"a": jax.random.normal(key, (), x.dtype)}

    return network(init_hidden, lambda h, x: jnp.exp(1000.0 * h["a"]) * x, out_dim=1)


@pytest.mark.parametrize("kernel_reg", [None, 0.5])
@pytest.mark.parametrize("route", ROUTES)
def test_non_finite_network_output_gives_minus_inf(route, kernel_reg):
    net = _overflowing_network()
    x = jnp.asarray(np.random.default_rng(32).normal(size=(3, 2)))
    data = RegressionData(x, jnp.ones((3, 1)), 0.1)
    rp = Repriorisation(net, data, route=route, kernel_reg=kernel_reg)
    readout = {"w": jnp.zeros((2, 1)), "b": jnp.zeros(1)}
    bad = {"hidden": {"a": jnp.ones(())}, "readout": readout}
    good = {"hidden": {"a": jnp.zeros(())}, "readout": readout}

    @jax.jit
    def report(phi):
        return (
            rp.log_density_and_ok(phi),
            rp.log_marginal_and_ok(phi["hidden"]),
            rp.conditional(phi["hidden"]).ok,
            rp.forward(phi),
        )

    density, marginal, cond_ok, forward = report(bad)
    for value, ok in (density, marginal):
        assert float(value) == -np.inf and not bool(ok)
    assert not bool(cond_ok)
    assert bool(jnp.all(jnp.isnan(forward["readout"]["w"])))  # traced failure: loud NaN
    with pytest.raises(CholeskyError):  # eager failure: an error
        rp.forward(bad)
    (value, ok), *_ = report(good)
    assert np.isfinite(float(value)) and bool(ok)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("n", "p"), [(5, 9), (9, 5)])
def test_conditional_log_marginal_reuses_the_factorisation(n, p, route):
    rng = np.random.default_rng(17)
    psi = jnp.asarray(rng.normal(size=(n, p)))
    y = jnp.asarray(rng.normal(size=(n, 3)))

    @jax.jit
    def report(s):
        cond = gaussian.readout_conditional(psi, y, s, route=route)
        return cond.log_marginal(psi, y), naive_log_marginal(psi, y, s)

    for s in (0.3, 0.01):
        fast, slow = report(s)
        np.testing.assert_allclose(fast, slow, rtol=1e-10)
    # A failed factorisation gives -inf, like log_marginal_gaussian.
    failed = gaussian.readout_conditional(jnp.zeros((3, 4)), jnp.ones((3, 1)), -1.0, route=route)
    assert float(failed.log_marginal(jnp.zeros((3, 4)), jnp.ones((3, 1)))) == -np.inf


@pytest.mark.parametrize("route", ROUTES)
def test_failed_factorisation_gives_minus_inf_and_zero_gradient(route):
    y = jnp.ones((3, 1))
    fn = lambda a, s: gaussian.log_marginal_gaussian_and_ok(a, y, s, route=route)

    @jax.jit
    def report(psi, s):
        return fn(psi, s), jax.grad(lambda a, s: fn(a, s)[0], argnums=(0, 1))(psi, s)

    # A negative "variance" and zero features: not positive definite.
    (value, ok), grads = report(jnp.zeros((3, 4)), -1.0)
    assert float(value) == -np.inf and not bool(ok)
    assert all(bool(jnp.all(g == 0)) for g in grads)


@pytest.mark.parametrize("route", ROUTES)
def test_float32_is_preserved(route):
    with jax.enable_x64(False):
        net, data, params = make_problem(33, n=5, d_in=3, out_dim=2, hidden=(6,), dtype=jnp.float32)
        rp = Repriorisation(net, data, route=route)

        @jax.jit
        def report(params):
            phi = rp.inverse(params)
            value, grad = jax.value_and_grad(rp.log_density)(phi)
            expected = log_posterior(net, data, rp.forward(phi)) + rp.log_det_jacobian(phi)
            draw = rp.sample_readout(jax.random.key(0), params["hidden"])
            marginal = rp.log_marginal(params["hidden"])
            return (value, expected, marginal, grad, phi, draw), rp.forward(phi)

        outputs, params_back = report(params)
        leaves = jax.tree_util.tree_leaves(outputs)
        assert all(leaf.dtype == jnp.float32 for leaf in leaves)
        assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in leaves)
        assert_scalar_close(outputs[0], outputs[1], rtol=1e-5)
        assert_trees_close(params_back, params, rtol=1e-4, atol=1e-4)


def test_float32_data_stay_float32_with_x64_enabled():
    net, data, params = make_problem(34, n=5, d_in=3, out_dim=1, hidden=(), dtype=jnp.float32)
    rp = Repriorisation(net, data)
    report = jax.jit(lambda params: (rp.inverse(params), rp.log_marginal(params["hidden"])))
    phi, marginal = report(params)
    assert marginal.dtype == jnp.float32 and phi["readout"]["w"].dtype == jnp.float32
    assert jax.jit(rp.log_density)(phi).dtype == jnp.float32


# -- argument validation ------------------------------------------------------------------------


def test_bad_arguments_raise_value_error():
    net, data, params = make_problem(35, n=4, d_in=2, out_dim=1, hidden=(3,))
    with pytest.raises(ValueError, match="route"):
        Repriorisation(net, data, route="fast")
    for bad in (0.0, -1.0, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match="kernel_reg"):
            Repriorisation(net, data, kernel_reg=bad)
    with pytest.raises(ValueError, match="out_dim"):
        Repriorisation(mlp((3,), out_dim=2), data)
    with pytest.raises(ValueError, match="net"):
        Repriorisation("mlp", data)
    with pytest.raises(ValueError, match="data"):
        Repriorisation(net, (data.x, data.y))
    rp = Repriorisation(net, data)
    with pytest.raises(ValueError, match="phi"):
        rp.forward({"hidden": params["hidden"]})
    wrong = {"hidden": params["hidden"], "readout": {"w": jnp.zeros((4, 1)), "b": jnp.zeros(1)}}
    with pytest.raises(ValueError, match="shape"):
        rp.log_density(wrong)
    with pytest.raises(ValueError, match="x_test"):
        rp.predict_mean(params["hidden"], jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="route"):
        gaussian.resolve_route("fast", 3, 4)
    with pytest.raises(ValueError, match="z must have shape"):
        gaussian.reprior_log_density(jnp.ones((3, 2)), jnp.ones((3, 1)), jnp.ones((3, 1)), 0.1)

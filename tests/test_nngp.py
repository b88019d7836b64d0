"""Tests of the NNGP kernels and the infinite-width GP posterior (wide_bnn.nngp).

Three independent references guard the kernel:

* the duals against numerical integration (library quadrature at high order for
  smooth activations, a semi-analytic scipy reference for kinked ones and tanh);
* the recursion against the empirical kernel ``Psi Psi^T`` of wide random
  networks drawn with numpy (so a bug in ``net.init`` or in the kernel cannot
  cancel), including the 1/sqrt(width) rate of a single network;
* the GP posterior against a dense numpy computation.

Statistical tests use standard errors estimated from the draws themselves and
Bonferroni-corrected normal quantiles; seeds are fixed but not tuned (see the
module report for false-failure rates measured over other seeds).
"""

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

import wide_bnn as wb
from wide_bnn.activations import get_activation
from wide_bnn.linalg import NumericalWarning
from wide_bnn.nngp import (
    NNGPKernelEstimate,
    NNGPPosterior,
    _dual,
    _dual_diagonal,
    mlp_nngp_kernel,
    nngp_kernel,
    nngp_kernel_mc,
    nngp_log_marginal_likelihood,
    nngp_predict,
)

ALL_ACTIVATIONS = ["relu", "leaky_relu", "abs", "gelu", "erf", "tanh", "identity", "sin"]
KINKED = ["relu", "leaky_relu", "abs"]


def _activation(name):
    # "sin" stands for a user callable: it takes the generic quadrature route.
    return jnp.sin if name == "sin" else name


def _inputs(n, d, *, seed=0, scale=(0.5, 1.0)):
    """Points with squared norms spread over ``d * scale**2`` (first-layer variance <= 2)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    norms = np.linspace(scale[0], scale[1], n) * math.sqrt(d)
    return jnp.asarray(x / np.linalg.norm(x, axis=1, keepdims=True) * norms[:, None])


def _grid():
    """(k11, k12, k22) triples: variances 0.1-4, correlations -1..1 including the ends."""
    out = []
    for k11 in (0.1, 1.0, 4.0):
        for k22 in (0.3, 1.0, 2.5):
            for rho in (-1.0, -0.99, -0.5, 0.0, 0.3, 0.9, 0.999, 1.0):
                out.append((k11, rho * math.sqrt(k11 * k22), k22))
    return np.array(out)


def _dual_on_grid(activation, order=32):
    act = get_activation(activation)
    k11, k12, k22 = (jnp.asarray(c) for c in _grid().T)
    return np.asarray(_dual(act, order, k11, k12, k22))


# -- duals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gelu", "erf", "identity"])
def test_smooth_closed_form_matches_quadrature(name):
    closed = _dual_on_grid(name)
    fn = get_activation(name).fn
    quadrature = _dual_on_grid(lambda u: fn(u), order=120)  # callable: quadrature route
    np.testing.assert_allclose(closed, quadrature, rtol=1e-8, atol=1e-12)


def _norm_pdf(z):
    return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _norm_cdf(z):
    return 0.5 * math.erfc(-z / math.sqrt(2))


def _kinked_reference(a, b, k11, k12, k22):
    """E[f(u) f(v)] for f = a min(x,0) + b max(x,0) by 1-D adaptive quadrature over u.

    Uses the Gaussian conditional v | u and the closed-form E[max(v, 0)] of a normal,
    so it shares no formula with the arc-cosine kernel.
    """

    def f(z):
        return a * min(z, 0.0) + b * max(z, 0.0)

    mu_per_u = k12 / k11
    s = math.sqrt(max(k22 - k12 * k12 / k11, 0.0))

    def conditional(u):
        mu = mu_per_u * u
        if s == 0.0:
            return f(mu)
        pos = mu * _norm_cdf(mu / s) + s * _norm_pdf(mu / s)
        return b * pos + a * (mu - pos)

    sd = math.sqrt(k11)

    def integrand(u):
        return f(u) * conditional(u) * _norm_pdf(u / sd) / sd

    value = 0.0
    for lo, hi in ((-12 * sd, 0.0), (0.0, 12 * sd)):
        value += integrate.quad(integrand, lo, hi, epsabs=1e-14, epsrel=1e-12, limit=200)[0]
    return value


@pytest.mark.parametrize("name", KINKED)
def test_piecewise_linear_closed_form_matches_reference(name):
    act = get_activation(name, negative_slope=0.2)
    grid = _grid()
    closed = np.asarray(
        _dual(act, 32, *(jnp.asarray(c) for c in grid.T)),
    )
    reference = [_kinked_reference(act.negative_slope, act.positive_slope, *row) for row in grid]
    np.testing.assert_allclose(closed, reference, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", KINKED)
def test_quadrature_route_converges_for_kinked_activations(name):
    # Gauss-Hermite converges slowly across a kink: high order, loose tolerance.
    fn = get_activation(name, negative_slope=0.2).fn
    closed = _dual_on_grid(get_activation(name, negative_slope=0.2))
    quadrature = _dual_on_grid(lambda u: fn(u), order=200)
    scale = np.sqrt(_grid()[:, 0] * _grid()[:, 2])
    assert np.max(np.abs(closed - quadrature) / scale) < 5e-3


def test_quadrature_matches_scipy_for_tanh():
    points = [(1.0, 0.3, 0.5), (2.0, -1.2, 1.5), (0.5, 0.5, 0.5), (1.5, 1.4, 1.4)]
    ours = np.asarray(
        _dual(get_activation("tanh"), 160, *(jnp.asarray(c) for c in np.array(points).T))
    )

    def reference(k11, k12, k22):
        a = math.sqrt(k11)
        b = k12 / a
        c = math.sqrt(max(k22 - b * b, 0.0))

        def inner(z1):
            if c == 0.0:
                return math.tanh(b * z1)
            g = lambda z2: math.tanh(b * z1 + c * z2) * _norm_pdf(z2)
            return integrate.quad(g, -10, 10, epsabs=1e-13)[0]

        h = lambda z1: math.tanh(a * z1) * inner(z1) * _norm_pdf(z1)
        return integrate.quad(h, -10, 10, epsabs=1e-13)[0]

    np.testing.assert_allclose(ours, [reference(*p) for p in points], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", ALL_ACTIVATIONS)
def test_diagonal_dual_matches_general_dual(name):
    act = get_activation(_activation(name))
    k = jnp.asarray([0.0, 1e-3, 0.4, 1.0, 2.0])
    np.testing.assert_allclose(
        _dual_diagonal(act, 32, k), _dual(act, 32, k, k, k), rtol=1e-12, atol=1e-15
    )


# -- the layer recursion against an independent numpy implementation ------------------------


def _reference_dual(name, k11, k12, k22):
    """E[act(u) act(v)] without any library code: scipy for kinks, 150-point numpy GH else."""
    if name in KINKED:
        act = get_activation(name)  # slopes only
        return _kinked_reference(act.negative_slope, act.positive_slope, k11, k12, k22)
    fn = {
        "gelu": lambda z: z * 0.5 * (1 + special.erf(z / math.sqrt(2))),
        "erf": special.erf,
        "tanh": np.tanh,
        "identity": lambda z: z,
        "sin": np.sin,
    }[name]
    nodes, weights = np.polynomial.hermite_e.hermegauss(150)
    weights = weights / weights.sum()
    a = math.sqrt(k11)
    b = k12 / a
    c = math.sqrt(max(k22 - b * b, 0.0))
    u = a * nodes[:, None]
    v = b * nodes[:, None] + c * nodes[None, :]
    return float(np.sum(weights[:, None] * weights[None, :] * fn(u) * fn(v)))


def _reference_kernel(name, x, depth, w_std, b_std, out_w_std, out_b_std):
    x = np.asarray(x)
    n, d_in = x.shape
    scales = [(w_std, b_std)] * depth + [(out_w_std, out_b_std)]
    w, b = scales[0]
    k = w**2 * (x @ x.T) / d_in + b**2
    for w, b in scales[1:]:
        e = np.empty_like(k)
        for i in range(n):
            for j in range(i, n):
                e[i, j] = e[j, i] = _reference_dual(name, k[i, i], k[i, j], k[j, j])
        k = w**2 * e + b**2
    return k


@pytest.mark.parametrize("name", ALL_ACTIVATIONS)
def test_deep_kernel_matches_independent_recursion(name):
    # Exact check of the whole recursion (layer order, scales, biases, readout) at
    # depth 3, to quadrature accuracy; the library runs its quadrature at order 160.
    x = _inputs(5, 3, seed=16)
    scales = {"w_std": 1.3, "b_std": 0.2, "out_w_std": 0.8, "out_b_std": 0.3}
    net = wb.mlp(hidden=(2, 2, 2), activation=_activation(name), negative_slope=0.01, **scales)
    ours = nngp_kernel(net, x, quadrature_order=160)
    expected = _reference_kernel(name, x, 3, *scales.values())
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-12)


# -- kernel vs wide random networks -------------------------------------------------------


def _prior_draws(net, x, num, rng):
    """``num`` draws of the hidden parameters, stacked on axis 0, from numpy's generator.

    Drawn in float32 (twice as fast; the weights are exactly N(0, 1) draws rounded to
    float32, irrelevant at the tolerances used) and widened on the device.
    """
    shapes = jax.eval_shape(net.init_hidden, jax.random.key(0), x)
    return jax.tree.map(
        lambda s: jnp.asarray(rng.standard_normal((num, *s.shape), dtype=np.float32)), shapes
    )


def _empirical_kernels(net, x, hidden):
    hidden = jax.tree.map(lambda a: a.astype(x.dtype), hidden)
    psi = jax.vmap(net.readout_features, in_axes=(0, None))(hidden, x)
    return jnp.einsum("sip,sjp->sij", psi, psi)


WIDE_SCALES = {"w_std": 2**0.5, "b_std": 0.2, "out_w_std": 1.0, "out_b_std": 0.3}


@functools.partial(jax.jit, static_argnames="depth")
def _summed_empirical_kernels(x, weights, biases, *, depth):
    """Sum over a batch of networks of Psi Psi^T, for every activation at once.

    The forward pass is written out here from the documented NTK parameterisation
    (not taken from ``wb.mlp``). Hidden states of all activations are stacked on a
    leading axis so that each weight matrix is read once per batch.
    """
    s = WIDE_SCALES
    fns = [get_activation(_activation(name)).fn for name in ALL_ACTIVATIONS]
    h = jnp.broadcast_to(x, (len(fns), weights[0].shape[0], *x.shape))  # (act, net, n, d_in)
    for w, b in zip(weights[:depth], biases[:depth], strict=True):
        w, b = w.astype(x.dtype), b.astype(x.dtype)
        pre = s["w_std"] / math.sqrt(w.shape[1]) * jnp.einsum("asnk,skm->asnm", h, w)
        pre = pre + s["b_std"] * b[None, :, None, :]
        h = jnp.stack([fn(pre[i]) for i, fn in enumerate(fns)])
    gram = jnp.einsum("asik,asjk->aij", h, h)
    num_nets = weights[0].shape[0]
    return s["out_w_std"] ** 2 / h.shape[-1] * gram + num_nets * s["out_b_std"] ** 2


def _wide_network_errors(depth, seed, *, width=1024, num_batches=6, batch=8):
    """Relative Frobenius error of the mean of 48 width-1024 empirical kernels, per activation."""
    x = _inputs(10, 5, seed=depth)
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(num_batches):
        fan_ins = [x.shape[1]] + [width] * (depth - 1)
        # float32 draws (twice as fast) widened on the device: still exact N(0, 1) draws
        # up to float32 rounding, irrelevant at this tolerance.
        weights = [rng.standard_normal((batch, f, width), dtype=np.float32) for f in fan_ins]
        biases = [rng.standard_normal((batch, width), dtype=np.float32) for _ in fan_ins]
        total = total + np.asarray(_summed_empirical_kernels(x, weights, biases, depth=depth))
    average = total / (num_batches * batch)
    errors = {}
    for i, name in enumerate(ALL_ACTIVATIONS):
        net = wb.mlp(hidden=(width,) * depth, activation=_activation(name), **WIDE_SCALES)
        kernel = np.asarray(nngp_kernel(net, x))
        errors[name] = np.linalg.norm(average[i] - kernel) / np.linalg.norm(kernel)
    return errors


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_kernel_matches_average_of_wide_networks(depth):
    errors = _wide_network_errors(depth, seed=100 + depth)
    assert max(errors.values()) < 5e-2, errors


def _error_slope(name, depth, widths, x, rng, reps):
    """Weighted least-squares slope of log ||Khat - K||_F against log width, and its SE.

    Each width contributes the mean of log squared errors over ``reps`` independent
    networks; as width grows, ``width * ||Khat - K||^2`` has a width-free limit
    law (CLT), so that mean is ``const - log(width)`` with a sampling error
    estimated from the replicates.
    """
    means, variances = [], []
    for width in widths:
        net = wb.mlp(hidden=(width,) * depth, activation=_activation(name))
        squared_errors = jax.jit(
            lambda h, k, net=net: jnp.sum((_empirical_kernels(net, x, h) - k[None]) ** 2, (1, 2))
        )
        logs = np.log(
            np.asarray(squared_errors(_prior_draws(net, x, reps, rng), nngp_kernel(net, x)))
        )
        means.append(logs.mean())
        variances.append(logs.var(ddof=1) / reps)
    log_w, y, weight = np.log(widths), np.array(means), 1 / np.array(variances)
    centre = np.sum(weight * log_w) / weight.sum()
    sxx = np.sum(weight * (log_w - centre) ** 2)
    slope = np.sum(weight * (log_w - centre) * y) / sxx
    # Halve: the slope of the log error norm, not of its square.
    return slope / 2, 1 / (2 * math.sqrt(sxx))


@pytest.mark.parametrize(("name", "depth"), [("relu", 1), ("erf", 1), ("tanh", 2)])
def test_single_network_error_shrinks_like_inverse_sqrt_width(name, depth):
    x = _inputs(10, 4, seed=7)
    slope, se = _error_slope(name, depth, [128, 256, 512, 1024], x, np.random.default_rng(5), 24)
    # |z| < 4: measured z-scores over 30 other seeds had sd <= 1.1; a wrong kernel makes
    # the error plateau, so the slope drifts towards 0.
    assert abs(slope + 0.5) < 4 * se, (slope, se)
    assert se < 0.1  # the test has power: a plateau (slope ~ -0.2) would fail


# -- Monte Carlo kernel ------------------------------------------------------------------------


def _bonferroni_z(num_tests, alpha=1e-3):
    return stats.norm.ppf(1 - alpha / (2 * num_tests))


MC_ACTIVATIONS = ["relu", "gelu", "tanh"]  # one per dual route; all are checked above


def _mc_z_scores(name, key):
    # One hidden layer: the prior mean of Psi Psi^T equals the NNGP kernel at every
    # width (i.i.d. units), so the z-scores have no finite-width bias.
    x = _inputs(8, 3, seed=1)
    net = wb.mlp(hidden=(64,), activation=_activation(name), b_std=0.3)
    estimate = nngp_kernel_mc(net, x, num_samples=400, key=key)
    mean, standard_error = (np.asarray(a) for a in estimate)
    upper = np.triu_indices(8)
    return ((mean - np.asarray(nngp_kernel(net, x))) / standard_error)[upper]


@pytest.mark.parametrize("name", MC_ACTIVATIONS)
def test_mc_kernel_agrees_within_its_standard_error(name, key):
    z = _mc_z_scores(name, key)
    assert np.max(np.abs(z)) < _bonferroni_z(len(MC_ACTIVATIONS) * z.size)


def test_mc_kernel_of_a_custom_network_agrees_with_mlp_kernel(key):
    # A hand-written one-layer relu network through wb.network (no spec).
    def init_hidden(k, x):
        kw, kb = jax.random.split(k)
        return {
            "w": jax.random.normal(kw, (x.shape[-1], 96), x.dtype),
            "b": jax.random.normal(kb, (96,), x.dtype),
        }

    def features(hidden, x):
        pre = x @ hidden["w"] * (1.3 / math.sqrt(x.shape[-1])) + 0.2 * hidden["b"][None, :]
        return jax.nn.relu(pre)

    custom = wb.network(init_hidden, features, out_w_std=0.9, out_b_std=0.4)
    reference = wb.mlp(
        hidden=(7,), activation="relu", w_std=1.3, b_std=0.2, out_w_std=0.9, out_b_std=0.4
    )
    x1, x2 = _inputs(6, 3, seed=2), _inputs(5, 3, seed=3)
    estimate = nngp_kernel_mc(custom, x1, x2, num_samples=400, key=key)
    assert isinstance(estimate, NNGPKernelEstimate)
    assert estimate.mean.shape == (6, 5)
    mean, standard_error = (np.asarray(a) for a in estimate)
    z = (mean - np.asarray(nngp_kernel(reference, x1, x2))) / standard_error
    assert np.max(np.abs(z)) < _bonferroni_z(z.size)


def _deep_mc_z_scores(key):
    # Depth 2: E[Psi Psi^T] differs from the NNGP by O(1/width); at width 512 with
    # 16 draws that bias is ~sqrt(16 / 1024) ~ 0.1 standard errors.
    x = _inputs(6, 3, seed=4)
    net = wb.mlp(hidden=(512, 512), activation="gelu")
    estimate = nngp_kernel_mc(net, x, num_samples=16, key=key)
    mean, standard_error = (np.asarray(a) for a in estimate)
    upper = np.triu_indices(6)
    return ((mean - np.asarray(nngp_kernel(net, x))) / standard_error)[upper]


def test_mc_kernel_deep_mlp_within_standard_error(key):
    z = _deep_mc_z_scores(key)
    # 16 draws: the standard error is itself noisy, so use Student-t quantiles.
    assert np.max(np.abs(z)) < stats.t.ppf(1 - 1e-3 / (2 * z.size), df=15)


def test_mc_kernel_mean_and_standard_error_are_exact_sample_statistics(key):
    # Image-shaped inputs and a feature map without spec: any Network works, even one
    # whose callables cannot be hashed (no compilation cache for those).
    def init_hidden(k, x):
        return {"w": jax.random.normal(k, (x.shape[1] * x.shape[2], 6), x.dtype)}

    class Features:
        __hash__ = None  # like a mutable callable object

        def __call__(self, hidden, x):
            return jnp.tanh(x.reshape(x.shape[0], -1) @ hidden["w"])

    net = wb.network(init_hidden, Features())
    x = jnp.asarray(np.random.default_rng(3).standard_normal((3, 2, 4)))
    estimate = nngp_kernel_mc(net, x, num_samples=5, key=key)
    assert isinstance(estimate, NNGPKernelEstimate)

    @jax.jit
    @jax.vmap
    def empirical(k):
        psi = net.readout_features(net.init(k, x)["hidden"], x)
        return psi @ psi.T

    samples = np.asarray(empirical(jax.random.split(key, 5)))
    np.testing.assert_allclose(estimate.mean, samples.mean(0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        estimate.standard_error, samples.std(0, ddof=1) / math.sqrt(5), rtol=1e-8, atol=1e-14
    )


# -- structure: blocks, symmetry, PSD, special cases ------------------------------------------


@pytest.mark.parametrize("name", ["relu", "tanh"])  # closed form, quadrature
def test_blocked_equals_unblocked(name):
    net = wb.mlp(hidden=(8, 8), activation=_activation(name))
    x1, x2 = _inputs(45, 3, seed=5), _inputs(30, 3, seed=6)
    full = nngp_kernel(net, x1, block_size=1000)
    # 7 divides neither 45 nor 30: padded, non-square tile grids.
    blocked = nngp_kernel(net, x1, block_size=7)
    np.testing.assert_allclose(blocked, full, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(blocked, blocked.T)  # mirrored tiles: exact
    if name == "tanh":  # tiling does not depend on the dual; spare the slow compiles
        return
    full_cross = nngp_kernel(net, x1, x2, block_size=1000)
    np.testing.assert_allclose(
        nngp_kernel(net, x1, x2, block_size=7), full_cross, rtol=1e-12, atol=1e-14
    )
    np.testing.assert_allclose(nngp_kernel(net, x1, diag=True), np.diagonal(full), rtol=1e-12)
    # The cross route (x2 given) at x2 = x1 agrees with the symmetric route (not so for
    # quadrature, whose rule is not symmetric in (x, x'): agreement to its accuracy only).
    np.testing.assert_allclose(nngp_kernel(net, x1, x1, block_size=7), full, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ALL_ACTIVATIONS)
def test_kernel_is_positive_semidefinite(name):
    # Near-duplicate points make K nearly singular: the hardest case for PSD-ness.
    x = np.asarray(_inputs(60, 4, seed=8))
    x = jnp.asarray(np.concatenate([x, x[:20] + 1e-9, -x[:10]]))
    net = wb.mlp(hidden=(1,) * 3, activation=_activation(name))
    kernel = nngp_kernel(net, x, block_size=32)
    eig = np.linalg.eigvalsh(np.asarray(kernel))
    tol = 90 * np.finfo(np.float64).eps * eig.max()
    if name in ("tanh", "sin"):  # quadrature is PSD only up to its own error
        tol = 1e-4 * eig.max()
    assert eig.min() >= -tol


def test_linear_model_kernel():
    x1, x2 = _inputs(5, 3, seed=9), _inputs(4, 3, seed=10)
    net = wb.mlp(hidden=(), out_w_std=1.7, out_b_std=0.4)
    expected = 1.7**2 * (np.asarray(x1) @ np.asarray(x2).T) / 3 + 0.4**2
    np.testing.assert_allclose(nngp_kernel(net, x1, x2), expected, rtol=1e-13)


def test_one_layer_relu_kernel_by_hand():
    # Arc-cosine kernel written out for two points, no library helper involved.
    x = np.array([[1.0, 0.5], [-0.3, 2.0]])
    w, b, ow, ob = 1.2, 0.3, 0.8, 0.1
    net = wb.mlp(hidden=(5,), activation="relu", w_std=w, b_std=b, out_w_std=ow, out_b_std=ob)
    k = w**2 * (x @ x.T) / 2 + b**2
    theta = math.acos(k[0, 1] / math.sqrt(k[0, 0] * k[1, 1]))
    cross = (
        math.sqrt(k[0, 0] * k[1, 1])
        / (2 * math.pi)
        * (math.sin(theta) + (math.pi - theta) * math.cos(theta))
    )
    expected = ow**2 * np.array([[k[0, 0] / 2, cross], [cross, k[1, 1] / 2]]) + ob**2
    np.testing.assert_allclose(nngp_kernel(net, x), expected, rtol=1e-13)


def test_width_does_not_matter_and_dtype_is_kept():
    x = _inputs(6, 2, seed=11)
    k1 = nngp_kernel(wb.mlp(hidden=(3, 5), activation="erf"), x)
    k2 = nngp_kernel(wb.mlp(hidden=(100, 7), activation="erf"), x)
    np.testing.assert_array_equal(k1, k2)
    assert k1.dtype == jnp.float64
    nets = [wb.mlp(hidden=(4, 4), activation=name) for name in ("relu", "gelu", "tanh")]
    references = [np.asarray(nngp_kernel(net, x)) for net in nets]
    with jax.enable_x64(False):
        x32 = jnp.asarray(np.asarray(x, dtype=np.float32))
        for net, reference in zip(nets, references, strict=True):
            k32 = nngp_kernel(net, x32, block_size=4)
            assert k32.dtype == jnp.float32
            np.testing.assert_allclose(k32, reference, rtol=2e-5, atol=1e-6)


def test_jit_compatible():
    x = _inputs(7, 3, seed=12)
    net = wb.mlp(hidden=(4,), activation="tanh")
    np.testing.assert_allclose(
        jax.jit(lambda z: nngp_kernel(net, z, block_size=3))(x), nngp_kernel(net, x), rtol=1e-13
    )


# -- gradients ----------------------------------------------------------------------------------


def _central_difference(f, x, h=1e-5):
    x = np.asarray(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[idx] = h
        grad[idx] = (float(f(jnp.asarray(x + step))) - float(f(jnp.asarray(x - step)))) / (2 * h)
    return grad


@pytest.mark.parametrize("name", ALL_ACTIVATIONS)
def test_input_gradients_finite_and_correct_at_coincident_points(name):
    net = wb.mlp(hidden=(3, 3), activation=_activation(name))
    x = np.asarray(_inputs(3, 2, seed=13))
    x = jnp.asarray(np.concatenate([x, x[:1]]))  # row 3 == row 0: x1 == x2 inside K(x, x)
    weights = jnp.asarray(np.random.default_rng(0).standard_normal((4, 4)))

    @jax.jit
    def f(z):
        symmetric = nngp_kernel(net, z)
        cross = nngp_kernel(net, z, x)  # K(z, x) at z == x: only one argument moves
        return jnp.sum(weights * symmetric) + jnp.sum(weights.T * cross)

    grad = jax.jit(jax.grad(f))(x)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, _central_difference(f, x), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["relu", "abs", "gelu", "erf", "tanh"])
def test_hyperparameter_gradients_match_finite_differences(name):
    x = np.asarray(_inputs(4, 2, seed=14))
    x = jnp.asarray(np.concatenate([x, x[:1]]))

    @jax.jit
    def f(scales):
        w, b, ow, ob = scales
        k = mlp_nngp_kernel(
            x, depth=2, activation=name, w_std=w, b_std=b, out_w_std=ow, out_b_std=ob
        )
        return jnp.sum(k * k) + jnp.sum(
            mlp_nngp_kernel(
                x, x[:2], depth=2, activation=name, w_std=w, b_std=b, out_w_std=ow, out_b_std=ob
            )
        )

    scales = jnp.asarray([1.3, 0.2, 0.9, 0.1])
    grad = jax.jit(jax.grad(f))(scales)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, _central_difference(f, scales), rtol=1e-6, atol=1e-8)


def test_gradient_finite_for_zero_input_without_bias():
    # A zero-variance point (x = 0, b_std = 0) must not produce NaN gradients.
    x = jnp.asarray([[0.0, 0.0], [1.0, -0.5], [0.3, 0.8]])
    for name in ("relu", "gelu", "tanh"):  # one per code path: kinked, closed, quadrature
        net = wb.mlp(hidden=(2, 2), activation=name, b_std=0.0, out_b_std=0.0)
        f = jax.jit(jax.value_and_grad(lambda z, n=net: jnp.sum(nngp_kernel(n, z) ** 2)))
        value, grad = f(x)
        assert np.isfinite(value) and np.all(np.isfinite(grad)), name


# -- GP posterior --------------------------------------------------------------------------------


def _regression(n=20, m=7, k=2, noise=0.1, seed=15):
    rng = np.random.default_rng(seed)
    x = _inputs(n + m, 3, seed=seed)
    signal = np.sin(np.asarray(x) @ rng.standard_normal((3, k)))
    y = signal + noise * rng.standard_normal((n + m, k))
    return wb.RegressionData(x[:n], y[:n], noise_std=noise), x[n:]


@pytest.mark.parametrize("name", ["gelu", "relu"])
def test_predict_matches_dense_gp(name):
    data, x_test = _regression()
    net = wb.mlp(hidden=(16, 16), activation=name)
    joint = np.asarray(nngp_kernel(net, np.concatenate([data.x, x_test])))
    n = data.num_points
    k_train, k_cross, k_test = joint[:n, :n], joint[n:, :n], joint[n:, n:]
    a = k_train + data.noise_std**2 * np.eye(n)
    mean = k_cross @ np.linalg.solve(a, np.asarray(data.y))
    cov = k_test - k_cross @ np.linalg.solve(a, k_cross.T)

    posterior = nngp_predict(net, data, x_test, full_cov=True)
    assert isinstance(posterior, NNGPPosterior)
    got_mean, got_cov = posterior  # unpacks
    np.testing.assert_allclose(got_mean, mean, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(got_cov, cov, rtol=1e-9, atol=1e-11)
    mean_only, variance = nngp_predict(net, data, x_test)
    np.testing.assert_allclose(mean_only, mean, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(variance, np.diag(cov), rtol=1e-9, atol=1e-11)
    assert got_mean.shape == (7, 2) and variance.shape == (7,)


def test_predict_single_output_and_log_marginal_likelihood():
    data, _ = _regression(n=15, k=1)
    single = wb.RegressionData(data.x, data.y[:, 0], noise_std=data.noise_std)
    net = wb.mlp(hidden=(8,), activation="erf")
    mean, _ = nngp_predict(net, single, data.x)
    assert mean.shape == (15, 1)

    data3, _ = _regression(n=15, k=3)
    k = np.asarray(nngp_kernel(net, data3.x)) + data3.noise_std**2 * np.eye(15)
    y = np.asarray(data3.y)
    expected = sum(stats.multivariate_normal(np.zeros(15), k).logpdf(y[:, j]) for j in range(3))
    np.testing.assert_allclose(nngp_log_marginal_likelihood(net, data3), expected, rtol=1e-10)


def test_predictive_mean_interpolates_as_noise_vanishes():
    data, _ = _regression(n=12, k=2)
    net = wb.mlp(hidden=(8,), activation="relu")
    kernel = np.asarray(nngp_kernel(net, data.x))
    smallest = np.linalg.eigvalsh(kernel).min()
    residuals = []
    for noise in (1e-1, 1e-2, 1e-3):
        noisy = wb.RegressionData(data.x, data.y, noise_std=noise)
        mean, variance = nngp_predict(net, noisy, data.x)
        residual = np.linalg.norm(np.asarray(mean) - np.asarray(data.y))
        # mean - y = -s2 (K + s2 I)^-1 y: its norm is at most s2 / lambda_min(K) * |y|.
        assert residual <= noise**2 / smallest * np.linalg.norm(data.y) * (1 + 1e-6)
        assert np.all(np.asarray(variance) <= noise**2 * (1 + 1e-6))
        residuals.append(residual)
    assert residuals[0] > residuals[1] > residuals[2]
    assert residuals[2] < 1e-3 * np.linalg.norm(data.y)


# -- errors and warnings ----------------------------------------------------------------------


def test_network_without_spec_points_to_mc():
    net = wb.resnet(channels=4, num_blocks=1)
    x = jnp.zeros((2, 4, 4, 1))
    with pytest.raises(ValueError, match="nngp_kernel_mc"):
        nngp_kernel(net, x)
    data = wb.RegressionData(jnp.ones((3, 2)), jnp.ones(3), noise_std=0.1)
    with pytest.raises(ValueError, match="nngp_kernel_mc"):
        nngp_predict(net, data, jnp.ones((2, 2)))


def test_bad_inputs_raise_value_error(key):
    net = wb.mlp(hidden=(4,))
    x = np.asarray(_inputs(5, 3))
    with_nan, with_inf = x.copy(), x.copy()
    with_nan[0, 0], with_inf[1, 1] = np.nan, np.inf
    bad = [
        (lambda: nngp_kernel(net, np.arange(6).reshape(2, 3)), "integer"),
        (lambda: nngp_kernel(net, with_nan), "non-finite"),
        (lambda: nngp_kernel(net, x[0]), r"\(n, d_in\)"),
        (lambda: nngp_kernel(net, x, x[:, :2]), "feature shape"),
        (lambda: nngp_kernel(net, x, x.astype(np.float32)), "dtype"),
        (lambda: nngp_kernel(net, x, x, diag=True), "x2=None"),
        (lambda: nngp_kernel(net, x, block_size=0), "block_size"),
        (lambda: nngp_kernel(net, x, quadrature_order=1), "quadrature_order"),
        (lambda: nngp_kernel("mlp", x), "Network"),
        (lambda: nngp_kernel_mc(net, x, num_samples=1, key=key), "num_samples"),
        (
            lambda: mlp_nngp_kernel(
                x, depth=1, activation="relu", w_std=-1.0, b_std=0.1, out_w_std=1.0, out_b_std=0.0
            ),
            "w_std",
        ),
        (
            lambda: mlp_nngp_kernel(
                x, depth=-1, activation="relu", w_std=1.0, b_std=0.1, out_w_std=1.0, out_b_std=0.0
            ),
            "depth",
        ),
    ]
    for call, message in bad:
        with pytest.raises(ValueError, match=message):
            call()
    data = wb.RegressionData(x, np.ones(5), noise_std=0.1)
    for x_test, message in [
        (x[:, :2], r"\(m, 3\)"),
        (x.astype(np.float32), "dtype"),
        (with_inf, "non-finite"),
    ]:
        with pytest.raises(ValueError, match=message):
            nngp_predict(net, data, x_test)
    with pytest.raises(ValueError, match="RegressionData"):
        nngp_predict(net, (x, np.ones(5)), x)


def test_inaccurate_quadrature_warns():
    net = wb.mlp(hidden=(4,), activation="tanh", w_std=3.0)
    x = _inputs(5, 2)
    with pytest.warns(NumericalWarning, match="quadrature_order"):
        nngp_kernel(net, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nngp_kernel(net, x, quadrature_order=160)

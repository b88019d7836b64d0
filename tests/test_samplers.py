"""Kernel-level tests of :mod:`wide_bnn.samplers` on cheap targets with known answers.

The end-to-end tests on network posteriors live in ``test_sampling.py``; here every
kernel runs through a minimal driver (warm-up with its tuning, then sampling) on a
Gaussian target with a region where the log-density and its gradient are NaN. The
exact answer is a truncated Gaussian, so one test checks exactness, that NaN
proposals are rejected and never entered, and that a chain keeps moving after them.

False-failure check (offline, no seed hunting): the statistical test below was rerun
as 30 independent replicates per sampler; pass counts are in the report of issue 4.
"""

import math

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm, truncnorm

from wide_bnn import samplers
from wide_bnn.samplers import (
    DEFAULT_SAMPLER,
    LANGEVIN_REFERENCE,
    SAMPLERS,
    build_kernel,
    pcnl_log_ratio,
    resolve_options,
)

ALL = tuple(SAMPLERS)
# Kernels on flat positions; block_pcn needs a network's hidden units (test_units.py).
FLAT = tuple(name for name in ALL if not SAMPLERS[name].needs_units)
# Family-wise false-failure probability of the statistical test (fixed seeds: the chance
# that an innocent change of random streams trips it).
LEVEL = 0.001


def run_chains(kernel, positions, key, num_warmup, num_samples):
    """Warm up with the kernel's own tuning, then sample; all chains vmapped."""
    chains = positions.shape[0]
    schedule = jnp.asarray(kernel.schedule(num_warmup))

    @jax.jit
    def run(key, positions):
        key_init, key_warm, key_sample = jax.random.split(key, 3)
        states = jax.vmap(kernel.init)(jax.random.split(key_init, chains), positions)
        tunes = jax.vmap(lambda _: kernel.adapt_init())(jnp.arange(chains))

        def warm(carry, xs):
            states, tunes = carry
            key, stage = xs
            params = jax.vmap(kernel.adapt_params)(tunes)
            states, stats = jax.vmap(kernel.step)(jax.random.split(key, chains), states, params)
            positions = jax.vmap(kernel.position)(states)
            tunes = jax.vmap(kernel.adapt_update, in_axes=(0, None, 0, 0))(
                tunes, stage, positions, stats["acceptance_rate"]
            )
            return (states, tunes), None

        warm_keys = jax.random.split(key_warm, num_warmup)
        (states, tunes), _ = jax.lax.scan(warm, (states, tunes), (warm_keys, schedule))
        params = jax.vmap(kernel.adapt_final)(tunes)

        def step(states, key):
            states, stats = jax.vmap(kernel.step)(jax.random.split(key, chains), states, params)
            positions = jax.vmap(kernel.position)(states)
            return states, (positions, jax.vmap(kernel.logdensity)(states), stats)

        _, out = jax.lax.scan(step, states, jax.random.split(key_sample, num_samples))
        return out, params

    return run(key, positions)


def z_scores(samples, means, variances):
    """(estimate - truth) / MCSE for each coordinate's mean and variance.

    ``samples`` is (draw, chain, dim). The MCSE of the variance estimate is the MCSE
    of the mean of the squared deviations from the true mean (ESS of those squares).
    """
    zs = []
    for i in range(samples.shape[-1]):
        x = np.asarray(samples[..., i]).T  # (chain, draw) for ArviZ
        zs.append((x.mean() - means[i]) / az.mcse(x, method="mean"))
        sq = (x - means[i]) ** 2
        zs.append((sq.mean() - variances[i]) / az.mcse(sq, method="mean"))
    return np.asarray(zs)


# -- a Gaussian with a NaN region: exact answer is a truncated Gaussian ------------------------

# Narrower than the N(0, 1) prior in every coordinate (as posteriors are): prior-based
# proposals (pCN, elliptical slice) mix well, and scales differ by 3x for the mass matrix.
MU = np.array([0.3, -0.5, 0.4])
SD = np.array([0.5, 0.8, 0.25])
CUT = MU[0] + 2.0 * SD[0]  # x0 > CUT: log-density and gradient are NaN (2.3% of the mass)


def nan_gaussian_logdensity(x):
    value = -0.5 * jnp.sum(jnp.square((x - MU) / SD)) - jnp.sum(jnp.log(SD))
    # 0 * sqrt(negative) is NaN, and so is its gradient: a NaN-producing region.
    return value + 0.0 * jnp.sqrt(CUT - x[0])


def nan_gaussian_loglik(x):
    # log target - log N(x; 0, I), constants included
    return nan_gaussian_logdensity(x) + 0.5 * jnp.sum(jnp.square(x)) + 1.5 * math.log(2 * math.pi)


def truncated_moments():
    beta = (CUT - MU[0]) / SD[0]
    first = truncnorm(-np.inf, beta, loc=MU[0], scale=SD[0])
    return np.array([first.mean(), *MU[1:]]), np.array([first.var(), *SD[1:] ** 2])


# Fast: the kernels with their own NaN handling (elliptical slice would accept a NaN,
# pCN and pCNL are hand-written, GHMC carries a persistent slice); the others are BlackJAX's
# standard MH kernels, also covered end-to-end in test_sampling.py.
FAST_KERNELS = ("langevin", "pcn", "pcnl", "elliptical")
KERNEL_CASES = [
    name if name in FAST_KERNELS else pytest.param(name, marks=pytest.mark.slow) for name in FLAT
]


@pytest.mark.parametrize("name", KERNEL_CASES)
def test_kernel_exact_on_gaussian_with_nan_region(name):
    kernel = build_kernel(name, nan_gaussian_logdensity, nan_gaussian_loglik, 3, jnp.float64)
    start = jnp.asarray(MU - np.array([0.5, 0.0, 0.0]))[None, :]
    positions = start + 0.1 * jax.random.normal(jax.random.key(1), (4, 3), jnp.float64)
    (draws, lp, _), _ = run_chains(kernel, positions, jax.random.key(2), 500, 1500)
    draws, lp = np.asarray(draws), np.asarray(lp)
    # Never entered: every saved position is outside the NaN region, with a finite lp.
    assert np.all(draws[..., 0] <= CUT)
    assert np.all(np.isfinite(lp)) and np.all(np.isfinite(draws))
    # (likelihood-based kernels store log target - log N(x; 0, I): rounding ~1e-15 * ||x||^2)
    expected_lp = jax.vmap(jax.vmap(nan_gaussian_logdensity))(draws)
    np.testing.assert_allclose(lp, expected_lp, rtol=1e-9, atol=1e-9)
    # Exactness: moments of the truncated Gaussian within a Bonferroni-corrected MCSE bound.
    means, variances = truncated_moments()
    z = z_scores(draws, means, variances)
    bound = norm.ppf(1 - LEVEL / (2 * z.size))
    assert np.all(np.abs(z) < bound), (name, np.round(z, 2))


def test_nan_proposals_are_flagged_as_divergences():
    # A large fixed step makes HMC proposals land in the NaN region often.
    kernel = build_kernel(
        "hmc",
        nan_gaussian_logdensity,
        nan_gaussian_loglik,
        3,
        jnp.float64,
        {"step_size": 0.8, "adapt_mass_matrix": False},
    )
    positions = jnp.tile(jnp.asarray(MU - np.array([0.5, 0.0, 0.0])), (2, 1))
    (draws, lp, stats), params = run_chains(kernel, positions, jax.random.key(0), 0, 200)
    diverging = np.asarray(stats["diverging"])
    assert diverging.any() and not diverging.all()
    assert np.all(np.asarray(draws)[..., 0] <= CUT) and np.all(np.isfinite(np.asarray(lp)))
    assert np.all(np.asarray(params["step_size"]) == 0.8)


# -- tuning rules --------------------------------------------------------------------------------


def tune(kernel, acceptance_rates, stages=None, position=None):
    """Drive a kernel's tuning with given acceptance rates (no chain); final params."""
    position = jnp.zeros((3,)) if position is None else position
    stages = np.zeros((len(acceptance_rates), 3), np.int32) if stages is None else stages

    @jax.jit
    def run(rates, stages):
        def body(state, xs):
            rate, stage = xs
            return kernel.adapt_update(state, stage, position, rate), None

        state, _ = jax.lax.scan(body, kernel.adapt_init(), (rates, stages))
        return kernel.adapt_final(state), kernel.adapt_params(state)

    return run(jnp.asarray(acceptance_rates, jnp.float64), jnp.asarray(stages))


def test_pcn_scale_is_capped_at_one():
    kernel = build_kernel("pcn", nan_gaussian_logdensity, nan_gaussian_loglik, 3, jnp.float64)
    final, current = tune(kernel, np.ones(200))  # always accepted: grow the scale
    assert float(final["scale"]) == 1.0 and float(current["scale"]) == 1.0
    final, _ = tune(kernel, np.zeros(200))  # never accepted: shrink it
    assert 0 < float(final["scale"]) < 0.05


@pytest.mark.parametrize("name", ["pcn", "elliptical"])
def test_kernels_keep_the_factorisation_of_their_state_for_recording(name):
    """With the collapsed target's cache, a kernel takes the same steps and records the same."""
    from wide_bnn.data import RegressionData
    from wide_bnn.nets import mlp
    from wide_bnn.targets import build_target

    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(6, 2)))
    data = RegressionData(x, jnp.asarray(rng.normal(size=(6, 1))), 0.3)
    target = build_target(mlp((5,), 1, "tanh"), data, x_test=x[:3])
    assert target.loglik_cache_fn is not None
    args = (name, target.logdensity_fn, target.loglik_fn, target.dim, jnp.float64)
    options = {"scale": 0.5} if name == "pcn" else {}
    plain = build_kernel(*args, options)
    cached = build_kernel(*args, options, loglik_cache_fn=target.loglik_cache_fn)

    @jax.jit
    def run(key):
        def chain(kernel):
            def one(state, key):
                state, _ = kernel.step(key, state, {"scale": jnp.asarray(0.5)})
                cache = kernel.cache(state)
                record = target.record(key, kernel.position(state), target.record_consts, cache)
                return state, (kernel.position(state), kernel.logdensity(state), record)

            start = kernel.init(key, target.init_position(key))
            return jax.lax.scan(one, start, jax.random.split(key, 40))[1]

        return chain(plain), chain(cached)

    (pos_a, lp_a, rec_a), (pos_b, lp_b, rec_b) = run(jax.random.key(4))
    assert plain.cache(plain.init(jax.random.key(0), pos_a[0])) is None
    assert len(np.unique(np.asarray(pos_a[:, 0]))) > 5  # the chain moved
    np.testing.assert_allclose(pos_a, pos_b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lp_a, lp_b, rtol=1e-10)
    for name in ("f_test", "f_test_mean", "projections"):
        np.testing.assert_allclose(rec_a[name], rec_b[name], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", ["nuts", "langevin"])
def test_step_size_moves_with_acceptance(name):
    kernel = build_kernel(name, nan_gaussian_logdensity, nan_gaussian_loglik, 3, jnp.float64)
    high, _ = tune(kernel, np.full(300, 0.99))
    low, _ = tune(kernel, np.full(300, 0.05))
    assert float(high["step_size"]) > 1.0 > float(low["step_size"]) > 0


def test_langevin_refresh_follows_the_step_size():
    kernel = build_kernel(
        "langevin",
        nan_gaussian_logdensity,
        nan_gaussian_loglik,
        3,
        jnp.float64,
        {"friction": 0.5},
    )
    final, current = tune(kernel, np.full(100, 0.95))
    for params in (final, current):
        step = float(params["step_size"])
        assert step > 0.5
        np.testing.assert_allclose(float(params["alpha"]), -math.expm1(-2 * 0.5 * step))


def test_fixed_options_are_used_exactly():
    kernel = build_kernel(
        "langevin",
        nan_gaussian_logdensity,
        nan_gaussian_loglik,
        3,
        jnp.float64,
        dict(LANGEVIN_REFERENCE),
    )
    stages = np.tile([[1, 0, 0]], (50, 1))  # slow windows: the mass matrix would adapt
    stages[-1, 1] = 1
    final, _ = tune(kernel, np.full(50, 0.3), stages, jnp.asarray([5.0, -3.0, 1.0]))
    assert float(final["step_size"]) == 0.1 and float(final["alpha"]) == 0.01
    np.testing.assert_array_equal(np.asarray(final["inverse_mass_matrix"]), 1.0)


def test_mass_matrix_adapts_in_slow_windows():
    kernel = build_kernel("hmc", nan_gaussian_logdensity, nan_gaussian_loglik, 3, jnp.float64)
    stages = np.tile([[1, 0, 0]], (50, 1))
    stages[-1, 1] = 1
    final, _ = tune(kernel, np.full(50, 0.8), stages, jnp.asarray([5.0, -3.0, 1.0]))
    # a constant position has zero variance: Stan's regularisation leaves 1e-3 * 5/55
    np.testing.assert_allclose(np.asarray(final["inverse_mass_matrix"]), 1e-3 * 5 / 55)


def test_window_schedule_adapts_the_mass_matrix_only_with_enough_warmup():
    kernel = build_kernel("nuts", nan_gaussian_logdensity, nan_gaussian_loglik, 3, jnp.float64)
    long = kernel.schedule(500)
    assert long.shape == (500, 3) and long.dtype == np.int32
    assert long[:, 0].any() and long[:, 1].sum() >= 3  # slow windows with ends
    assert not kernel.schedule(10)[:, 0].any()
    assert kernel.schedule(0).shape == (0, 3)
    # the step size is searched once, after the first step
    for num_warmup in (1, 10, 500):
        np.testing.assert_array_equal(kernel.schedule(num_warmup)[:, 2], np.eye(num_warmup)[0])


# -- the step-size search ---------------------------------------------------------------------

SEARCH_SCALES = jnp.asarray(np.geomspace(0.05, 2.0, 500))


def scaled_gaussian_logdensity(x):
    return -0.5 * jnp.sum(jnp.square(x / SEARCH_SCALES))


def test_step_size_search_returns_the_step_where_one_leapfrog_acceptance_crosses_one_half():
    x = jax.random.normal(jax.random.key(4), (500,), jnp.float64) * SEARCH_SCALES
    imm = jnp.square(SEARCH_SCALES)  # the exact mass matrix: the whitened target is N(0, I)

    @jax.jit
    def search(step):
        return samplers._search_step_size(scaled_gaussian_logdensity, x, step, imm)

    found = float(search(1e-6))  # doubling up
    # Started just below the crossing it doubles once, just above it halves once.
    assert float(search(found / 2)) == found
    assert float(search(found)) == found / 2
    # From far above it halves down to the same crossing: the last step below it, where
    # doubling up gave the first step above it (other factor-2 grids).
    assert found / 4 < float(search(1e3)) < found
    # In whitened units a 500-d standard normal: one leapfrog step accepted half of the
    # time needs a step of order 1 (error of the energy ~ step^3 sqrt(d) / 8 ~ 1).
    assert 0.2 < found < 3.0
    # The search works in the metric: an identity mass matrix on the unwhitened target
    # is held back by the narrowest scale (0.05) and finds a step 10-40 times smaller.
    plain = float(samplers._search_step_size(scaled_gaussian_logdensity, x, 1e-6, jnp.ones(500)))
    assert found / 40 < plain < found / 10


def test_warmup_restarts_dual_averaging_from_the_searched_step():
    kernel = build_kernel(
        "nuts", scaled_gaussian_logdensity, scaled_gaussian_logdensity, 500, jnp.float64
    )
    position = jax.random.normal(jax.random.key(4), (500,), jnp.float64) * SEARCH_SCALES
    searched = float(
        samplers._search_step_size(scaled_gaussian_logdensity, position, 1.0, jnp.ones(500))
    )
    for flag, rates in ((1, [0.0]), (1, [1.0]), (0, [0.0])):
        stages = np.asarray([[0, 0, flag]], np.int32)
        _, current = tune(kernel, np.asarray(rates), stages, position)
        step = float(current["step_size"])
        if flag:
            # The crossing found from the dual-averaging step, whatever the acceptance
            # that moved it: on the factor-2 grid around the one found from 1.0.
            assert searched / 2 <= step <= 2 * searched
        else:
            # Without the search, one rejection at step 1 moves the step by dual
            # averaging alone, nowhere near it.
            assert not searched / 4 <= step <= 4 * searched


# -- the pCNL Metropolis-Hastings ratio ---------------------------------------------------------


def test_pcnl_log_ratio_equals_the_textbook_formula():
    dim = 7
    keys = jax.random.split(jax.random.key(3), 4)
    u, v = (jax.random.normal(k, (dim,), jnp.float64) for k in keys[:2])
    matrix = jax.random.normal(keys[2], (dim, dim), jnp.float64)
    shift = jax.random.normal(keys[3], (dim,), jnp.float64)

    def loglik(x):  # a non-Gaussian likelihood part, so that the drift matters
        return -0.5 * jnp.sum(jnp.tanh(matrix @ x - shift) ** 2) + jnp.sum(jnp.sin(x))

    def log_target(x):
        return loglik(x) - 0.5 * jnp.sum(x**2)

    @jax.jit
    @jax.vmap
    def both(scale):
        a = jnp.sqrt(1 - scale**2)

        def log_q(to, frm):
            mean = a * frm + (1 - a) * jax.grad(loglik)(frm)
            return -0.5 * jnp.sum((to - mean) ** 2) / scale**2

        textbook = log_target(v) - log_target(u) + log_q(u, v) - log_q(v, u)
        ours = pcnl_log_ratio(
            u, v, loglik(u), loglik(v), jax.grad(loglik)(u), jax.grad(loglik)(v), scale
        )
        return ours, textbook

    ours, textbook = both(jnp.asarray([0.05, 0.5, 0.99]))
    np.testing.assert_allclose(np.asarray(ours), np.asarray(textbook), rtol=1e-10, atol=1e-10)
    assert np.ptp(np.asarray(ours)) > 0.1  # the three cases differ: not trivially zero


# -- options -----------------------------------------------------------------------------------


def test_table_lists_every_sampler_with_defaults():
    assert set(ALL) == {"nuts", "hmc", "mala", "langevin", "pcn", "pcnl", "elliptical", "block_pcn"}
    assert DEFAULT_SAMPLER in SAMPLERS
    for name, info in SAMPLERS.items():
        assert info.name == name and info.description
        assert resolve_options(name, {}).keys() == set(info.defaults)
    assert SAMPLERS["pcn"].uses_gradient is False
    assert SAMPLERS["nuts"].uses_gradient is True
    assert [name for name in ALL if SAMPLERS[name].needs_units] == ["block_pcn"]


def test_block_pcn_needs_a_network_with_hidden_units():
    with pytest.raises(ValueError, match=r"one-hidden-layer MLP.*sampler='pcn'"):
        build_kernel("block_pcn", nan_gaussian_logdensity, nan_gaussian_loglik, 3, jnp.float64)


def test_sampler_none_picks_from_the_benchmark_rule():
    from wide_bnn import sampling
    from wide_bnn.data import RegressionData
    from wide_bnn.nets import mlp

    assert samplers.default_sampler("standard", False, 10_000, 10) == "nuts"
    assert samplers.default_sampler("standard", False, 10_000, 10, True) == "nuts"
    assert samplers.default_sampler("repriorised", True, 4 * 64, 64) == "pcn"
    assert samplers.default_sampler("repriorised", True, 4 * 64, 64, True) == "block_pcn"
    assert samplers.default_sampler("repriorised", False, 4 * 64, 64, True) == "block_pcn"
    assert samplers.default_sampler("repriorised", True, 4 * 64 - 1, 64) == DEFAULT_SAMPLER
    assert samplers.default_sampler("repriorised", True, 4 * 64 - 1, 64, True) == DEFAULT_SAMPLER
    assert samplers.default_sampler("repriorised", False, 10_000, 10) == DEFAULT_SAMPLER
    x = jnp.zeros((8, 2))
    data = RegressionData(x, jnp.zeros((8, 1)), 0.1)
    common = dict(
        x_test=None,
        collapsed=None,
        num_chains=1,
        num_warmup=0,
        num_samples=1,
        thinning=1,
        seed=0,
        progress=False,
        checkpoint_dir=None,
        keep_params=False,
        record_train=False,
        num_projections=1,
        chunk_size=None,
        devices=None,
        data_shards=1,
        sampler_options={},
        sampler=None,
    )
    # p = width + 1 readout features: 32 + 1 >= 4 * 8 picks block pCN (one hidden layer)
    # or pCN (two), 30 + 1 does not.
    for hidden, parameterisation, expected in [
        ((32,), "repriorised", "block_pcn"),
        ((5, 32), "repriorised", "pcn"),
        ((30,), "repriorised", DEFAULT_SAMPLER),
        ((32,), "standard", "nuts"),
    ]:
        setup = sampling._setup(
            mlp(hidden, 1, "relu"), data, parameterisation=parameterisation, **common
        )
        assert setup["sampler"] == expected


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("nuts", {"num_integration_steps": 3}, "unknown option.*num_integration_steps.*valid"),
        ("elliptical", {"step_size": 0.1}, "unknown option.*valid options: none"),
        ("nuts", {"step_size": -1.0}, "step_size"),
        ("hmc", {"num_integration_steps": 0}, "num_integration_steps"),
        ("pcn", {"scale": 1.5}, "scale.*<= 1"),
        ("block_pcn", {"block_size": 0}, "block_size.*int >= 1"),
        ("block_pcn", {"block_size": 2.0}, "block_size.*int >= 1"),
        ("langevin", {"alpha": 1.0}, "alpha"),
        ("mala", {"target_acceptance_rate": 1.2}, "target_acceptance_rate"),
        ("nuts", {"adapt_mass_matrix": "yes"}, "adapt_mass_matrix"),
        ("hmc", {"step_size_jitter": 1.0}, "step_size_jitter"),
        ("nope", {}, "sampler must be one of"),
    ],
)
def test_bad_options_raise(name, options, match):
    with pytest.raises(ValueError, match=match):
        resolve_options(name, options)


def test_module_exports():
    for name in samplers.__all__:
        assert hasattr(samplers, name)


# -- numerical failures: proposals whose log density is not finite -------------------------------

TRUNCATE = 0.5  # the 2-d standard normal truncated to x0 < TRUNCATE; -inf beyond
# Large fixed steps and scales from x0 = 0.4, so that proposals often land beyond the cut.
FAILURE_OPTIONS = {
    "nuts": {"step_size": 1.5, "adapt_mass_matrix": False},
    "hmc": {"step_size": 1.0, "adapt_mass_matrix": False},
    "mala": {"step_size": 1.5, "adapt_mass_matrix": False},
    "langevin": {"step_size": 1.5, "alpha": 0.5, "adapt_mass_matrix": False},
    "pcn": {"scale": 0.9},
    "pcnl": {"scale": 0.9},
    "elliptical": {},
}


def normal_target(truncated, counter=None):
    """``(logdensity, loglik)`` of N(0, I) in 2-d, optionally -inf for x0 >= TRUNCATE.

    With ``counter`` (a list), every evaluation appends how many of its (vmapped) values
    were not finite.
    """

    def cut(x, value):
        if truncated:
            value = jnp.where(x[0] < TRUNCATE, value, -jnp.inf)
        if counter is not None:
            jax.debug.callback(lambda v: counter.append(int(np.sum(~np.isfinite(v)))), value)
        return value

    def logdensity(x):
        return cut(x, -0.5 * jnp.sum(jnp.square(x)) - math.log(2 * math.pi))

    def loglik(x):
        return cut(x, jnp.zeros((), x.dtype))

    return logdensity, loglik


def numerical_failures(name, truncated, *, chains=2, num_draws=60, counter=None):
    """``(draw, chain)`` numerical_failures, and all stats, of a run from x0 = 0.4."""
    target = normal_target(truncated, counter)
    kernel = build_kernel(name, *target, 2, jnp.float64, FAILURE_OPTIONS[name])
    assert "numerical_failures" in kernel.stat_names
    positions = jnp.tile(jnp.asarray([0.4, 0.0]), (chains, 1))
    (draws, lp, stats), _ = run_chains(kernel, positions, jax.random.key(7), 0, num_draws)
    # never entered: the chains stay where the log density is finite
    assert np.all(np.isfinite(np.asarray(lp)))
    assert np.all(np.asarray(draws)[..., 0] < TRUNCATE) or not truncated
    failures = np.asarray(stats["numerical_failures"])
    assert failures.dtype == np.int32 and failures.shape == (num_draws, chains)
    return failures, {k: np.asarray(v) for k, v in stats.items()}


@pytest.mark.parametrize("name", FLAT)
def test_numerical_failures_count_proposals_with_non_finite_log_density(name):
    failures, stats = numerical_failures(name, truncated=True)
    assert failures.sum() > 0 and np.all(failures >= 0)
    if name == "elliptical":
        # one count per shrinkage proposal that fell beyond the cut
        assert failures.max() > 1 and np.all(failures <= stats["n_steps"])
    else:
        assert failures.max() == 1
        # a proposal that cannot be evaluated is rejected (and is a divergence), while
        # finite proposals are not counted (the chain also moves)
        assert np.all(stats["diverging"][failures > 0])
        assert not failures.all()
    if name not in ("nuts", "elliptical"):
        assert np.all(stats["acceptance_rate"][failures > 0] == 0)


@pytest.mark.parametrize("name", FLAT)
def test_no_numerical_failures_on_a_finite_target(name):
    failures, _ = numerical_failures(name, truncated=False)
    assert np.all(failures == 0)


@pytest.mark.parametrize("name", ["nuts", "mala", "langevin", "pcn", "pcnl", "elliptical"])
def test_numerical_failures_equal_the_non_finite_evaluations(name):
    """Every non-finite evaluation of the target is counted, once.

    One chain: vmapped over several, a while loop (elliptical slice, NUTS) evaluates
    finished chains again until all are done. Static HMC with several leapfrog steps is
    left out: it counts the end point of the trajectory only (the proposal), not the
    intermediate states.
    """
    counter = []
    failures, _ = numerical_failures(name, truncated=True, chains=1, counter=counter)
    jax.effects_barrier()
    assert counter and int(failures.sum()) == sum(counter) > 0


def test_sample_reports_numerical_failures_of_a_failed_factorisation():
    """End to end: a network whose features overflow for w0 >= 1, so the collapsed
    target's factorisation fails there; the count reaches the result, ArviZ and diagnose."""
    import wide_bnn as wb
    from wide_bnn.diagnostics import diagnose

    def features(hidden, x):
        w = hidden["w"]
        return jnp.where(w[0] < 1.0, 1.0, jnp.inf) * jnp.tanh(
            x * w[0] + w[1] + jnp.arange(3.0)[None, :]
        )

    net = wb.network(lambda key, x: {"w": jnp.zeros((2,))}, features, name="overflowing")
    x = np.linspace(-1.0, 1.0, 5)[:, None]
    data = wb.RegressionData(x, np.sin(x[:, 0]), 0.3)
    result = wb.sample(
        net,
        data,
        x_test=x[:2],
        sampler="pcn",
        scale=0.9,
        num_chains=2,
        num_warmup=0,
        num_samples=20,
        thinning=2,
        seed=1,
        progress=False,
    )
    failures = result.stats["numerical_failures"]
    assert failures.shape == (2, 20) and np.issubdtype(failures.dtype, np.integer)
    # summed over the two thinning steps of a draw
    assert failures.sum() > 0 and failures.max() <= 2 and np.all(failures >= 0)
    assert np.all(np.isfinite(result.stats["lp"]))
    idata = result.to_inference_data()
    np.testing.assert_array_equal(idata.sample_stats["numerical_failures"].values, failures)
    diagnosis = diagnose(result, emit=False)
    assert diagnosis.info["numerical_failures"] == failures.sum()
    assert any(w.startswith("numerical failures") for w in diagnosis.warnings)

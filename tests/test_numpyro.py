"""The NumPyro plug-in: exact log joints, exact posteriors, and every NumPyro entry point.

Exactness is checked twice: the log joint of the reparameterised model against
``Repriorisation.log_density`` (float64, 1e-8), and full MCMC runs against closed
forms (a network without hidden layers is Bayesian linear regression, whose
whitened readout is exactly N(0, I) and whose noise posterior is a 1-D integral).
Statistical checks use MCSE-based z-scores against Bonferroni-corrected normal
quantiles.
"""

import functools
import subprocess
import sys
import textwrap

import arviz as az
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.infer import MCMC, NUTS, Predictive
from numpyro.infer.util import initialize_model, log_density
from scipy.stats import norm

import wide_bnn as wb
import wide_bnn.numpyro as wbn
from wide_bnn import gaussian
from wide_bnn.datasets import teacher
from wide_bnn.reprior import Repriorisation
from wide_bnn.sampling import sample

ALPHA = 0.01  # family-wise false-failure rate of each statistical test


def _quantile(num_comparisons):
    return norm.ppf(1 - ALPHA / (2 * num_comparisons))


def _zscores(draws_a, truth_or_draws):
    """|mean difference| / MCSE per variable; draws are (chain, draw, variables)."""
    draws_a = np.asarray(draws_a)
    mean_a = draws_a.mean(axis=(0, 1))
    se2 = np.array([az.mcse(draws_a[..., i]) for i in range(draws_a.shape[-1])]) ** 2
    if np.ndim(truth_or_draws) == 3:
        draws_b = np.asarray(truth_or_draws)
        mean_b = draws_b.mean(axis=(0, 1))
        se2 = se2 + np.array([az.mcse(draws_b[..., i]) for i in range(draws_b.shape[-1])]) ** 2
    else:
        mean_b = np.asarray(truth_or_draws)
    return np.abs(mean_a - mean_b) / np.sqrt(se2)


def _problem(n=10, in_dim=3, out_dim=1, noise_std=0.3, seed=0):
    ds = teacher(
        n_train=n, n_test=4, in_dim=in_dim, out_dim=out_dim, noise_std=noise_std, seed=seed
    )
    return jnp.asarray(ds.x_train), jnp.asarray(ds.y_train), jnp.asarray(ds.x_test)


def _fixed_noise_model(net, sigma, **bnn_options):
    def model(x, y=None):
        f = wbn.bnn("net", net, x, y=y, noise_std=sigma, **bnn_options)
        numpyro.deterministic("f", f)
        numpyro.sample("y", dist.Normal(f, sigma), obs=y)

    return model


def _latent_noise_model(net):
    def model(x, y=None):
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        f = wbn.bnn("net", net, x, y=y, noise_std=sigma)
        numpyro.deterministic("f", f)
        numpyro.sample("y", dist.Normal(f, sigma), obs=y)

    return model


def _latent_values(model, args, seed=0):
    """A prior draw of every latent site (jitted: eager NumPyro handlers are slow)."""

    def draw(key):
        tr = handlers.trace(handlers.seed(model, key)).get_trace(*args)
        return {
            name: site["value"]
            for name, site in tr.items()
            if site["type"] == "sample" and not site["is_observed"]
        }

    return jax.jit(draw)(jax.random.key(seed))


def _log_joint(model, args, params):
    return jax.jit(lambda p: log_density(model, args, {}, p)[0])(params)


def _value_and_grad(model, args, params):
    # Jitted: eager op-by-op dispatch through NumPyro's handlers is ~100x slower.
    return jax.jit(jax.value_and_grad(lambda p: log_density(model, args, {}, p)[0]))(params)


def _hidden(params, names):
    return [{"w": params[names[0]], "b": params[names[1]]}]


# -- sites ----------------------------------------------------------------------------------


def test_site_names_are_netcdf_safe():
    x, _, _ = _problem()
    assert wbn.site_names("net", wb.mlp(hidden=(4, 5)), x) == [
        "net_hidden_0_b",
        "net_hidden_0_w",
        "net_hidden_1_b",
        "net_hidden_1_w",
    ]
    images = jnp.zeros((2, 4, 4, 1))
    names = wbn.site_names("cnn", wb.resnet(channels=3, num_blocks=1), images)
    assert "cnn_hidden_blocks_0_1_w" in names
    assert all("/" not in name for name in names)


# -- exact log joints ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "out_dim", "out_b_std"),
    [("primal", 1, 0.1), ("dual", 2, 0.0)],
)
def test_log_joint_equals_repriorisation_log_density(route, out_dim, out_b_std):
    x, y, _ = _problem(out_dim=out_dim)
    net = wb.mlp(hidden=(6,), out_dim=out_dim, out_b_std=out_b_std, activation="gelu")
    model = wbn.reparam(_fixed_noise_model(net, 0.3, route=route))
    params = _latent_values(model, (x, y))
    value, grad_numpyro = _value_and_grad(model, (x, y), params)
    rp = Repriorisation(net, wb.RegressionData(x, y, 0.3), route=route)
    phi = {
        "hidden": _hidden(params, ["net_hidden_0_w", "net_hidden_0_b"]),
        "readout": net.readout_from_matrix(params["net_readout_white"]),
    }
    value_library, grad_library = jax.jit(jax.value_and_grad(rp.log_density))(phi)
    np.testing.assert_allclose(value, value_library, rtol=1e-12, atol=1e-8)
    # The gradient NUTS uses is the library's too.
    np.testing.assert_allclose(
        grad_numpyro["net_readout_white"],
        net.readout_matrix(grad_library["readout"]),
        rtol=1e-8,
        atol=1e-8,
    )
    np.testing.assert_allclose(
        grad_numpyro["net_hidden_0_w"], grad_library["hidden"][0]["w"], rtol=1e-8, atol=1e-8
    )


def test_log_joint_with_latent_noise_and_prior_scales():
    x, y, _ = _problem()

    def model(x, y=None):
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        w_std = numpyro.sample("w_std", dist.LogNormal(0.0, 0.3))
        out_w_std = numpyro.sample("out_w_std", dist.LogNormal(0.0, 0.3))
        f = wbn.bnn("net", base, x, y=y, noise_std=sigma, w_std=w_std, out_w_std=out_w_std)
        numpyro.sample("y", dist.Normal(f, sigma), obs=y)

    base = wb.mlp(hidden=(5,), activation="tanh", w_std=1.5)
    model_rp = wbn.reparam(model)
    params = _latent_values(model_rp, (x, y), seed=3)
    value = _log_joint(model_rp, (x, y), params)
    sigma, w_std, out_w_std = (float(params[k]) for k in ("sigma", "w_std", "out_w_std"))
    net = wb.mlp(hidden=(5,), activation="tanh", w_std=w_std, out_w_std=out_w_std)
    rp = Repriorisation(net, wb.RegressionData(x, y, sigma))
    phi = {
        "hidden": _hidden(params, ["net_hidden_0_w", "net_hidden_0_b"]),
        "readout": net.readout_from_matrix(params["net_readout_white"]),
    }
    log_hyper = (
        dist.HalfNormal(1.0).log_prob(sigma)
        + dist.LogNormal(0.0, 0.3).log_prob(w_std)
        + dist.LogNormal(0.0, 0.3).log_prob(out_w_std)
    )
    np.testing.assert_allclose(
        value, jax.jit(rp.log_density)(phi) + log_hyper, rtol=1e-12, atol=1e-8
    )

    # Change of variables against the un-reparameterised model at B = T(Z).
    raw = dict(params)
    raw["net_readout"] = net.readout_matrix(rp.forward(phi)["readout"])
    del raw["net_readout_white"]
    value_raw = _log_joint(model, (x, y), raw)
    log_det = jax.jit(rp.log_det_jacobian)(phi)
    np.testing.assert_allclose(value, value_raw + log_det, rtol=1e-12, atol=1e-8)


def test_collapsed_log_joint_is_the_marginal():
    x, y, _ = _problem(out_dim=2)
    net = wb.mlp(hidden=(7,), out_dim=2, b_std=0.0)

    def model(x, y):
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        wbn.bnn_collapsed("net", net, x, y, noise_std=sigma)

    params = _latent_values(model, (x, y), seed=1)
    assert set(params) == {"sigma", "net_hidden_0_w"}
    value = _log_joint(model, (x, y), params)
    sigma = float(params["sigma"])
    rp = Repriorisation(net, wb.RegressionData(x, y, sigma))
    expected = jax.jit(rp.log_marginal)([{"w": params["net_hidden_0_w"]}])
    np.testing.assert_allclose(
        value, expected + dist.HalfNormal(1.0).log_prob(sigma), rtol=1e-12, atol=1e-8
    )
    marginal = wbn.MarginalGaussian(jnp.ones((10, 8)), 0.5, num_outputs=2)
    assert marginal.sample(jax.random.key(0), (3,)).shape == (3, 10, 2)


def test_whitened_prior_is_the_pulled_back_readout_prior():
    x, y, _ = _problem()
    net = wb.mlp(hidden=(4,))
    psi = net.readout_features(net.init(jax.random.key(1), x)["hidden"], x)

    @functools.partial(jax.jit, static_argnums=0)
    def check(route):
        cond = gaussian.readout_conditional(psi, y, 0.09, route=route)
        prior = wbn.WhitenedReadoutPrior(cond)
        z = prior.sample(jax.random.key(2), (3,))
        eps = jax.random.normal(jax.random.key(2), z.shape, z.dtype)
        log_probs = jax.vmap(lambda e: dist.Normal(0, 1).log_prob(e).sum())(eps) + cond.log_det()
        return jax.vmap(cond.transform)(z), eps, prior.log_prob(z), log_probs

    for route in ("primal", "dual"):
        readout, eps, log_prob, expected = check(route)
        # Sampling Z then mapping by T is sampling B from its N(0, I) prior.
        np.testing.assert_allclose(readout, eps, atol=1e-10)
        np.testing.assert_allclose(log_prob, expected, rtol=1e-12)


# -- exact posteriors with NumPyro NUTS ------------------------------------------------------


# Each statistical check is a function of a seed, so that its false-failure rate can be
# measured offline over other seeds; the tests use seed 0.


def _linear_run(seed):
    """NumPyro NUTS on the plug-in for Bayesian linear regression (fixed noise)."""
    x, y, x_test = _problem(n=12, noise_std=0.2)
    net = wb.mlp(hidden=())
    model = wbn.reparam(_fixed_noise_model(net, 0.2))
    mcmc = MCMC(
        NUTS(model),
        num_warmup=300,
        num_samples=600,
        num_chains=2,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.split(jax.random.key(seed))[0], x, y)
    return net, model, mcmc, (x, y, x_test)


def _exactness_scores(run):
    net, _, mcmc, (x, y, _) = run
    grouped = mcmc.get_samples(group_by_chain=True)
    z = np.asarray(grouped["net_readout_white"])[..., 0]  # (chain, draw, p)
    b = np.asarray(grouped["net_readout"])[..., 0]
    cond = Repriorisation(net, wb.RegressionData(x, y, 0.2)).conditional([])
    # Mean 0 and second moment 1 of Z, and the closed-form posterior mean of B.
    return np.concatenate(
        [
            _zscores(z, np.zeros(z.shape[-1])),
            _zscores(z**2, np.ones(z.shape[-1])),
            _zscores(b, np.asarray(cond.mean)[:, 0]),
        ]
    )


def _fresh_draws(run, seed):
    net, model, mcmc, (x, y, x_test) = run
    key = jax.random.split(jax.random.key(seed))[1]  # independent of the chain's key
    out = wbn.readout_posterior(key, model, mcmc.get_samples(), x, y, x_test=x_test)
    cond = Repriorisation(net, wb.RegressionData(x, y, 0.2)).conditional([])
    psi_test = net.readout_features([], x_test)
    mean = np.asarray(psi_test @ cond.mean)[:, 0]
    # Independent exact draws: plain standard errors.
    num_draws = out["f_test"].shape[0]
    se = np.sqrt(np.diag(np.asarray(cond.predict_cov(psi_test))) / num_draws)
    scores = np.abs(np.asarray(out["f_test"]).mean(axis=0)[:, 0] - mean) / se
    return out, mean, scores


@pytest.fixture(scope="module")
def linear_run():
    return _linear_run(0)


def test_whitened_readout_is_exactly_standard_normal(linear_run):
    scores = _exactness_scores(linear_run)
    assert np.all(scores < _quantile(scores.size)), scores


def test_predictive_arviz_and_readout_posterior(linear_run, tmp_path):
    net, model, mcmc, (_, _, x_test) = linear_run
    samples = mcmc.get_samples()
    pred = Predictive(model, samples)(jax.random.key(1), x_test)
    expected = jnp.einsum("mp,spk->smk", net.readout_features([], x_test), samples["net_readout"])
    np.testing.assert_allclose(pred["f"], expected, rtol=1e-12)
    assert pred["y"].shape == (1200, 4, 1)

    idata = az.from_numpyro(mcmc)
    path = tmp_path / "plugin.nc"
    idata.to_netcdf(str(path))
    loaded = az.from_netcdf(str(path))
    np.testing.assert_array_equal(loaded.posterior["net_readout"], idata.posterior["net_readout"])

    out, mean, scores = _fresh_draws(linear_run, 0)
    assert out["readout"].shape == (1200, 4, 1) and out["f_test"].shape == (1200, 4, 1)
    np.testing.assert_allclose(out["f_test_mean"][:, :, 0], np.tile(mean, (1200, 1)), rtol=1e-10)
    assert np.all(scores < _quantile(scores.size)), scores


def _noise_truth(x, y, net):
    """Posterior means of sigma ~ HalfNormal(1) and of f(x) by quadrature (no hidden layer)."""
    psi = net.readout_features([], x)
    grid = jnp.linspace(1e-3, 2.0, 4001)

    def log_post(sigma):
        marginal = gaussian.log_marginal_gaussian(psi, y, sigma**2)
        return dist.HalfNormal(1.0).log_prob(sigma) + marginal

    def fit(sigma):
        return psi @ gaussian.readout_conditional(psi, y, sigma**2).mean

    log_w = jax.vmap(log_post)(grid)
    w = jnp.exp(log_w - log_w.max())
    w = w / w.sum()
    return float(w @ grid), np.asarray(jnp.einsum("g,gnk->nk", w, jax.vmap(fit)(grid)))


def _quadrature_scores(kind, seed):
    x, y, _ = _problem(n=12, noise_std=0.3, seed=4)
    net = wb.mlp(hidden=())
    sigma_truth, f_truth = _noise_truth(x, y, net)
    model = _latent_noise_model(net)
    if kind == "plugin":
        model = wbn.reparam(model)
    elif kind == "collapsed":

        def model(x, y):
            sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
            wbn.bnn_collapsed("net", net, x, y, noise_std=sigma)

    # Four chains: ArviZ's MCSE from two chains is itself too noisy for a z-test (with two
    # chains the collapsed case failed 1 seed in 13, at |z| = 3.7; see issue 7's note).
    mcmc = MCMC(
        NUTS(model),
        num_warmup=300,
        num_samples=600,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    key_mcmc, key_readout = jax.random.split(jax.random.key(seed))
    mcmc.run(key_mcmc, x, y)
    grouped = mcmc.get_samples(group_by_chain=True)
    if kind == "collapsed":
        out = wbn.readout_posterior(key_readout, model, grouped, x, y, x_test=x, batch_ndims=2)
        assert out["readout"].shape == (4, 600, 4, 1)
        f = out["f_test"]
    else:
        f = grouped["f"]
    return np.concatenate(
        [
            _zscores(np.asarray(grouped["sigma"])[..., None], [sigma_truth]),
            _zscores(np.asarray(f)[..., 0], f_truth[:, 0]),
        ]
    )


@pytest.mark.parametrize(
    "kind",
    ["plugin", "standard", "collapsed"],
)
def test_latent_noise_posterior_matches_quadrature(kind):
    scores = _quadrature_scores(kind, 0)
    assert np.all(scores < _quantile(scores.size)), scores


def _library_scores(seed):
    x, y, x_test = _problem(n=10, in_dim=2, noise_std=0.3, seed=2)
    net = wb.mlp(hidden=(8,), activation="tanh")
    mcmc = MCMC(
        NUTS(wbn.reparam(_fixed_noise_model(net, 0.3))),
        num_warmup=200,
        num_samples=400,
        num_chains=2,
        chain_method="vectorized",
        progress_bar=False,
    )
    key_mcmc, key_readout = jax.random.split(jax.random.key(seed))
    mcmc.run(key_mcmc, x, y)
    out = wbn.readout_posterior(
        key_readout, _fixed_noise_model(net, 0.3), mcmc.get_samples(), x, y, x_test=x_test
    )
    plugin = np.asarray(out["f_test_mean"]).reshape(2, 400, -1)
    result = sample(
        net,
        wb.RegressionData(x, y, 0.3),
        x_test=x_test,
        sampler="nuts",
        num_chains=2,
        num_warmup=200,
        num_samples=400,
        seed=seed,
        progress=False,
    )
    library = result.draws["f_test_mean"].reshape(2, 400, -1)
    return np.concatenate([_zscores(plugin, library), _zscores(plugin**2, library**2)])


def test_plugin_agrees_with_wide_bnn_sample_on_the_predictive():
    scores = _library_scores(0)
    assert np.all(scores < _quantile(scores.size)), scores


def _blackjax_scores(seed):
    import blackjax

    x, y, _ = _problem(n=12, noise_std=0.2)
    net = wb.mlp(hidden=())
    model = wbn.reparam(_fixed_noise_model(net, 0.2))
    key_init, key_run = jax.random.split(jax.random.key(seed))
    init, potential_fn, postprocess_fn, _ = initialize_model(
        key_init, model, model_args=(x, y), dynamic_args=False
    )
    logdensity = lambda position: -potential_fn(position)
    # The target is exactly N(0, I) here, so no adaptation is needed: unit mass, fixed step.
    flat, _ = jax.flatten_util.ravel_pytree(init.z)
    kernel = blackjax.nuts(logdensity, step_size=0.5, inverse_mass_matrix=jnp.ones(flat.size))

    def chain(key):
        def one(state, key):
            state, _ = kernel.step(key, state)
            return state, state.position

        positions = jax.lax.scan(one, kernel.init(init.z), jax.random.split(key, 550))[1]
        return jax.tree.map(lambda a: a[50:], positions)  # drop the transient from init.z

    positions = jax.jit(jax.vmap(chain))(jax.random.split(key_run, 4))
    constrained = jax.vmap(jax.vmap(postprocess_fn))(positions)
    assert constrained["net_readout"].shape == (4, 500, 4, 1)
    z = np.asarray(constrained["net_readout_white"])[..., 0]
    return np.concatenate(
        [_zscores(z, np.zeros(z.shape[-1])), _zscores(z**2, np.ones(z.shape[-1]))]
    )


def test_blackjax_through_initialize_model():
    scores = _blackjax_scores(0)
    assert np.all(scores < _quantile(scores.size)), scores


# -- chain methods ----------------------------------------------------------------------------


_PARALLEL_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import numpyro
    numpyro.set_host_device_count(2)
    import jax, jax.numpy as jnp
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS
    import wide_bnn as wb
    import wide_bnn.numpyro as wbn

    net = wb.mlp(hidden=(3,))
    x = jnp.linspace(-1.0, 1.0, 8)[:, None]
    y = jnp.sin(3 * x)

    def model(x, y=None):
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        f = wbn.bnn("net", net, x, y=y, noise_std=sigma)
        numpyro.sample("y", dist.Normal(f, sigma), obs=y)

    mcmc = MCMC(NUTS(wbn.reparam(model)), num_warmup=20, num_samples=20, num_chains=2,
                chain_method="parallel", progress_bar=False)
    mcmc.run(jax.random.key(0), x, y)
    print(jax.local_device_count(), mcmc.get_samples(group_by_chain=True)["sigma"].shape)
    """
)


def test_parallel_chains_in_a_subprocess():
    done = subprocess.run(
        [sys.executable, "-c", _PARALLEL_SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == "2 (2, 20)"


# -- dtypes and validation --------------------------------------------------------------------


def test_float32_data_stay_float32():
    with jax.enable_x64(False):
        x = jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32)[:, None]
        y = jnp.sin(x)
        net = wb.mlp(hidden=(4,))
        model = wbn.reparam(_fixed_noise_model(net, 0.3))
        params = _latent_values(model, (x, y))
        value = _log_joint(model, (x, y), params)

        def outputs(p):
            return handlers.trace(handlers.substitute(model, p)).get_trace(x, y)["f"]["value"]

        assert jax.jit(outputs)(params).dtype == jnp.float32
        assert value.dtype == jnp.float32 and np.isfinite(value)


def test_non_finite_features_reject_the_proposal():
    x, y, _ = _problem()
    net = wb.mlp(hidden=(4,))
    model = wbn.reparam(_fixed_noise_model(net, 0.3))
    params = _latent_values(model, (x, y))
    params["net_hidden_0_w"] = params["net_hidden_0_w"].at[0, 0].set(jnp.inf)

    def site_log_prob(p):
        tr = handlers.trace(handlers.substitute(model, p)).get_trace(x, y)
        white = tr["net_readout_white"]
        return white["fn"].log_prob(white["value"])

    # The whitened site rejects; the user's likelihood of non-finite outputs is NaN,
    # which NumPyro's samplers treat as a divergence (also without the plug-in).
    assert jax.jit(site_log_prob)(params) == -jnp.inf
    assert not np.isfinite(_log_joint(model, (x, y), params))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "net/0"}, "name"),
        ({"y": "Y", "noise_std": None}, "noise_std"),
        ({"y": "Y", "noise_std": -1.0}, "noise_std"),
        ({"y": "Ybad", "noise_std": 0.1}, "y must have shape"),
        ({"w_std": 1.0, "net": "custom"}, "w_std"),
        ({"out_b_std": 0.2, "net": "nobias"}, "out_b_std"),
        ({"route": "sideways"}, "route"),
        ({"net": "not a net"}, "net"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(kwargs, match):
    x, y, _ = _problem()
    nets = {
        "mlp": wb.mlp(hidden=(3,)),
        "custom": wb.network(lambda key, x: {"w": jnp.zeros(3)}, lambda h, x: x * h["w"][0]),
        "nobias": wb.mlp(hidden=(3,), out_b_std=0.0),
        "not a net": "not a net",
    }
    options = {"name": "net", "net": "mlp", **kwargs}
    options["net"] = nets[options["net"]]
    options["y"] = {"Y": y, "Ybad": y[:-1], None: None}[options.get("y")]
    with pytest.raises(ValueError, match=match):
        handlers.seed(wbn.bnn, 0)(x=x, **options)


def test_collapsed_and_readout_posterior_validation():
    x, _, _ = _problem()
    net = wb.mlp(hidden=(3,))
    with pytest.raises(ValueError, match="y is required"):
        handlers.seed(wbn.bnn_collapsed, 0)("net", net, x, None, noise_std=0.1)

    def prior_only(x):
        wbn.bnn("net", net, x)

    samples = {"net_hidden_0_w": jnp.zeros((2, 3, 3))}
    with pytest.raises(ValueError, match="no wide_bnn component"):
        wbn.readout_posterior(jax.random.key(0), prior_only, samples, x)
    with pytest.raises(ValueError, match="batch_ndims"):
        wbn.readout_posterior(jax.random.key(0), prior_only, samples, x, batch_ndims=-1)


def test_numpyro_is_not_imported_by_wide_bnn():
    code = "import sys, wide_bnn; print('numpyro' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


# -- long agreement runs ------------------------------------------------------------------------


@pytest.mark.slow
def test_latent_noise_plugin_agrees_with_standard_numpyro_model_with_hidden_layer():
    x, y, x_test = _problem(n=16, in_dim=2, noise_std=0.2, seed=1)
    net = wb.mlp(hidden=(16,), activation="tanh")
    model = _latent_noise_model(net)
    draws = []
    for candidate in (wbn.reparam(model), model):
        mcmc = MCMC(
            NUTS(candidate),
            num_warmup=1000,
            num_samples=2000,
            num_chains=4,
            chain_method="vectorized",
            progress_bar=False,
        )
        mcmc.run(jax.random.key(11), x, y)
        sigma = np.asarray(mcmc.get_samples(group_by_chain=True)["sigma"])[..., None]
        pred = Predictive(candidate, mcmc.get_samples())(jax.random.key(12), x_test)["f"]
        draws.append((sigma, np.asarray(pred).reshape(4, 2000, -1)))
    (sigma_a, f_a), (sigma_b, f_b) = draws
    scores = np.concatenate(
        [_zscores(sigma_a, sigma_b), _zscores(f_a, f_b), _zscores(f_a**2, f_b**2)]
    )
    assert np.all(scores < _quantile(scores.size)), scores


@pytest.mark.slow
def test_plugin_agrees_with_wide_bnn_sample_at_width_64():
    x, y, x_test = _problem(n=16, in_dim=3, noise_std=0.1, seed=3)
    net = wb.mlp(hidden=(64,))
    model = _fixed_noise_model(net, 0.1)
    mcmc = MCMC(
        NUTS(wbn.reparam(model)),
        num_warmup=500,
        num_samples=1000,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(13), x, y)
    pred = Predictive(wbn.reparam(model), mcmc.get_samples())(jax.random.key(14), x_test)["f"]
    plugin = np.asarray(pred).reshape(4, 1000, -1)
    result = sample(
        net,
        wb.RegressionData(x, y, 0.1),
        x_test=x_test,
        sampler="nuts",
        num_chains=4,
        num_warmup=500,
        num_samples=1000,
        seed=1,
        progress=False,
    )
    library = result.draws["f_test"].reshape(4, 1000, -1)
    scores = np.concatenate([_zscores(plugin, library), _zscores(plugin**2, library**2)])
    assert np.all(scores < _quantile(scores.size)), scores

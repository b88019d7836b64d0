# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A wide BNN inside a NumPyro model
#
# We write an ordinary NumPyro regression model: a latent noise scale, a wide Bayesian
# neural network as the mean function and a Gaussian likelihood. Then we let NumPyro's NUTS
# sample it twice: as written, and with `wide_bnn.numpyro.reparam`, which samples the
# network's readout in whitened coordinates. Both target the same posterior. At the end we
# integrate the readout out instead (the collapsed form).
#
# At full size (width 256) it runs in about 9 minutes on 2 CPU cores, most of it in NUTS on
# the model as written. `WIDE_BNN_EXAMPLE_SCALE` (default 1.0) shrinks the width and the
# number of draws, e.g. `WIDE_BNN_EXAMPLE_SCALE=0.1 python examples/numpyro_regression.py`
# for a quick run.

# %%
# A notebook: the environment is set before numpy/jax are imported.
# ruff: noqa: E402
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy/jax: slow Cholesky otherwise

import tempfile
import time

import jax

jax.config.update("jax_enable_x64", True)  # float64 for sampling (see Known limitations)

import arviz as az
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS, Predictive

import wide_bnn as wb
import wide_bnn.numpyro as wbn
from wide_bnn import datasets

SCALE = float(os.environ.get("WIDE_BNN_EXAMPLE_SCALE", "1.0"))


def scaled(value: int, minimum: int) -> int:
    """``value`` shrunk by SCALE, never below ``minimum``."""
    return max(minimum, round(value * SCALE))


WIDTH = scaled(256, 16)
NUM_CHAINS = 2 if SCALE >= 0.5 else 1
NUM_WARMUP = scaled(500, 30)
NUM_SAMPLES = scaled(500, 30)
print(f"scale {SCALE}: width {WIDTH}, {NUM_CHAINS} chains, {NUM_WARMUP} + {NUM_SAMPLES} steps")

# %% [markdown]
# ## Data and network
#
# The library's benchmark problem (64 training and 32 test points, 16 inputs, noise
# standard deviation 0.1, which the model below does not know) and a one-hidden-layer GELU
# network in NTK parameterisation.

# %%
ds = datasets.teacher()
x, y, x_test = (jnp.asarray(a) for a in (ds.x_train, ds.y_train, ds.x_test))
net = wb.mlp(hidden=(WIDTH,), activation="gelu")
print(x.shape, y.shape, x_test.shape)

# %% [markdown]
# ## The model
#
# `wbn.bnn("net", net, x, y=y, noise_std=sigma)` registers the network's parameters as
# sample sites with standard normal priors (`net_hidden_0_w`, `net_hidden_0_b`,
# `net_readout`) and returns the outputs at `x`, shape `(n, 1)`. Passing the observed `y`
# and the *current* noise scale lets the reparameterisation whiten the readout; at
# prediction time (`y=None`) the component is an ordinary network.


# %%
def model(x, y=None):
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    f = wbn.bnn("net", net, x, y=y, noise_std=sigma)
    numpyro.deterministic("f", f)
    numpyro.sample("y", dist.Normal(f, sigma), obs=y)


# %% [markdown]
# ## NUTS, with and without the plug-in
#
# `wbn.reparam(model)` is `numpyro.handlers.reparam(model, config=wbn.readout_config)`: the
# readout site becomes deterministic, `B = M + S Z`, and NUTS samples `Z` (site
# `net_readout_white`), which is exactly standard normal a posteriori.


# %%
def run(model_fn, seed):
    mcmc = MCMC(
        NUTS(model_fn),
        num_warmup=NUM_WARMUP,
        num_samples=NUM_SAMPLES,
        num_chains=NUM_CHAINS,
        chain_method="sequential",
        progress_bar=False,
    )
    start = time.perf_counter()
    mcmc.run(jax.random.key(seed), x, y, extra_fields=("num_steps",))
    seconds = time.perf_counter() - start
    return mcmc, seconds


runs = {"as written": run(model, 0), "plug-in": run(wbn.reparam(model), 0)}

# %% [markdown]
# ## The noise scale and the predictions
#
# Both runs sample the same posterior. `Predictive` evaluates the network at the test inputs
# for every posterior draw. The rows below give the posterior of `sigma`, the test error of
# the predictive mean, and the bulk ESS of `sigma` and of the test predictions (minimum over
# test points) per second of wall time (compilation included, so small runs favour neither).
# As written, NUTS mixes `sigma` so slowly (about ten effective draws in the whole run at
# full size) that its estimate of `sigma` is not yet reliable; the plug-in's is.

# %%
rows = {}
for name, (mcmc, seconds) in runs.items():
    samples = mcmc.get_samples()
    f_test = Predictive(mcmc.sampler.model, samples)(jax.random.key(1), x_test)["f"]
    f_test = np.asarray(f_test)[..., 0].reshape(NUM_CHAINS, NUM_SAMPLES, -1)
    sigma = np.asarray(mcmc.get_samples(group_by_chain=True)["sigma"])
    ess_f = az.ess(az.convert_to_dataset({"f": f_test}))["f"].values.min()
    grads = float(np.mean(mcmc.get_extra_fields()["num_steps"]))
    row = rows[name] = {
        "sigma": sigma.mean(),
        "sigma_mcse": float(az.mcse(sigma)),
        "rmse": float(np.sqrt(np.mean((f_test.mean(axis=(0, 1)) - ds.y_test[:, 0]) ** 2))),
        "ess_sigma_s": float(az.ess(sigma)) / seconds,
        "ess_f_s": ess_f / seconds,
    }
    print(
        f"{name:>10}: sigma {sigma.mean():.3f} +- {sigma.std():.3f}, test RMSE {row['rmse']:.3f}, "
        f"grads/draw {grads:.0f}, ESS/s sigma {row['ess_sigma_s']:.2f}, "
        f"ESS/s f_test (min) {row['ess_f_s']:.2f}"
    )
    assert np.all(np.isfinite(f_test))
    assert 0 < rows[name]["sigma"] < 1
if SCALE >= 1:
    # The point of the plug-in: NUTS mixes the noise scale far faster per second with it
    # (about 200 times at full size).
    assert rows["plug-in"]["ess_sigma_s"] > 10 * rows["as written"]["ess_sigma_s"]

# %% [markdown]
# ## ArviZ
#
# Site names contain no `/`, so the whole run goes to netCDF.

# %%
idata = az.from_numpyro(runs["plug-in"][0])
print(az.summary(idata, var_names=["sigma"]))
with tempfile.TemporaryDirectory() as directory:
    idata.to_netcdf(os.path.join(directory, "numpyro_regression.nc"))

# %% [markdown]
# ## Collapsed: integrate the readout out
#
# `wbn.bnn_collapsed` samples only the hidden layer and observes `y` through the marginal
# likelihood `N(y; 0, Psi Psi^T + sigma^2 I)` (so there is no separate likelihood line).
# The readout is drawn exactly afterwards by `wbn.readout_posterior`, which also returns the
# Rao-Blackwellised prediction `E[f(x_test) | hidden, sigma]`.


# %%
def collapsed_model(x, y):
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    wbn.bnn_collapsed("net", net, x, y, noise_std=sigma)


mcmc, seconds = run(collapsed_model, 0)
samples = mcmc.get_samples(group_by_chain=True)
out = wbn.readout_posterior(
    jax.random.key(2), collapsed_model, samples, x, y, x_test=x_test, batch_ndims=2
)
print({name: value.shape for name, value in out.items()})
sigma = np.asarray(samples["sigma"])
print(f" collapsed: sigma {sigma.mean():.3f} +- {sigma.std():.3f} ({seconds:.1f} s)")
# The collapsed and the plug-in runs sample the same posterior of sigma: their means agree
# within 4 Monte Carlo standard errors (the chains are long enough to trust them at full size).
plugin = rows["plug-in"]
difference = abs(sigma.mean() - plugin["sigma"])
tolerance = 4 * np.hypot(plugin["sigma_mcse"], float(az.mcse(sigma)))
print(f"sigma: |collapsed - plug-in| = {difference:.4f}, 4 MCSE = {tolerance:.4f}")
if SCALE >= 1:
    assert difference < tolerance
assert out["f_test"].shape == (NUM_CHAINS, NUM_SAMPLES, 32, 1)
assert np.all(np.isfinite(out["f_test_mean"])) and 0 < sigma.mean() < 1

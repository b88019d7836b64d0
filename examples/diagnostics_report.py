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
# # How good are my samples? Diagnostics and reports
#
# A posterior sample is only as useful as the evidence that it represents the posterior. This
# notebook walks through what `wide_bnn` records, which numbers to look at (and which ones
# flatter), what a too-short run looks like, the comparison with the infinite-width NNGP
# posterior, ArviZ interoperability, saving runs, and the HTML report.
#
# `WIDE_BNN_EXAMPLE_SCALE` (default 1.0) shrinks the width and the number of draws.

# %%
# A notebook: the environment is set before numpy/jax are imported, and a bare name at
# the end of a cell displays it.
# ruff: noqa: E402, B018
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax

jax.config.update("jax_enable_x64", True)

import dataclasses
import tempfile
import warnings
from pathlib import Path

import arviz as az
import numpy as np

import wide_bnn as wb
from wide_bnn import datasets
from wide_bnn.diagnostics import DiagnosticWarning, load_inference_data, save_inference_data
from wide_bnn.plots import plot_predictive_vs_nngp, plot_trace

SCALE = float(os.environ.get("WIDE_BNN_EXAMPLE_SCALE", "1.0"))


def scaled(value: int, minimum: int) -> int:
    """``value`` shrunk by SCALE, never below ``minimum``."""
    return max(minimum, round(value * SCALE))


WIDTH = scaled(1024, 32)
NUM_CHAINS = 4 if SCALE >= 0.5 else 2
NUM_WARMUP, NUM_SAMPLES = scaled(500, 30), scaled(1000, 40)
OUT = Path(os.environ.get("WIDE_BNN_EXAMPLE_OUT") or tempfile.mkdtemp(prefix="wide_bnn_diag_"))
OUT.mkdir(parents=True, exist_ok=True)
print(f"width {WIDTH}, {NUM_CHAINS} chains x {NUM_SAMPLES} draws; output in {OUT}")

# %% [markdown]
# ## A run
#
# The benchmark problem (64 training points), a one-hidden-layer GELU network, the repriorised
# collapsed chain with pCN.

# %%
ds = datasets.teacher()
data, x_test = ds.train_data(), ds.test_inputs()
net = wb.mlp(hidden=(WIDTH,))
result = wb.sample(
    net,
    data,
    x_test=x_test,
    sampler="pcn",
    num_chains=NUM_CHAINS,
    num_warmup=NUM_WARMUP,
    num_samples=NUM_SAMPLES,
    seed=0,
    progress=False,
)
for name, array in result.draws.items():
    print(f"draws[{name!r}]: {array.shape}")
for name, array in result.stats.items():
    print(f"stats[{name!r}]: {array.shape}")
assert set(result.draws) >= {"f_test", "f_test_mean", "projections"}
assert result.draws["projections"].shape[:2] == (NUM_CHAINS, NUM_SAMPLES)

# %% [markdown]
# In a notebook, a run displays itself as a summary (settings, timings, diagnostics):

# %%
result

# %% [markdown]
# ## `f_test` or `f_test_mean`?
#
# With the readout integrated out, every saved draw comes with a fresh, exact readout draw.
# `f_test` (a full posterior draw of the outputs) therefore contains a part that is
# independent from draw to draw, whatever the hidden layer does. `f_test_mean`
# (`E[f(x_test) | hidden]`) only moves when the hidden layer moves: it is the honest measure of
# mixing. The wider the network, the smaller the hidden layer's share of predictive variance,
# and the more flattering the ESS of `f_test` alone.

# %%
diagnosis = wb.diagnose(result, emit=False)
columns = ["ess_bulk_min", "ess_bulk_median", "ess_per_draw_min", "ess_per_s_min", "rhat_max"]
print(diagnosis.summary[columns].to_string(float_format=lambda v: f"{v:.3g}"))
share = diagnosis.info["hidden_variance_share"]
print(f"share of predictive variance that depends on the hidden layer: {share:.3f}")
assert 0 <= share <= 1
assert np.isfinite(diagnosis.summary.loc["f_test_mean", "rhat_max"])

# %% [markdown]
# The worst-mixing elements are the ones to look at; `plot_trace` picks them from the
# diagnosis and shows their traces and autocorrelations.

# %%
figure = plot_trace(result, "f_test_mean", diagnosis=diagnosis)
figure

# %% [markdown]
# ## What a run that is too short looks like
#
# Keep only the first few draws of each chain and diagnose again. `diagnose` warns when the
# smallest ESS is below 100 per chain (below that, ESS and R-hat are themselves unreliable, and
# the Monte Carlo error of a posterior mean exceeds 5% of the posterior standard deviation), or
# when R-hat exceeds 1.01.

# %%
keep = max(8, min(50, NUM_SAMPLES // 4))
short = dataclasses.replace(
    result,
    draws={k: v[:, :keep] for k, v in result.draws.items()},
    stats={k: v[:, :keep] for k, v in result.stats.items()},
)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", DiagnosticWarning)
    short_diagnosis = wb.diagnose(short)
for message in short_diagnosis.warnings:
    print("WARNING:", message)
# NUM_CHAINS * keep draws in total is fewer than the 100 per chain required: it must warn.
assert not short_diagnosis.ok
assert any(issubclass(w.category, DiagnosticWarning) for w in caught)

# %% [markdown]
# ## Comparison with the NNGP posterior
#
# `wb.compare_with_nngp` compares, test point by test point, the sampled predictive mean and
# variance with the posterior of the infinite-width limit, in units of Monte Carlo error, and
# summarises the gap as a mean KL divergence between Gaussian marginals. The noise floor is the
# distance that Monte Carlo error alone would produce.

# %%
comparison = wb.compare_with_nngp(result, net)
print(comparison.table.head().to_string(float_format=lambda v: f"{v:.3g}"))
print(comparison.summary())
assert np.isfinite(comparison.distance) and comparison.noise_floor >= 0
assert comparison.table.shape[0] == x_test.shape[0]

# %%
figure = plot_predictive_vs_nngp(comparison)
figure

# %% [markdown]
# ## ArviZ, saving and loading
#
# `to_inference_data` gives an `arviz.InferenceData` with named dimensions; it can be saved to
# netCDF and read back (e.g. to build a report later, or on another machine).

# %%
idata = result.to_inference_data()
print(az.summary(idata, var_names=["f_test_mean"]).head())
path = save_inference_data(idata, OUT / "run.nc")
loaded = load_inference_data(path)
np.testing.assert_array_equal(loaded.posterior["f_test"], idata.posterior["f_test"])
# A saved run diagnoses exactly like the live one.
reloaded = wb.diagnose(loaded, emit=False)
np.testing.assert_allclose(
    reloaded.summary.loc["f_test", "ess_bulk_min"], diagnosis.summary.loc["f_test", "ess_bulk_min"]
)

# %% [markdown]
# ## The report
#
# `wb.report` writes a self-contained `report.html` (images embedded) and a `report.md` with
# its figures next to it. From the command line: `wide-bnn report DIRECTORY` for saved runs.

# %%
html_path = wb.report(result, OUT, title="Diagnostics example")
markdown = (OUT / "report.md").read_text()
print(html_path)
print(markdown[:800])
assert html_path.is_file() and html_path.stat().st_size > 0
assert "f_test" in markdown

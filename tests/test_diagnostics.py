"""Tests of wide_bnn.diagnostics: InferenceData conversion, ESS/R-hat/MCSE, warnings, NNGP check.

Statistical tolerances were checked for false failures by rerunning each
statistical test with 50 other seeds offline (see the comments at each test).
"""

import json
import math
import warnings

import jax
import numpy as np
import pytest

from wide_bnn.data import RegressionData
from wide_bnn.diagnostics import (
    DiagnosticWarning,
    as_inference_data,
    compare_with_gaussian,
    compare_with_nngp,
    diagnose,
    load_inference_data,
    save_inference_data,
    to_inference_data,
)
from wide_bnn.results import SampleResult

SEED = 20240611


def ar1(rng, shape, rho):
    """Stationary Gaussian AR(1) series along axis 1 with unit marginal variance."""
    noise = rng.normal(size=shape)
    out = np.empty(shape)
    out[:, 0] = noise[:, 0]
    scale = math.sqrt(1 - rho**2)
    for t in range(1, shape[1]):
        out[:, t] = rho * out[:, t - 1] + scale * noise[:, t]
    return out


def make_result(
    rng,
    *,
    chains=4,
    draws=1000,
    points=6,
    outputs=1,
    rho=0.0,
    hidden_scale=0.25,
    frozen=False,
    dtype=np.float64,
):
    """A synthetic run: f_test = hidden part + independent readout part.

    ``hidden`` follows an AR(1) chain (or stays at its start when ``frozen``,
    the control whose hidden layers never move); the readout part is i.i.d.
    """
    shape = (chains, draws, points, outputs)
    hidden = ar1(rng, shape, rho)
    if frozen:
        hidden = np.repeat(hidden[:, :1], draws, axis=1)
    f_mean = hidden_scale * hidden
    f_test = f_mean + rng.normal(size=shape)
    x = rng.normal(size=(10, 3)).astype(dtype)
    data = RegressionData(x, rng.normal(size=(10, outputs)).astype(dtype), 0.1)
    return SampleResult(
        draws={
            "f_test": f_test.astype(dtype),
            "f_test_mean": f_mean.astype(dtype),
            "projections": ar1(rng, (chains, draws, 4), rho).astype(dtype),
            "params/hidden/0/w": rng.normal(size=(chains, draws, 3, 2)).astype(dtype),
        },
        stats={
            "lp": rng.normal(size=(chains, draws)),
            "acceptance_rate": rng.uniform(size=(chains, draws)),
            "diverging": np.zeros((chains, draws), dtype=bool),
            "num_grad_evals": np.full((chains, draws), 2, dtype=np.int64),
        },
        x_test=rng.normal(size=(points, 3)).astype(dtype),
        settings={
            "sampler": "pcn",
            "parameterisation": "repriorised",
            "collapsed": True,
            "seed": 3,
            "widths": [128],
            "sampler_options": {"scale": None},
            "num_warmup": 10,
            "num_samples": draws,
        },
        timings={"compile": 1.5, "warmup": 2.0, "sampling": 4.0},
        data=data,
    )


# ----------------------------------------------------------------------------
# Conversion


def test_inference_data_groups_dims_and_attrs():
    result = make_result(np.random.default_rng(SEED), draws=50)
    idata = to_inference_data(result)
    assert set(idata.groups()) == {"posterior", "sample_stats", "observed_data", "constant_data"}
    post = idata.posterior
    assert post["f_test"].dims == ("chain", "draw", "test_point", "output")
    assert post["f_test_mean"].dims == ("chain", "draw", "test_point", "output")
    assert post["projections"].dims == ("chain", "draw", "projection")
    # "/" is not allowed in netCDF names; the original path is kept in attrs.
    assert "params__hidden__0__w" in post
    assert json.loads(idata.attrs["param_names"]) == {"params__hidden__0__w": "params/hidden/0/w"}
    assert set(idata.sample_stats.data_vars) == {
        "lp",
        "acceptance_rate",
        "diverging",
        "num_grad_evals",
    }
    assert idata.observed_data["y"].dims == ("train_point", "output")
    assert idata.constant_data["x_train"].dims == ("train_point", "input_dim_0")
    assert idata.constant_data["x_test"].dims == ("test_point", "input_dim_0")
    np.testing.assert_array_equal(post["f_test"].values, result.draws["f_test"])
    attrs = idata.attrs
    assert attrs["sampler"] == "pcn" and attrs["parameterisation"] == "repriorised"
    assert attrs["collapsed"] == "true" and attrs["complete"] == "true"
    assert json.loads(attrs["widths"]) == [128]
    assert attrs["noise_std"] == pytest.approx(0.1)
    assert attrs["seed"] == 3
    assert attrs["jax_version"] == jax.__version__
    assert attrs["timing_sampling_s"] == 4.0
    assert attrs["num_grad_evals_total"] == 2 * 4 * 50
    assert json.loads(attrs["settings_json"])["sampler_options"] == {"scale": None}
    for value in attrs.values():  # netCDF-safe: strings and numbers only
        assert isinstance(value, str | int | float) and not isinstance(value, bool)
    assert dict(post.attrs).items() >= {"sampler": "pcn"}.items()


def test_netcdf_round_trip_is_unchanged(tmp_path):
    result = make_result(np.random.default_rng(SEED), draws=40)
    result.stats["diverging"][0, 3] = True
    idata = to_inference_data(result, nngp=(np.zeros((6, 1)), np.ones(6)))
    path = tmp_path / "run.nc"
    save_inference_data(idata, path)
    loaded = load_inference_data(path)
    assert set(loaded.groups()) == set(idata.groups())
    for group in idata.groups():
        before, after = idata[group], loaded[group]
        assert set(before.data_vars) == set(after.data_vars)
        for name in before.data_vars:
            assert before[name].dims == after[name].dims
            assert before[name].dtype == after[name].dtype
            np.testing.assert_array_equal(before[name].values, after[name].values)
    assert loaded.sample_stats["diverging"].dtype == bool
    assert dict(loaded.attrs) == dict(idata.attrs)
    assert loaded.posterior.attrs["sampler"] == "pcn"


def test_method_on_result_and_float32_dtype_kept():
    result = make_result(np.random.default_rng(SEED), draws=20, dtype=np.float32)
    idata = result.to_inference_data()
    assert idata.posterior["f_test"].dtype == np.float32
    assert idata.constant_data["x_test"].dtype == np.float32


def test_to_inference_data_rejects_bad_shapes():
    result = make_result(np.random.default_rng(SEED), draws=20)
    result.draws["f_test"] = result.draws["f_test"][:, :10]
    with pytest.raises(ValueError, match="f_test"):
        to_inference_data(result)
    with pytest.raises(ValueError, match="SampleResult"):
        as_inference_data(np.zeros(3))


def test_load_missing_file_raises(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_inference_data(tmp_path / "nothing.nc")


# ----------------------------------------------------------------------------
# ESS, R-hat, MCSE


def test_ess_per_draw_of_iid_draws_is_one():
    # One series of 4 x 1000 draws has an ESS/draw estimate with ~7% relative sd,
    # so the mean of 8 independent series (sd ~2.5%) is held to 15% and each
    # series to 30% (>4 sd). 50 other seeds offline: 50/50 passed; largest
    # deviation of the mean 6.3%, of one series 19%.
    rng = np.random.default_rng(SEED)
    result = make_result(rng, points=8, hidden_scale=0.0, rho=0.0)
    diagnosis = diagnose(result, var_names=["f_test"])
    iid = diagnosis.details
    assert iid["ess_per_draw"].mean() == pytest.approx(1.0, rel=0.15)
    np.testing.assert_allclose(iid["ess_per_draw"], 1.0, rtol=0.30)
    # Per gradient: 2 gradients per draw; per second: 4 s of sampling.
    np.testing.assert_allclose(iid["ess_per_grad"], iid["ess_bulk"] / (2 * 4000))
    np.testing.assert_allclose(iid["ess_per_s"], iid["ess_bulk"] / 4.0)
    assert diagnosis.ok


def test_ar1_ess_matches_analytic_value():
    # ESS of a stationary AR(1) with coefficient rho is N (1 - rho) / (1 + rho).
    # One series' estimate has ~7.5% relative sd; 50 other seeds offline: the
    # mean over 8 series deviated at most 5.4% (tolerance 10%), one series at
    # most 23% (tolerance 35%); 50/50 passed.
    rho, chains, draws = 0.6, 4, 2000
    rng = np.random.default_rng(SEED)
    result = make_result(rng, chains=chains, draws=draws, points=8, rho=rho)
    result.draws["f_test"] = result.draws["f_test_mean"] / 0.25  # pure AR(1)
    details = diagnose(result, var_names=["f_test"]).details
    expected = (1 - rho) / (1 + rho)
    assert details["ess_per_draw"].mean() == pytest.approx(expected, rel=0.10)
    np.testing.assert_allclose(details["ess_per_draw"], expected, rtol=0.35)
    # MCSE of the mean is sd / sqrt(ESS).
    np.testing.assert_allclose(
        details["mcse_mean"], details["sd"] / np.sqrt(details["ess_bulk"]), rtol=0.05
    )


def test_summary_min_and_median_over_points():
    diagnosis = diagnose(make_result(np.random.default_rng(SEED), draws=300))
    details, summary = diagnosis.details, diagnosis.summary
    part = details[details["variable"] == "f_test"]
    assert summary.loc["f_test", "ess_bulk_min"] == part["ess_bulk"].min()
    assert summary.loc["f_test", "ess_bulk_median"] == part["ess_bulk"].median()
    assert summary.loc["f_test", "rhat_max"] == part["rhat"].max()
    assert summary.loc["projections", "size"] == 4
    assert list(summary.index) == ["f_test", "f_test_mean", "projections"]


def test_rhat_warning_when_chains_disagree():
    result = make_result(np.random.default_rng(SEED), draws=500)
    result.draws["projections"][0] += 1.0  # one chain sits elsewhere
    with pytest.warns(DiagnosticWarning) as record:
        diagnosis = diagnose(result)
    assert any(str(w.message).startswith("projections: max R-hat") for w in record)
    assert not any(w.startswith("f_test") for w in diagnosis.warnings)
    assert diagnosis.summary.loc["projections", "rhat_max"] > 1.01


def test_low_ess_warning_follows_min_ess_rule():
    result = make_result(np.random.default_rng(SEED), draws=500, rho=0.97)
    with pytest.warns(DiagnosticWarning) as record:
        diagnosis = diagnose(result, var_names=["f_test_mean"])
    assert any(str(w.message).startswith("f_test_mean: min ESS") for w in record)
    assert diagnosis.info["min_ess"] == 400.0  # 100 per chain
    # The same run passes a lower ESS bar.
    relaxed = diagnose(result, var_names=["f_test_mean"], min_ess=5.0, emit=False)
    assert not any("min ESS" in w for w in relaxed.warnings)


def test_frozen_hidden_control_triggers_readout_dominance():
    # Hidden share of the predictive variance ~1% (width ~4096 in BENCHMARKS.md).
    rng = np.random.default_rng(SEED)
    result = make_result(rng, points=8, frozen=True, hidden_scale=0.1)
    with pytest.warns(DiagnosticWarning) as record:
        diagnosis = diagnose(result)
    messages = [str(w.message) for w in record]
    assert any(m.startswith("readout dominance") for m in messages)
    assert messages == diagnosis.warnings
    # The trap the warning guards against: the median ESS of f_test looks fine.
    assert diagnosis.summary.loc["f_test", "ess_per_draw_median"] > 0.5
    assert diagnosis.summary.loc["f_test_mean", "ess_bulk_min"] < 10
    assert diagnosis.info["hidden_variance_share"] < 0.05


def test_all_chains_frozen_at_one_hidden_state_triggers_readout_dominance():
    # Every chain stuck at the same hidden state: f_test_mean is constant, f_test
    # is pure i.i.d. readout noise with ESS/draw ~1. Only the network having
    # hidden layers (widths) tells this apart from an exact linear model.
    result = make_result(np.random.default_rng(SEED), points=8, hidden_scale=0.0)
    result.draws["f_test_mean"] = np.full_like(result.draws["f_test_mean"], 0.3)
    with pytest.warns(DiagnosticWarning, match="readout dominance"):
        diagnosis = diagnose(result)
    assert len(diagnosis.warnings) == 1


def test_well_mixed_synthetic_result_has_no_warnings():
    # pytest turns any emitted warning into an error, so this also checks that
    # diagnose emits nothing (no ArviZ RuntimeWarnings either).
    # 50 other seeds offline: no warning in 50/50 runs.
    result = make_result(np.random.default_rng(SEED), points=8, rho=0.3)
    diagnosis = diagnose(result)
    assert diagnosis.ok and diagnosis.warnings == []
    assert "No warnings" in str(diagnosis)
    assert "<table" in diagnosis._repr_html_()


def test_constant_f_test_mean_is_not_a_mixing_problem():
    # A network without hidden layers has a deterministic E[f | hidden].
    result = make_result(np.random.default_rng(SEED), points=4)
    result.settings["widths"] = []
    result.draws["f_test_mean"] = np.ones_like(result.draws["f_test_mean"])
    diagnosis = diagnose(result)
    assert diagnosis.ok
    assert diagnosis.summary.loc["f_test_mean", "num_constant"] == 4
    assert math.isnan(diagnosis.summary.loc["f_test_mean", "ess_bulk_min"])


def test_interrupted_run_and_divergences_are_reported():
    result = make_result(np.random.default_rng(SEED), draws=500)
    result.complete = False
    result.stats["diverging"][1, 5] = True
    diagnosis = diagnose(result, emit=False)
    assert any("interrupted" in w for w in diagnosis.warnings)
    assert any("1 divergent" in w for w in diagnosis.warnings)


def test_numerical_failures_are_reported_with_a_remedy():
    result = make_result(np.random.default_rng(SEED), draws=500)
    result.settings["thinning"] = 2
    failures = np.zeros((4, 500), dtype=np.int32)
    result.stats["numerical_failures"] = failures
    clean = diagnose(result, emit=False)
    assert clean.info["numerical_failures"] == 0
    assert not any("numerical failures" in w for w in clean.warnings)
    failures[0, 3], failures[2, 7] = 2, 1
    with pytest.warns(DiagnosticWarning, match="3 proposals in 4000 sampler steps"):
        diagnosis = diagnose(result)
    assert diagnosis.info["numerical_failures"] == 3 and diagnosis.info["num_steps"] == 4000
    (message,) = [w for w in diagnosis.warnings if w.startswith("numerical failures")]
    for words in ("could not be evaluated", "rejected", "exact", "float64", "noise_std"):
        assert words in message
    assert to_inference_data(result).sample_stats["numerical_failures"].dtype == np.int32


def test_diagnose_rejects_bad_arguments():
    result = make_result(np.random.default_rng(SEED), draws=20)
    with pytest.raises(ValueError, match="var_names"):
        diagnose(result, var_names=["nope"])
    with pytest.raises(ValueError, match="min_ess"):
        diagnose(result, min_ess=0)
    short = make_result(np.random.default_rng(SEED), draws=3)
    with pytest.raises(ValueError, match="at least 4 draws"):
        diagnose(short)


# ----------------------------------------------------------------------------
# Comparison with the NNGP posterior


def _nngp_problem(n_test=12):
    from wide_bnn.datasets import teacher
    from wide_bnn.nets import mlp
    from wide_bnn.nngp import nngp_predict

    dataset = teacher(n_train=24, n_test=n_test, in_dim=4, seed=1)
    data = dataset.train_data()
    x_test = dataset.test_inputs(data.dtype)
    net = mlp(hidden=(64,), out_dim=1)
    mean, cov = nngp_predict(net, data, x_test, full_cov=True)
    return net, data, x_test, np.asarray(mean), np.asarray(cov)


def _whitened_sum_of_squares(z, corr):
    """sum(w^2) for w = L^-1 z, L L^T = corr: chi-square(m) when z ~ N(0, corr)."""
    factor = np.linalg.cholesky(corr + 1e-10 * np.eye(len(z)))
    white = np.linalg.solve(factor, z)
    return float(white @ white)


def test_compare_with_nngp_on_draws_from_the_nngp_itself():
    # Exact i.i.d. draws from the NNGP posterior. Each z_mean is N(0, 1) but
    # correlated across test points like the posterior (correlation R); each
    # z_sd likewise with correlation R∘R (sample variances of jointly Gaussian
    # variables). Whitened, sum(z^2) is chi-square(m): held inside its
    # [1e-4, 1 - 1e-4] quantiles. MCSEs are estimates (ESS error ~7%), which
    # these wide bands absorb; a wrong MCSE scale (e.g. sd instead of
    # sd / sqrt(ESS), or a factor 2) falls outside. 100 seeds offline: 100/100.
    from scipy.stats import chi2

    m, chains, draws = 30, 4, 1000
    net, data, x_test, mean, cov = _nngp_problem(n_test=m)
    rng = np.random.default_rng(SEED)
    factor = np.linalg.cholesky(cov + 1e-12 * np.eye(m))
    f = mean[:, 0] + rng.normal(size=(chains, draws, m)) @ factor.T
    result = make_result(rng, chains=chains, draws=draws, points=m)
    result.draws["f_test"] = f[..., None]
    result.x_test = np.asarray(x_test)
    result.data = data
    comparison = compare_with_nngp(result, net, data, x_test)
    table = comparison.table
    sd = np.sqrt(np.diag(cov))
    corr = cov / np.outer(sd, sd)
    low, high = chi2.ppf(1e-4, m), chi2.ppf(1 - 1e-4, m)
    assert low < _whitened_sum_of_squares(table["z_mean"].to_numpy(), corr) < high
    assert low < _whitened_sum_of_squares(table["z_sd"].to_numpy(), corr**2) < high
    # Sample variance of N draws: relative sd sqrt(2 / N); 5 sd per point.
    np.testing.assert_allclose(table["var_ratio"], 1.0, atol=5 * math.sqrt(2 / (chains * draws)))
    # The distance is at the Monte Carlo noise floor (offline: at most 0.74 MCSE above).
    assert comparison.distance < comparison.noise_floor + 4 * comparison.distance_mcse
    np.testing.assert_allclose(table["nngp_var"], np.diag(cov), rtol=1e-10)


def test_compare_detects_a_shifted_posterior():
    *_, mean, cov = _nngp_problem()
    rng = np.random.default_rng(SEED)
    m = mean.shape[0]
    sd = np.sqrt(np.diag(cov))
    # Shift by half a posterior sd and inflate the variance by 50%.
    f = mean[:, 0] + 0.5 * sd + math.sqrt(1.5) * sd * rng.normal(size=(4, 1000, m))
    comparison = compare_with_gaussian(f[..., None], mean, np.diag(cov))
    assert comparison.table["z_mean"].min() > 5
    np.testing.assert_allclose(comparison.table["var_ratio"], 1.5, rtol=0.15)
    # KL(N(0.5, 1.5) || N(0, 1)) = 0.5 (1.5 + 0.25 - 1 - log 1.5) = 0.1723
    assert comparison.distance == pytest.approx(0.1723, abs=4 * comparison.distance_mcse)
    assert comparison.distance > 10 * comparison.noise_floor
    summary = comparison.summary()
    assert summary["kl_to_nngp"] == comparison.distance


def test_compare_uses_nngp_moments_stored_in_inference_data(tmp_path):
    rng = np.random.default_rng(SEED)
    result = make_result(rng, draws=200, points=5)
    moments = (np.zeros((5, 1)), np.full(5, 1.0625))
    path = tmp_path / "run.nc"
    save_inference_data(to_inference_data(result, nngp=moments), path)
    stored = compare_with_nngp(load_inference_data(path))
    direct = compare_with_gaussian(result.draws["f_test"], *moments)
    np.testing.assert_allclose(stored.table["kl"], direct.table["kl"])
    with pytest.raises(ValueError, match="net is required"):
        compare_with_nngp(result)


def test_compare_rejects_mismatched_shapes():
    draws = np.zeros((2, 10, 3, 1))
    with pytest.raises(ValueError, match="mean has shape"):
        compare_with_gaussian(draws, np.zeros((4, 1)), np.ones(3))
    with pytest.raises(ValueError, match="var has shape"):
        compare_with_gaussian(draws, np.zeros((3, 1)), np.ones(5))
    with pytest.raises(ValueError, match="draws must have shape"):
        compare_with_gaussian(np.zeros(5), np.zeros(1), np.ones(1))


def test_no_arviz_import_outside_diagnostics():
    import pathlib

    import wide_bnn

    root = pathlib.Path(wide_bnn.__file__).parent
    offenders = [
        p.name
        for p in root.glob("*.py")
        if p.name != "diagnostics.py" and "import arviz" in p.read_text()
    ]
    assert offenders == []


def test_no_warnings_leak_from_arviz_on_degenerate_input():
    result = make_result(np.random.default_rng(SEED), draws=100, frozen=True)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        diagnose(result, emit=False)
    assert record == []

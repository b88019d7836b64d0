"""ArviZ conversion, convergence diagnostics and the comparison with the NNGP posterior.

This is the only module that imports :mod:`arviz`, so that a port to ArviZ 1.x
(``xarray.DataTree``, nested ``from_dict``) touches one file.

Rules used by :func:`diagnose` (all thresholds are arguments):

- **R-hat** (rank-normalised split R-hat, Vehtari et al. 2021): warn when the
  largest value of a variable exceeds 1.01, or is undefined because chains are
  stuck at different constants.
- **ESS too low for the reported precision**: warn when the smallest bulk or
  tail ESS of a variable is below ``min_ess`` (default ``100 * num_chains``).
  Below about 100 per chain the ESS and R-hat estimates are themselves
  unreliable (Vehtari et al. 2021), and the Monte Carlo standard error of a
  posterior mean, ``sd / sqrt(ESS)``, exceeds 5% of the posterior sd with four
  chains, so the second significant digit of a reported mean is noise.
- **Readout dominance**: ``f_test = Psi(x*) B`` mixes an exact readout draw
  with the hidden parameters; at width 1024 only ~5% of the predictive
  variance depends on the hidden layers, so a chain whose hidden layers never
  move still shows a high *median* ESS on ``f_test``. Warn when the median
  bulk ESS of ``f_test`` passes ``min_ess`` while the smallest bulk ESS of
  ``f_test_mean = E[f(x*) | hidden]`` fails it, or ``f_test_mean`` is frozen
  within chains, or constant over all chains although the network has hidden
  layers (attribute ``widths`` non-empty; without hidden layers a constant
  ``f_test_mean`` is exact and not a problem).
- **Divergences** and **numerical failures**: warn when any transition diverged, and
  when any proposal could not be evaluated (sample statistic ``numerical_failures``:
  a non-finite log density from a failed factorisation or an overflow). Such proposals
  are rejected, never entered, and no jitter is added inside a chain, so the chain
  stays exact; but it mixes worse.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "Diagnosis",
    "DiagnosticWarning",
    "NNGPComparison",
    "autocorrelation",
    "compare_with_gaussian",
    "compare_with_nngp",
    "diagnose",
    "load_inference_data",
    "save_inference_data",
    "to_inference_data",
]

DEFAULT_VARIABLES = ("f_test", "f_test_mean", "projections", "f_train", "f_train_mean")
RHAT_THRESHOLD = 1.01

# Named dims of the recorded quantities; anything else gets ArviZ's default dims.
_DIMS = {
    "f_test": ["test_point", "output"],
    "f_test_mean": ["test_point", "output"],
    "f_train": ["train_point", "output"],
    "f_train_mean": ["train_point", "output"],
    "projections": ["projection"],
}


class DiagnosticWarning(UserWarning):
    """A convergence or mixing problem found by :func:`diagnose`."""


def _arviz():
    # Imported lazily: ``import arviz`` costs ~1 s and warns once a day
    # (FutureWarning); only callers of this module pay for it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
        import arviz

    return arviz


# ----------------------------------------------------------------------------
# Conversion


def to_inference_data(result, *, nngp: tuple[Any, Any] | None = None, extra_attrs=None):
    """Convert a :class:`~wide_bnn.results.SampleResult` to :class:`arviz.InferenceData`.

    Parameters
    ----------
    result : SampleResult
        The run to convert.
    nngp : tuple of array_like, optional
        ``(mean (test_point, output), var (test_point,))`` of the NNGP posterior
        at ``result.x_test``; stored in ``constant_data`` as ``nngp_mean`` and
        ``nngp_var`` so that :func:`compare_with_nngp` works on a saved file.
    extra_attrs : dict, optional
        More attributes (converted to netCDF-safe types like the others).

    Returns
    -------
    arviz.InferenceData
        Groups ``posterior`` (``f_test`` and ``f_test_mean`` with dims
        ``(chain, draw, test_point, output)``, ``projections``
        ``(chain, draw, projection)``, optional ``f_train*`` and parameters named
        ``params__<path>``), ``sample_stats`` (every entry of ``result.stats``:
        ArviZ names plus ``num_grad_evals`` and ``numerical_failures``),
        ``observed_data`` (``y``), ``constant_data``
        (``x_train``, ``x_test``, optionally ``nngp_mean`` / ``nngp_var``).
        The same attributes, of netCDF-safe types only (strings, numbers),
        are stored on the root and on the posterior group; see
        :func:`run_attributes`.

    Raises
    ------
    ValueError
        If ``result`` has no draws or arrays do not share ``(chain, draw)``.
    """
    az = _arviz()
    if not result.draws:
        raise ValueError("result has no draws to convert")
    chains, draws = result.num_chains, result.num_draws
    posterior, dims, param_names = {}, {}, {}
    for name, value in result.draws.items():
        array = np.asarray(value)
        if array.shape[:2] != (chains, draws):
            raise ValueError(
                f"result.draws[{name!r}] has shape {array.shape}; expected leading "
                f"(chain, draw) = ({chains}, {draws})"
            )
        safe = _safe_name(name)
        if safe != name:
            param_names[safe] = name
        posterior[safe] = array
        if name in _DIMS and array.ndim == 2 + len(_DIMS[name]):
            dims[safe] = _DIMS[name]
    stats = {name: np.asarray(value) for name, value in result.stats.items()}
    observed, constant = {}, {}
    data = result.data
    if data is not None:
        observed["y"] = np.asarray(data.y)
        dims["y"] = ["train_point", "output"]
        x_train = np.asarray(data.x)
        constant["x_train"] = x_train
        dims["x_train"] = ["train_point", *_input_dims(x_train)]
    if result.x_test is not None:
        x_test = np.asarray(result.x_test)
        constant["x_test"] = x_test
        dims["x_test"] = ["test_point", *_input_dims(x_test)]
    if nngp is not None:
        mean, var = (np.asarray(a) for a in nngp)
        constant["nngp_mean"] = np.reshape(mean, (mean.shape[0], -1))
        constant["nngp_var"] = np.reshape(var, (var.shape[0],))
        dims["nngp_mean"] = ["test_point", "output"]
        dims["nngp_var"] = ["test_point"]
    attrs = run_attributes(result)
    if param_names:
        attrs["param_names"] = json.dumps(param_names)
    for key, value in (extra_attrs or {}).items():
        attrs[key] = _netcdf_safe(value)
    with warnings.catch_warnings():
        # ArviZ guesses the layout is wrong when chains > draws; ours is explicit.
        warnings.filterwarnings("ignore", message="More chains", category=UserWarning)
        idata = _from_dict(az, posterior, stats, observed, constant, dims, attrs)
    idata.posterior.attrs.update(attrs)
    return idata


def _from_dict(az, posterior, stats, observed, constant, dims, attrs):
    return az.from_dict(
        posterior=posterior,
        sample_stats=stats or None,
        observed_data=observed or None,
        constant_data=constant or None,
        dims=dims,
        attrs=attrs,
    )


def run_attributes(result) -> dict[str, Any]:
    """NetCDF-safe attributes describing a run (strings, ints and floats only).

    Booleans become ``"true"``/``"false"``, ``None`` becomes ``"none"``, dicts and
    lists become JSON strings; timings are ``timing_<name>_s`` floats.
    """
    import jax

    settings = dict(result.settings)
    attrs: dict[str, Any] = {
        "inference_library": "wide_bnn",
        "wide_bnn_version": _library_version(),
        "jax_version": jax.__version__,
        "num_chains": result.num_chains,
        "num_draws": result.num_draws,
        "complete": _netcdf_safe(bool(result.complete)),
        "num_grad_evals_total": result.num_grad_evals,
    }
    for key in ("sampler", "parameterisation", "collapsed", "seed", "num_warmup", "num_samples"):
        if key in settings:
            attrs[key] = _netcdf_safe(settings[key])
    for key in ("thinning", "dtype", "noise_std"):
        if key in settings:
            attrs[key] = _netcdf_safe(settings[key])
    if "noise_std" not in attrs and result.data is not None:
        attrs["noise_std"] = float(result.data.noise_std)
    if "widths" in settings:
        attrs["widths"] = json.dumps(_jsonable(settings["widths"]))
    for key, seconds in result.timings.items():
        attrs[f"timing_{key}_s"] = float(seconds)
    attrs["settings_json"] = json.dumps(_jsonable(settings), sort_keys=True)
    return attrs


def _library_version() -> str:
    try:
        from wide_bnn import __version__

        return str(__version__)
    except ImportError:  # a stale editable install can expose a namespace package
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("wide-bnn")
        except PackageNotFoundError:
            return "unknown"


def save_inference_data(idata, path: str | os.PathLike) -> str:
    """Write ``idata`` to a netCDF file (h5netcdf engine) and return the path."""
    return idata.to_netcdf(os.fspath(path))


def load_inference_data(path: str | os.PathLike):
    """Read an :class:`arviz.InferenceData` written by :func:`save_inference_data`.

    The file is read into memory and closed (recorded outputs are small), so it
    can be overwritten afterwards, e.g. by a resumed run.

    Raises
    ------
    ValueError
        If ``path`` does not exist.
    """
    if not os.path.exists(path):
        raise ValueError(f"path {os.fspath(path)!r} does not exist")
    az = _arviz()
    with az.rc_context({"data.load": "eager"}):
        return az.from_netcdf(os.fspath(path))


def as_inference_data(source):
    """Return ``source`` as InferenceData (accepts SampleResult or InferenceData)."""
    if hasattr(source, "posterior"):
        return source
    if hasattr(source, "draws") and hasattr(source, "stats"):
        return to_inference_data(source)
    raise ValueError(f"expected a SampleResult or arviz.InferenceData, got {type(source).__name__}")


def _safe_name(name: str) -> str:
    # netCDF/HDF5 reject "/" in names (parameter paths like "params/hidden/0/w").
    return re.sub(r"[^0-9A-Za-z_]", "__", name)


def _input_dims(x: np.ndarray) -> list[str]:
    return [f"input_dim_{i}" for i in range(x.ndim - 1)]


def _jsonable(value):
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _netcdf_safe(value):
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, int | float | str):
        return value
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(_jsonable(value), sort_keys=True)
    return str(value)


# ----------------------------------------------------------------------------
# Diagnostics


@dataclasses.dataclass
class Diagnosis:
    """The result of :func:`diagnose`.

    Attributes
    ----------
    summary : pandas.DataFrame
        One row per variable: ``ess_bulk_min``/``_median``, ``ess_tail_min``/
        ``_median``, ``ess_per_draw_min``/``_median``, ``ess_per_grad_min``/
        ``_median``, ``ess_per_s_min``/``_median``, ``rhat_max``/``_median``,
        ``mcse_mean_max``, ``mcse_over_sd_max``, ``size`` and ``num_constant``
        (elements without any variation, left out of the statistics).
    details : pandas.DataFrame
        One row per scalar element (``variable``, ``element`` label such as
        ``"f_test[3,0]"``): ``mean``, ``sd``, ``mcse_mean``, ``mcse_sd``,
        ``ess_bulk``, ``ess_tail``, ``rhat``, ``ess_per_draw``,
        ``ess_per_grad``, ``ess_per_s``, ``constant``.
    warnings : list of str
        Every problem found (also issued as :class:`DiagnosticWarning`).
    info : dict
        Chains, draws, total gradient evaluations, sampling seconds, ``min_ess``,
        divergences, ``numerical_failures`` (proposals whose log density was not
        finite, summed over chains and draws), ``num_steps`` (sampler steps: chains x
        draws x thinning), mean acceptance rate and ``hidden_variance_share`` (median
        over test points of ``Var(f_test_mean) / Var(f_test)``).
    """

    summary: pd.DataFrame
    details: pd.DataFrame
    warnings: list[str]
    info: dict[str, Any]

    @property
    def ok(self) -> bool:
        """True when no warning was raised."""
        return not self.warnings

    def __str__(self) -> str:
        lines = [self.summary.to_string(float_format=lambda v: f"{v:.4g}")]
        lines += [f"WARNING: {w}" for w in self.warnings] or ["No warnings."]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        items = "".join(f"<li>{_html_escape(w)}</li>" for w in self.warnings)
        notes = f"<ul>{items}</ul>" if items else "<p>No warnings.</p>"
        return self.summary.to_html(float_format=lambda v: f"{v:.4g}") + notes


def diagnose(
    source,
    *,
    var_names: Sequence[str] | None = None,
    min_ess: float | None = None,
    rhat_threshold: float = RHAT_THRESHOLD,
    emit: bool = True,
) -> Diagnosis:
    """ESS, R-hat and MCSE of the recorded function-space outputs, with warnings.

    Parameters
    ----------
    source : SampleResult or arviz.InferenceData
        The run to diagnose.
    var_names : sequence of str, optional
        Posterior variables; by default those of ``f_test``, ``f_test_mean``,
        ``projections``, ``f_train``, ``f_train_mean`` present (never every
        weight: ESS on a million parameters takes minutes).
    min_ess : float, optional
        Smallest acceptable bulk and tail ESS; default ``100 * num_chains``
        (see the module docstring for why).
    rhat_threshold : float
        Largest acceptable R-hat (default 1.01).
    emit : bool
        Also issue each problem as a :class:`DiagnosticWarning`.

    Returns
    -------
    Diagnosis
        Summary per variable, details per element, warnings and run info.

    Raises
    ------
    ValueError
        For unknown variables, a non-positive ``min_ess`` or too few draws.
    """
    az = _arviz()
    idata = as_inference_data(source)
    posterior = idata.posterior
    if var_names is None:
        var_names = [name for name in DEFAULT_VARIABLES if name in posterior]
        if not var_names:
            var_names = list(posterior.data_vars)
    else:
        var_names = list(var_names)
        missing = [name for name in var_names if name not in posterior]
        if missing:
            raise ValueError(
                f"var_names contains {missing}, not in the posterior "
                f"(available: {sorted(posterior.data_vars)})"
            )
    chains, draws = posterior.sizes["chain"], posterior.sizes["draw"]
    if draws < 4:
        raise ValueError(f"need at least 4 draws per chain to diagnose, got {draws}")
    if min_ess is None:
        min_ess = 100.0 * chains
    if not min_ess > 0:
        raise ValueError(f"min_ess must be positive, got {min_ess}")
    info = _run_info(idata, chains, draws)
    info["min_ess"] = float(min_ess)

    subset = posterior[var_names]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        # Constant or frozen elements make ArviZ divide by zero; handled below.
        warnings.simplefilter("ignore", RuntimeWarning)
        stats = {
            "ess_bulk": az.ess(subset, method="bulk"),
            "ess_tail": az.ess(subset, method="tail"),
            "rhat": az.rhat(subset),
            "mcse_mean": az.mcse(subset, method="mean"),
            "mcse_sd": az.mcse(subset, method="sd"),
        }
    rows = []
    for name in var_names:
        values = np.asarray(subset[name])
        flat = values.reshape(chains * draws, -1)
        sd = flat.std(axis=0)
        # Exact test: a mean-based sd of identical values need not be exactly 0.
        constant = flat.max(axis=0) == flat.min(axis=0)
        columns = {key: np.asarray(ds[name]).reshape(-1) for key, ds in stats.items()}
        shape = values.shape[2:]
        labels = [f"{name}[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape)]
        for i, label in enumerate(labels):
            row = {"variable": name, "element": label, "mean": flat[:, i].mean(), "sd": sd[i]}
            row.update({key: float(col[i]) for key, col in columns.items()})
            if constant[i]:
                for key in ("ess_bulk", "ess_tail", "rhat", "mcse_sd"):
                    row[key] = math.nan
            row["constant"] = bool(constant[i])
            rows.append(row)
    details = pd.DataFrame(rows)
    total = chains * draws
    details["ess_per_draw"] = details["ess_bulk"] / total
    grads, seconds = info["num_grad_evals"], info["sampling_seconds"]
    details["ess_per_grad"] = details["ess_bulk"] / grads if grads > 0 else math.nan
    details["ess_per_s"] = details["ess_bulk"] / seconds if seconds > 0 else math.nan
    # Frozen chains (constant within, different between) give ESS ~ chains and
    # an astronomically large R-hat; treat a non-finite R-hat as infinite.
    frozen = ~details["constant"] & ~np.isfinite(details["rhat"])
    details.loc[frozen, "rhat"] = math.inf

    summary = _summarise(details, var_names)
    info["hidden_variance_share"] = _hidden_share(posterior)
    problems = _problems(summary, details, info, min_ess, rhat_threshold)
    if emit:
        for message in problems:
            warnings.warn(message, DiagnosticWarning, stacklevel=2)
    return Diagnosis(summary=summary, details=details, warnings=problems, info=info)


def run_attrs(idata) -> dict[str, Any]:
    """Attributes of a run: the posterior group's, overridden by the root's."""
    return {**idata.posterior.attrs, **dict(getattr(idata, "attrs", {}) or {})}


def run_widths(idata) -> list[int]:
    """Hidden widths stored in a run's ``widths`` attribute ([] when unknown)."""
    try:
        widths = json.loads(str(run_attrs(idata).get("widths", "[]")))
        return [int(w) for w in widths or []]
    except (ValueError, TypeError):
        return []


def _run_info(idata, chains: int, draws: int) -> dict[str, Any]:
    attrs = run_attrs(idata)
    info: dict[str, Any] = {"num_chains": int(chains), "num_draws": int(draws)}
    stats = getattr(idata, "sample_stats", None)
    grads = 0
    if stats is not None and "num_grad_evals" in stats:
        grads = int(np.sum(np.asarray(stats["num_grad_evals"])))
    info["num_grad_evals"] = grads
    info["sampling_seconds"] = float(attrs.get("timing_sampling_s", math.nan))
    info["divergences"] = (
        int(np.sum(np.asarray(stats["diverging"])))
        if stats is not None and "diverging" in stats
        else 0
    )
    info["numerical_failures"] = (
        int(np.sum(np.asarray(stats["numerical_failures"])))
        if stats is not None and "numerical_failures" in stats
        else 0
    )
    try:
        thinning = max(int(attrs.get("thinning", 1)), 1)
    except (TypeError, ValueError):
        thinning = 1
    info["num_steps"] = int(chains) * int(draws) * thinning
    info["acceptance_rate"] = (
        float(np.mean(np.asarray(stats["acceptance_rate"])))
        if stats is not None and "acceptance_rate" in stats
        else math.nan
    )
    info["complete"] = str(attrs.get("complete", "true")) == "true"
    info["widths"] = run_widths(idata)
    for key in ("sampler", "parameterisation"):
        if key in attrs:
            info[key] = str(attrs[key])
    return info


def _summarise(details: pd.DataFrame, var_names: Iterable[str]) -> pd.DataFrame:
    rows = {}
    for name in var_names:
        part = details[details["variable"] == name]
        live = part[~part["constant"]]
        row: dict[str, float] = {"size": len(part), "num_constant": int(part["constant"].sum())}
        for key in ("ess_bulk", "ess_tail", "ess_per_draw", "ess_per_grad", "ess_per_s"):
            column = live[key].to_numpy(dtype=float)
            row[f"{key}_min"] = _nan_stat(np.nanmin, column)
            row[f"{key}_median"] = _nan_stat(np.nanmedian, column)
        rhat = live["rhat"].to_numpy(dtype=float)
        row["rhat_max"] = float(np.max(rhat)) if rhat.size else math.nan
        row["rhat_median"] = float(np.median(rhat)) if rhat.size else math.nan
        row["mcse_mean_max"] = _nan_stat(np.nanmax, live["mcse_mean"].to_numpy(dtype=float))
        ratio = live["mcse_mean"].to_numpy(dtype=float) / live["sd"].to_numpy(dtype=float)
        row["mcse_over_sd_max"] = _nan_stat(np.nanmax, ratio)
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "variable"
    return table


def _nan_stat(fn, values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(fn(finite)) if finite.size else math.nan


def _hidden_share(posterior) -> float:
    if "f_test" not in posterior or "f_test_mean" not in posterior:
        return math.nan
    full = np.asarray(posterior["f_test"])
    mean = np.asarray(posterior["f_test_mean"])
    full = full.reshape(-1, *full.shape[2:]).var(axis=0)
    mean = mean.reshape(-1, *mean.shape[2:]).var(axis=0)
    ok = full > 0
    return float(np.median(mean[ok] / full[ok])) if np.any(ok) else math.nan


def _problems(summary, details, info, min_ess, rhat_threshold) -> list[str]:
    problems = []
    if not info["complete"]:
        problems.append("the run was interrupted: it holds fewer draws than requested")
    for name, row in summary.iterrows():
        live = row["size"] - row["num_constant"]
        if live == 0:
            continue
        if not row["rhat_max"] <= rhat_threshold:
            problems.append(
                f"{name}: max R-hat {row['rhat_max']:.4g} > {rhat_threshold} "
                "(chains disagree; run longer or check the sampler)"
            )
        low = min(row["ess_bulk_min"], row["ess_tail_min"])
        if not low >= min_ess:
            problems.append(
                f"{name}: min ESS {low:.1f} (bulk {row['ess_bulk_min']:.1f}, tail "
                f"{row['ess_tail_min']:.1f}) < {min_ess:g}: too few effective draws for "
                "reliable R-hat/ESS and a posterior mean to better than 5% of its sd"
            )
    if "f_test" in summary.index and "f_test_mean" in summary.index:
        full, mean = summary.loc["f_test"], summary.loc["f_test_mean"]
        mean_live = mean["size"] - mean["num_constant"]
        # E[f | hidden] is legitimately constant only without hidden layers; with
        # them, a constant value means every chain sat at one hidden state.
        all_frozen = mean_live == 0 and bool(info.get("widths"))
        if (mean_live > 0 or all_frozen) and full["ess_bulk_median"] >= min_ess:
            stuck = (
                all_frozen
                or not mean["ess_bulk_min"] >= min_ess
                or not np.isfinite(mean["rhat_max"])
            )
            if stuck:
                share = info["hidden_variance_share"]
                problems.append(
                    f"readout dominance: f_test looks well mixed (median ESS "
                    f"{full['ess_bulk_median']:.0f}) only because exact readout draws "
                    f"dominate its variance (hidden-dependent share {share:.1%}); "
                    f"f_test_mean = E[f | hidden] mixes poorly (min ESS "
                    f"{mean['ess_bulk_min']:.1f}, max R-hat {mean['rhat_max']:.3g}), "
                    "so the hidden layers are not explored"
                )
    if info["divergences"] > 0:
        problems.append(f"{info['divergences']} divergent transitions")
    if info["numerical_failures"] > 0:
        problems.append(
            f"numerical failures: {info['numerical_failures']} proposals in "
            f"{info['num_steps']} sampler steps could not be evaluated (non-finite log "
            "density: a failed factorisation or an overflow); they were rejected, so the "
            "chains remain exact, but mixing may suffer. Remedy: use float64, a larger "
            "noise_std, or smaller step sizes / prior scales"
        )
    return problems


def autocorrelation(x: np.ndarray) -> np.ndarray:
    """Autocorrelation along the last axis (ArviZ's FFT estimator), shape of ``x``."""
    return np.asarray(_arviz().autocorr(np.asarray(x, dtype=float), axis=-1))


# ----------------------------------------------------------------------------
# Comparison with a Gaussian (NNGP) posterior


@dataclasses.dataclass
class NNGPComparison:
    """Sampled posterior marginals vs the Gaussian (NNGP) posterior.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per ``(test_point, output)``: ``sampled_mean``, ``nngp_mean``,
        ``mean_mcse``, ``z_mean`` = (sampled - NNGP mean) / MCSE, ``sampled_var``,
        ``nngp_var``, ``var_ratio`` = sampled / NNGP variance, ``sd_mcse``,
        ``z_sd`` = (sampled - NNGP sd) / MCSE of the sd, and ``kl``, the KL
        divergence KL(sampled || NNGP) between Gaussian marginals.
    distance : float
        Mean of ``kl`` over test points and outputs.
    distance_mcse : float
        Monte Carlo standard error of ``distance`` (delta method to second
        order, treating points as perfectly correlated: an upper bound).
    noise_floor : float
        The expected ``distance`` from Monte Carlo error alone if the sampled
        marginals equalled the NNGP ones; distances near it are indistinguishable
        from zero.
    """

    table: pd.DataFrame
    distance: float
    distance_mcse: float
    noise_floor: float

    @property
    def z_mean_rms(self) -> float:
        """Root mean square of ``z_mean`` (about 1 when the means agree)."""
        return float(np.sqrt(np.mean(self.table["z_mean"] ** 2)))

    @property
    def var_ratio_median(self) -> float:
        """Median of sampled / NNGP variance."""
        return float(np.median(self.table["var_ratio"]))

    def summary(self) -> dict[str, float]:
        """Scalars: distance, its MCSE, noise floor, RMS z, median variance ratio."""
        return {
            "kl_to_nngp": self.distance,
            "kl_to_nngp_mcse": self.distance_mcse,
            "kl_noise_floor": self.noise_floor,
            "z_mean_rms": self.z_mean_rms,
            "var_ratio_median": self.var_ratio_median,
        }


def compare_with_nngp(
    source,
    net=None,
    data=None,
    x_test=None,
    *,
    nngp: tuple[Any, Any] | None = None,
    variable: str = "f_test",
) -> NNGPComparison:
    """Per test point, sampled predictive mean and variance vs :func:`nngp_predict`.

    Parameters
    ----------
    source : SampleResult or arviz.InferenceData
        The run; its ``variable`` must be ``(chain, draw, test_point, output)``.
    net : Network, optional
        The network; with ``data`` and ``x_test`` it defines the NNGP posterior.
    data : RegressionData, optional
        Training data; default ``source.data``.
    x_test : array_like, optional
        Test inputs ``(test_point, ...)``; default ``source.x_test``.
    nngp : tuple of array_like, optional
        Precomputed ``(mean (test_point, output), var (test_point,))``; by default
        computed with :func:`wide_bnn.nngp.nngp_predict`, or read from the
        ``constant_data`` of a saved InferenceData when ``net`` is not given.
    variable : str
        Posterior variable to compare (``"f_test"``: predictive draws of ``f``).

    Returns
    -------
    NNGPComparison
        Per-point z-scores in MCSE units, variance ratios and the average KL
        divergence between Gaussian marginals with its Monte Carlo uncertainty.
    """
    if nngp is None:
        nngp = _nngp_moments(source, net, data, x_test)
    idata = as_inference_data(source)
    if variable not in idata.posterior:
        raise ValueError(f"variable {variable!r} is not in the posterior")
    draws = np.asarray(idata.posterior[variable])
    return compare_with_gaussian(draws, *nngp)


def _nngp_moments(source, net, data, x_test):
    if net is None:
        constant = getattr(source, "constant_data", None)
        if constant is not None and "nngp_mean" in constant:
            return np.asarray(constant["nngp_mean"]), np.asarray(constant["nngp_var"])
        raise ValueError("net is required (the source holds no stored NNGP moments)")
    from wide_bnn.nngp import nngp_predict

    data = data if data is not None else getattr(source, "data", None)
    x_test = x_test if x_test is not None else getattr(source, "x_test", None)
    if data is None:
        raise ValueError("data is required: the source holds no training data")
    if x_test is None:
        raise ValueError("x_test is required: the source holds no test inputs")
    mean, var = nngp_predict(net, data, x_test)
    return np.asarray(mean), np.asarray(var)


def compare_with_gaussian(draws, mean, var) -> NNGPComparison:
    """Compare ``(chain, draw, point, output)`` draws with Gaussian marginals.

    Parameters
    ----------
    draws : array_like, shape (chain, draw, point, output)
        Posterior draws.
    mean : array_like, shape (point, output) or (point,)
        Reference means.
    var : array_like, shape (point,) or (point, output)
        Reference variances (shared over outputs when 1-D). Values below
        ``eps * max(var)`` are raised to it so a GP variance that rounded to
        zero or slightly below gives a finite, very large divergence.

    Returns
    -------
    NNGPComparison
    """
    az = _arviz()
    draws = np.asarray(draws, dtype=float)
    if draws.ndim == 3:
        draws = draws[..., None]
    if draws.ndim != 4:
        raise ValueError(f"draws must have shape (chain, draw, point, output), got {draws.shape}")
    chains, num, points, outputs = draws.shape
    mean = np.asarray(mean, dtype=float)
    if mean.size != points * outputs or mean.shape[0] != points:
        raise ValueError(f"mean has shape {mean.shape}; expected ({points}, {outputs})")
    mean = mean.reshape(points, outputs)
    var = np.asarray(var, dtype=float)
    if var.shape not in ((points,), (points, 1), (points, outputs)):
        raise ValueError(f"var has shape {var.shape}; expected ({points},)")
    var = var.reshape(points, -1)
    var = np.broadcast_to(var, (points, outputs))
    var = np.maximum(var, np.finfo(float).eps * max(float(np.max(var)), np.finfo(float).tiny))
    flat = draws.reshape(chains * num, points, outputs)
    s_mean, s_sd = flat.mean(axis=0), flat.std(axis=0, ddof=1)
    dataset = {"f": draws}
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)  # "More chains than draws"
        idata = az.from_dict(posterior=dataset)
        mcse_mean = np.asarray(az.mcse(idata, method="mean")["f"])
        mcse_sd = np.asarray(az.mcse(idata, method="sd")["f"])
    g_sd = np.sqrt(var)
    s_var = s_sd**2
    diff = s_mean - mean
    kl = 0.5 * (s_var / var + diff**2 / var - 1.0 + np.log(var / s_var))
    # Delta method to second order: first-order gradient terms plus the
    # quadratic terms, whose mean (bias) is the noise floor.
    g_mu, g_sd_term = diff / var, s_sd / var - 1.0 / s_sd
    h_mu, h_sd = 1.0 / var, 1.0 / var + 1.0 / s_var
    point_var = (
        (g_mu * mcse_mean) ** 2
        + (g_sd_term * mcse_sd) ** 2
        + 0.5 * (h_mu * mcse_mean**2) ** 2
        + 0.5 * (h_sd * mcse_sd**2) ** 2
    )
    floor = 0.5 * h_mu * mcse_mean**2 + 0.5 * h_sd * mcse_sd**2
    grid = np.indices((points, outputs)).reshape(2, -1)
    table = pd.DataFrame(
        {
            "test_point": grid[0],
            "output": grid[1],
            "sampled_mean": s_mean.ravel(),
            "nngp_mean": mean.ravel(),
            "mean_mcse": mcse_mean.ravel(),
            "z_mean": (diff / mcse_mean).ravel(),
            "sampled_var": s_var.ravel(),
            "nngp_var": var.ravel(),
            "var_ratio": (s_var / var).ravel(),
            "sd_mcse": mcse_sd.ravel(),
            "z_sd": ((s_sd - g_sd) / mcse_sd).ravel(),
            "kl": kl.ravel(),
        }
    )
    return NNGPComparison(
        table=table,
        distance=float(np.mean(kl)),
        distance_mcse=float(np.mean(np.sqrt(point_var))),
        noise_floor=float(np.mean(floor)),
    )


def _html_escape(text: str) -> str:
    import html

    return html.escape(text)

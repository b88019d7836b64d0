"""Width sweeps: both parameterisations over widths with the same data and budget.

:func:`width_sweep` returns a :class:`Sweep` whose ``table`` is tidy (one row
per width, parameterisation and sampler) and is what the benchmarks, the
report and the command line read.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wide_bnn.diagnostics import (
    Diagnosis,
    DiagnosticWarning,
    NNGPComparison,
    as_inference_data,
    compare_with_gaussian,
    diagnose,
    run_attrs,
    run_widths,
    save_inference_data,
    to_inference_data,
)

__all__ = [
    "Sweep",
    "input_slice",
    "nngp_moments",
    "read_table",
    "run_row",
    "summary_table",
    "width_sweep",
]

PARAMETERISATIONS = ("repriorised", "standard")
TABLE_VARIABLES = ("f_test", "f_test_mean", "projections")
_METRICS = ("ess_bulk", "ess_per_draw", "ess_per_grad", "ess_per_s")


@dataclasses.dataclass
class Sweep:
    """The outcome of :func:`width_sweep`.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per run, see :func:`run_row`, plus ``speedup_<variable>_ess_per_s_min``
        (ESS/s relative to the best standard-parameterisation run of the same width).
    results : dict of str to SampleResult
        The runs, by label ``"w<width>-<parameterisation>-<sampler>"``.
    diagnoses : dict of str to Diagnosis
    comparisons : dict of str to NNGPComparison
        Empty when the network has no NNGP kernel.
    nngp : tuple of numpy.ndarray or None
        NNGP ``(mean (test_point, output), var (test_point,))`` at ``x_test``.
    slice_info : dict or None
        ``start``, ``stop`` (test-point range of the 1-D input slice) and ``t0``, ``t1``.
    settings : dict
        The arguments of the sweep.
    """

    table: pd.DataFrame
    results: dict[str, Any]
    diagnoses: dict[str, Diagnosis]
    comparisons: dict[str, NNGPComparison]
    nngp: tuple[np.ndarray, np.ndarray] | None
    slice_info: dict[str, float] | None
    settings: dict[str, Any]

    def inference_data(self, label: str):
        """The InferenceData of one run, with NNGP moments and slice info attached."""
        return to_inference_data(
            self.results[label], nngp=self.nngp, extra_attrs=_slice_attrs(self.slice_info)
        )

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``sweep.csv``, ``sweep.json`` and ``runs/<label>.nc``; return the directory.

        ``runs/*.nc`` files of other runs (e.g. an earlier sweep saved to the same
        directory) are removed so that a report of the directory shows this sweep only.
        """
        directory = Path(directory)
        (directory / "runs").mkdir(parents=True, exist_ok=True)
        for stale in (directory / "runs").glob("*.nc"):
            if stale.stem not in self.results:
                stale.unlink()
        for label in self.results:
            save_inference_data(self.inference_data(label), directory / "runs" / f"{label}.nc")
        self.table.to_csv(directory / "sweep.csv", index=False)
        meta = {"settings": self.settings, "slice": self.slice_info}
        (directory / "sweep.json").write_text(json.dumps(meta, indent=2, default=str))
        return directory


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``sweep.csv`` written by :meth:`Sweep.save` (empty warnings stay ``""``)."""
    table = pd.read_csv(path)
    if "warnings" in table:
        # pandas reads an all-empty text column as float NaN; restore the strings.
        table["warnings"] = ["" if pd.isna(v) else str(v) for v in table["warnings"]]
    return table


def _slice_attrs(slice_info):
    if not slice_info:
        return {}
    return {f"slice_{key}": value for key, value in slice_info.items()}


def input_slice(x_a, x_b, num: int, *, margin: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Points on the line through two inputs: ``x(t) = x_a + t (x_b - x_a)``.

    Parameters
    ----------
    x_a, x_b : array_like, shape (...)
        Two inputs (e.g. training points) of the same shape.
    num : int
        Number of points.
    margin : float
        ``t`` runs from ``-margin`` to ``1 + margin``.

    Returns
    -------
    points : numpy.ndarray, shape (num, ...)
    t : numpy.ndarray, shape (num,)
    """
    x_a, x_b = np.asarray(x_a), np.asarray(x_b)
    if x_a.shape != x_b.shape:
        raise ValueError(f"x_a and x_b differ in shape: {x_a.shape} vs {x_b.shape}")
    if int(num) < 2:
        raise ValueError(f"num must be >= 2, got {num}")
    t = np.linspace(-margin, 1.0 + margin, int(num))
    points = x_a[None] + t.reshape(-1, *([1] * x_a.ndim)) * (x_b - x_a)[None]
    return points.astype(x_a.dtype), t


def run_row(source, diagnosis: Diagnosis, comparison: NNGPComparison | None = None) -> dict:
    """One tidy row describing a run: settings, cost, ESS per variable, distance to NNGP.

    Columns: ``width`` (the largest hidden width), ``parameterisation``,
    ``sampler``, ``num_chains``, ``num_draws``, ``compile_s``, ``warmup_s``,
    ``sampling_s``, ``grads_per_draw``, ``acceptance_rate``; per variable ``v``
    of ``f_test``, ``f_test_mean``, ``projections``: ``v_<metric>_min`` and
    ``v_<metric>_median`` for ``ess_bulk``, ``ess_per_draw``, ``ess_per_grad``,
    ``ess_per_s`` and ``v_rhat_max``; ``kl_to_nngp``, ``kl_to_nngp_mcse``,
    ``kl_noise_floor``, ``z_mean_rms``, ``var_ratio_median`` (NaN without a
    comparison); ``hidden_variance_share``; ``num_warnings`` and ``warnings``
    (joined by ``" | "``).
    """
    idata = as_inference_data(source)
    attrs = run_attrs(idata)
    widths = run_widths(idata)
    info = diagnosis.info
    total = info["num_chains"] * info["num_draws"]
    row: dict[str, Any] = {
        "width": int(max(widths)) if widths else -1,
        "parameterisation": str(attrs.get("parameterisation", "unknown")),
        "sampler": str(attrs.get("sampler", "unknown")),
        "num_chains": info["num_chains"],
        "num_draws": info["num_draws"],
        "compile_s": float(attrs.get("timing_compile_s", math.nan)),
        "warmup_s": float(attrs.get("timing_warmup_s", math.nan)),
        "sampling_s": info["sampling_seconds"],
        "grads_per_draw": info["num_grad_evals"] / total,
        "acceptance_rate": info["acceptance_rate"],
    }
    for variable in TABLE_VARIABLES:
        keys = [f"{m}_{stat}" for m in _METRICS for stat in ("min", "median")] + ["rhat_max"]
        if variable in diagnosis.summary.index:
            stats = diagnosis.summary.loc[variable]
            row.update({f"{variable}_{key}": float(stats[key]) for key in keys})
        else:
            row.update({f"{variable}_{key}": math.nan for key in keys})
    summary = comparison.summary() if comparison is not None else {}
    for key in ("kl_to_nngp", "kl_to_nngp_mcse", "kl_noise_floor", "z_mean_rms"):
        row[key] = summary.get(key, math.nan)
    row["var_ratio_median"] = summary.get("var_ratio_median", math.nan)
    row["hidden_variance_share"] = info["hidden_variance_share"]
    row["num_warnings"] = len(diagnosis.warnings)
    row["warnings"] = " | ".join(diagnosis.warnings)
    return row


def summary_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows of :func:`run_row` as a table sorted by width, with speed-up columns.

    ``speedup_<variable>_ess_per_s_min`` divides each row's ESS/s (min over
    points) by the best ``standard`` run of the same width (NaN without one).
    """
    table = pd.DataFrame(list(rows))
    if table.empty:
        return table
    table = table.sort_values(["width", "parameterisation", "sampler"], ignore_index=True)
    for variable in ("f_test", "f_test_mean"):
        column = f"{variable}_ess_per_s_min"
        reference = table[table["parameterisation"] == "standard"].groupby("width")[column].max()
        base = table["width"].map(reference).astype(float)
        table[f"speedup_{column}"] = table[column] / base
    return table


def width_sweep(
    widths: Sequence[int],
    data=None,
    *,
    x_test=None,
    network: Callable[[int], Any] | None = None,
    depth: int = 1,
    activation: str = "gelu",
    parameterisations: Sequence[str] = PARAMETERISATIONS,
    samplers: str | Mapping[str, str | Sequence[str] | None] | None = None,
    sampler_options: Mapping[str, Mapping[str, Any]] | None = None,
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 1000,
    thinning: int = 1,
    seed: int = 0,
    slice_points: int = 0,
    compare_nngp: bool = True,
    progress: bool = True,
    out_dir: str | os.PathLike | None = None,
    dtype=None,
    log: Callable[[str], None] | None = None,
) -> Sweep:
    """Run every parameterisation (and sampler) at every width, same data, same budget.

    Parameters
    ----------
    widths : sequence of int
        Hidden widths (every hidden layer gets the same width).
    data : RegressionData, Dataset or str
        Training data; a :class:`wide_bnn.datasets.Dataset` (or its name for
        :func:`wide_bnn.datasets.load`) also supplies ``x_test``.
    x_test : array_like, optional
        Test inputs ``(test_point, ...)``; required with a ``RegressionData``.
    network : callable, optional
        ``width -> Network``. Default: :func:`wide_bnn.mlp` with ``depth``
        hidden layers of that width, ``activation`` and the library's default
        scales, ``out_dim`` from the data.
    depth, activation
        Used by the default network only.
    parameterisations : sequence of str
        Any of ``"repriorised"``, ``"standard"``.
    samplers : str or mapping, optional
        Sampler name for every parameterisation, or a mapping from
        parameterisation to one name or a list of names; ``None`` uses
        :func:`wide_bnn.sample`'s default for that parameterisation.
    sampler_options : mapping, optional
        Extra keyword arguments per sampler name (``"default"`` for runs whose
        sampler is ``None``).
    num_chains, num_warmup, num_samples, thinning, seed
        The budget, identical for every run.
    slice_points : int
        If positive, append this many test points on the line through the first
        two training inputs (a 1-D slice for :func:`plot_predictive_vs_nngp`).
    compare_nngp : bool
        Compare each run with :func:`wide_bnn.nngp.nngp_predict` (computed once;
        the NNGP does not depend on width). Skipped for networks without an NNGP.
    progress : bool
        Progress bars of :func:`wide_bnn.sample`.
    out_dir : path, optional
        Save the sweep there (see :meth:`Sweep.save`).
    dtype : dtype, optional
        Data dtype when ``data`` is a Dataset (default: JAX's default float).
    log : callable, optional
        Receives one line per run (the CLI prints them).

    Returns
    -------
    Sweep
        The tidy table, runs, diagnoses and NNGP comparisons. Runs with
        diagnostic problems are summarised in one :class:`DiagnosticWarning`.
    """
    from wide_bnn.sampling import sample

    widths = _check_widths(widths)
    for name in parameterisations:
        if name not in PARAMETERISATIONS:
            raise ValueError(
                f"parameterisations contains {name!r}; expected one of {PARAMETERISATIONS}"
            )
    if not parameterisations:
        raise ValueError("parameterisations is empty")
    if int(slice_points) < 0:
        raise ValueError(f"slice_points must be >= 0, got {slice_points}")
    train, x_test = _resolve_data(data, x_test, dtype)
    slice_info: dict[str, float] | None = None
    if slice_points:
        points, t = input_slice(np.asarray(train.x[0]), np.asarray(train.x[1]), slice_points)
        start = int(x_test.shape[0])
        x_test = np.concatenate([np.asarray(x_test), points.astype(np.asarray(x_test).dtype)])
        slice_info = {
            "start": start,
            "stop": start + int(slice_points),
            "t0": float(t[0]),
            "t1": float(t[-1]),
        }
    x_test = _as_jax(x_test, train.dtype)
    make_net = network or _default_network(train.out_dim, depth, activation)
    plan = [
        (width, param, sampler)
        for width in widths
        for param in parameterisations
        for sampler in _samplers_for(samplers, param)
    ]
    nngp = nngp_moments(make_net(widths[0]), train, x_test) if compare_nngp else None
    results, diagnoses, comparisons, rows = {}, {}, {}, []
    for step, (width, param, sampler) in enumerate(plan, start=1):
        options = dict((sampler_options or {}).get(sampler or "default", {}))
        result = sample(
            make_net(width),
            train,
            x_test=x_test,
            sampler=sampler,
            parameterisation=param,
            num_chains=num_chains,
            num_warmup=num_warmup,
            num_samples=num_samples,
            thinning=thinning,
            seed=seed,
            progress=progress,
            **options,
        )
        sampler_name = str(result.settings.get("sampler", sampler))
        label = f"w{width}-{param}-{sampler_name}"
        idata = to_inference_data(result, nngp=nngp, extra_attrs=_slice_attrs(slice_info))
        diagnosis = diagnose(idata, emit=False)
        comparison = None
        if nngp is not None:
            comparison = compare_with_gaussian(np.asarray(idata.posterior["f_test"]), *nngp)
            comparisons[label] = comparison
        results[label], diagnoses[label] = result, diagnosis
        rows.append(run_row(idata, diagnosis, comparison))
        if log is not None:
            row = rows[-1]
            log(
                f"[{step}/{len(plan)}] {label}: ESS/s f_test min "
                f"{row['f_test_ess_per_s_min']:.3g}, "
                f"f_test_mean min {row['f_test_mean_ess_per_s_min']:.3g}; "
                f"sampling {row['sampling_s']:.1f} s; warnings {row['num_warnings']}"
            )
    settings = {
        "widths": list(widths),
        "parameterisations": list(parameterisations),
        "samplers": samplers if not isinstance(samplers, Mapping) else dict(samplers),
        "num_chains": num_chains,
        "num_warmup": num_warmup,
        "num_samples": num_samples,
        "thinning": thinning,
        "seed": seed,
        "n_train": int(train.num_points),
        "n_test": int(x_test.shape[0]),
        "noise_std": float(train.noise_std),
        "dataset": getattr(data, "name", data if isinstance(data, str) else "custom"),
    }
    sweep = Sweep(summary_table(rows), results, diagnoses, comparisons, nngp, slice_info, settings)
    flagged = [label for label, d in diagnoses.items() if d.warnings]
    if flagged:
        warnings.warn(
            f"{len(flagged)} of {len(plan)} runs have diagnostic warnings ({', '.join(flagged)}); "
            "see sweep.table['warnings']",
            DiagnosticWarning,
            stacklevel=2,
        )
    if out_dir is not None:
        sweep.save(out_dir)
    return sweep


def _check_widths(widths) -> list[int]:
    try:
        values = [int(w) for w in widths]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"widths must be a sequence of positive ints, got {widths!r}") from exc
    if (
        not values
        or any(w < 1 for w in values)
        or any(float(w) != float(v) for w, v in zip(values, widths, strict=True))
    ):
        raise ValueError(f"widths must be a non-empty sequence of positive ints, got {widths!r}")
    return values


def _samplers_for(samplers, parameterisation) -> list[str | None]:
    if samplers is None or isinstance(samplers, str):
        return [samplers]
    choice = samplers.get(parameterisation)
    if choice is None or isinstance(choice, str):
        return [choice]
    choice = list(choice)
    if not choice:
        raise ValueError(f"samplers[{parameterisation!r}] is empty")
    return choice


def _resolve_data(data, x_test, dtype):
    from wide_bnn.data import RegressionData

    if data is None:
        raise ValueError("data is required (a RegressionData, a Dataset or a data set name)")
    if isinstance(data, str):
        from wide_bnn.datasets import load

        data = load(data)
    if isinstance(data, RegressionData):
        if x_test is None:
            raise ValueError("x_test is required when data is a RegressionData")
        return data, x_test
    if hasattr(data, "train_data") and hasattr(data, "test_inputs"):
        train = data.train_data(dtype)
        return train, data.test_inputs(train.dtype) if x_test is None else x_test
    raise ValueError(
        f"data must be a RegressionData, a Dataset or a data set name, got {type(data).__name__}"
    )


def _as_jax(x, dtype):
    import jax.numpy as jnp

    x = jnp.asarray(x)
    if x.dtype != dtype:
        raise ValueError(f"x_test has dtype {x.dtype} but the data has dtype {dtype}")
    return x


def _default_network(out_dim: int, depth: int, activation: str):
    from wide_bnn.nets import mlp

    if int(depth) < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")

    def make(width: int):
        return mlp(hidden=(width,) * int(depth), out_dim=out_dim, activation=activation)

    return make


def nngp_moments(net, train, x_test) -> tuple[np.ndarray, np.ndarray] | None:
    """NNGP posterior ``(mean (m, k), var (m,))`` at ``x_test``, or None without an NNGP kernel."""
    if getattr(net, "spec", None) is None or np.ndim(x_test) != 2:
        return None  # no NNGP kernel for custom feature maps / images
    from wide_bnn.nngp import nngp_predict

    mean, var = nngp_predict(net, train, x_test)
    return np.asarray(mean), np.asarray(var)

"""Diagnostic plots: traces and autocorrelation, ESS and NNGP distance vs width, predictive slices.

Every function returns a :class:`matplotlib.figure.Figure` built without
``pyplot`` (Agg canvas), so nothing depends on or changes the global backend
and figures are freed with their last reference. Traces are drawn here rather
than with ArviZ's ``plot_trace`` so that :mod:`wide_bnn.diagnostics` stays the
only module importing ArviZ; the autocorrelation is ArviZ's estimator.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from wide_bnn.diagnostics import (
    Diagnosis,
    NNGPComparison,
    as_inference_data,
    autocorrelation,
)

__all__ = [
    "figure_png",
    "plot_distance_vs_width",
    "plot_ess_vs_width",
    "plot_predictive_vs_nngp",
    "plot_trace",
]

_STYLES = {"repriorised": "-", "standard": "--"}


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure: Figure, *, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def plot_trace(
    source,
    var_name: str = "f_test_mean",
    *,
    elements: Sequence[tuple[int, ...]] | None = None,
    diagnosis: Diagnosis | None = None,
    max_elements: int = 3,
    max_lag: int = 100,
    title: str | None = None,
) -> Figure:
    """Trace (all chains) and autocorrelation of chosen scalar elements of a variable.

    Parameters
    ----------
    source : SampleResult or arviz.InferenceData
        The run.
    var_name : str
        Posterior variable, e.g. ``"f_test_mean"``, ``"f_test"``, ``"projections"``.
    elements : sequence of tuple of int, optional
        Indices into the non-``(chain, draw)`` axes. By default the elements with
        the smallest bulk ESS in ``diagnosis`` (the ones worth looking at), else
        the first ``max_elements``.
    diagnosis : Diagnosis, optional
        From :func:`wide_bnn.diagnostics.diagnose`; picks the worst elements.
    max_elements : int
        How many elements to draw by default.
    max_lag : int
        Largest autocorrelation lag shown.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        One row per element: trace on the left, autocorrelation on the right.
    """
    idata = as_inference_data(source)
    if var_name not in idata.posterior:
        raise ValueError(f"var_name {var_name!r} is not in the posterior")
    values = np.asarray(idata.posterior[var_name])
    shape = values.shape[2:]
    if max_elements < 1:
        raise ValueError(f"max_elements must be >= 1, got {max_elements}")
    if elements is None:
        elements = _worst_elements(diagnosis, var_name, shape, max_elements)
    elements = [tuple(int(i) for i in np.atleast_1d(e)) for e in elements]
    for element in elements:
        if len(element) != len(shape) or any(
            not 0 <= i < n for i, n in zip(element, shape, strict=True)
        ):
            raise ValueError(f"element {element} is not a valid index for shape {shape}")
    figure = _figure(10, 2.2 * len(elements) + 0.6)
    axes = figure.subplots(len(elements), 2, squeeze=False)
    draws = values.shape[1]
    lags = min(max_lag, draws - 1)
    for row, element in zip(axes, elements, strict=True):
        flat_index = int(np.ravel_multi_index(element, shape)) if shape else 0
        series = values.reshape(*values.shape[:2], -1)[:, :, flat_index]  # (chain, draw)
        label = f"{var_name}[{','.join(map(str, element))}]"
        for chain, trace in enumerate(series):
            row[0].plot(trace, lw=0.6, alpha=0.8, label=f"chain {chain}")
        row[0].set_ylabel(label)
        row[0].set_xlabel("draw")
        rho = autocorrelation(series)[:, : lags + 1]
        # A constant chain has no autocorrelation; leave it blank, not a fake line.
        rho[~(series.std(axis=1) > 0)] = np.nan
        for chain_rho in rho:
            row[1].plot(np.arange(lags + 1), chain_rho, lw=0.8, alpha=0.8)
        row[1].axhline(0.0, color="black", lw=0.5)
        row[1].set_ylim(-0.3, 1.05)
        row[1].set_xlabel("lag")
        row[1].set_ylabel("autocorrelation")
    axes[0, 0].legend(fontsize="x-small", ncol=min(4, values.shape[0]), loc="upper right")
    if title:
        figure.suptitle(title)
    return figure


def _worst_elements(diagnosis, var_name, shape, count):
    if diagnosis is not None:
        part = diagnosis.details[diagnosis.details["variable"] == var_name]
        part = part.assign(_order=np.arange(len(part)))
        part = part[~part["constant"]].sort_values("ess_bulk", na_position="first")
        if len(part):
            flat = part["_order"].to_numpy()[:count]
            return [np.unravel_index(int(i), shape) for i in flat]
    total = int(np.prod(shape)) if shape else 1
    return [np.unravel_index(i, shape) for i in range(min(count, total))]


def _width_axis(ax, widths) -> None:
    ticks = sorted({int(w) for w in widths})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(w) for w in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("width")


def _groups(table: pd.DataFrame):
    keys = [k for k in ("parameterisation", "sampler") if k in table.columns]
    if not keys:
        yield "run", table.sort_values("width")
        return
    for key, part in table.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        yield " / ".join(str(k) for k in key), part.sort_values("width")


def _check_table(table: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in ("width", *columns) if c not in table.columns]
    if missing:
        raise ValueError(f"table is missing columns {missing}")


def plot_ess_vs_width(
    table: pd.DataFrame,
    *,
    metrics: Sequence[str] = ("ess_per_draw", "ess_per_s"),
    variables: Sequence[str] = ("f_test", "f_test_mean"),
    stat: str = "min",
) -> Figure:
    """ESS per draw and per second against width, one line per parameterisation and sampler.

    Parameters
    ----------
    table : pandas.DataFrame
        A :func:`wide_bnn.sweep.width_sweep` table (columns ``width``,
        ``parameterisation``, ``sampler`` and ``<variable>_<metric>_<stat>``).
    metrics : sequence of str
        One panel each: ``ess_per_draw``, ``ess_per_s``, ``ess_per_grad``, ``ess_bulk``.
    variables : sequence of str
        Posterior variables (solid/dashed markers distinguish them).
    stat : str
        ``"min"`` (over test points) or ``"median"``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    columns = [f"{v}_{m}_{stat}" for m in metrics for v in variables]
    _check_table(table, columns)
    figure = _figure(5 * len(metrics), 3.6)
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    markers = ["o", "s", "^", "v", "D"]
    for ax, metric in zip(axes, metrics, strict=True):
        for index, (name, part) in enumerate(_groups(table)):
            color = f"C{index}"
            style = _STYLES.get(name.split(" / ")[0], "-")
            for marker, variable in zip(markers, variables, strict=False):
                y = part[f"{variable}_{metric}_{stat}"].to_numpy(dtype=float)
                ax.plot(
                    part["width"],
                    np.where(y > 0, y, np.nan),
                    style,
                    marker=marker,
                    color=color,
                    label=f"{name}: {variable}",
                )
        _width_axis(ax, table["width"])
        ax.set_yscale("log")
        ax.set_ylabel(f"{metric.replace('_', ' ')} ({stat} over points)")
        ax.grid(True, which="both", alpha=0.3)
    axes[-1].legend(fontsize="x-small")
    return figure


def plot_distance_vs_width(table: pd.DataFrame) -> Figure:
    """Average KL divergence to the NNGP marginals against width, with MC error bars.

    The dotted line of the same colour is the noise floor: the distance Monte
    Carlo error alone would produce if the sampled marginals were the NNGP ones.
    """
    _check_table(table, ["kl_to_nngp", "kl_to_nngp_mcse", "kl_noise_floor"])
    figure = _figure(5.5, 3.8)
    ax = figure.subplots()
    for index, (name, part) in enumerate(_groups(table)):
        color = f"C{index}"
        ax.errorbar(
            part["width"],
            part["kl_to_nngp"],
            yerr=part["kl_to_nngp_mcse"],
            fmt=_STYLES.get(name.split(" / ")[0], "-") + "o",
            color=color,
            capsize=3,
            label=name,
        )
        ax.plot(part["width"], part["kl_noise_floor"], ":", color=color, lw=1)
    _width_axis(ax, table["width"])
    if (table["kl_to_nngp"] > 0).all():
        ax.set_yscale("log")
    ax.set_ylabel("mean KL(sampled || NNGP) per marginal")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return figure


def plot_predictive_vs_nngp(
    comparisons: NNGPComparison | dict[str, NNGPComparison],
    *,
    points: Sequence[int] | slice | None = None,
    t: np.ndarray | None = None,
    output: int = 0,
    xlabel: str | None = None,
) -> Figure:
    """Sampled predictive vs NNGP predictive: means and ±2 sd bands along a 1-D input slice.

    Parameters
    ----------
    comparisons : NNGPComparison or dict of str to NNGPComparison
        One panel per comparison (e.g. per parameterisation).
    points : sequence of int or slice, optional
        Test points forming the slice, in order; default all test points,
        ordered by NNGP mean (no spatial meaning then).
    t : numpy.ndarray, optional
        Slice coordinate of each point (same length as ``points``).
    output : int
        Output column.
    xlabel : str, optional
        Axis label.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if isinstance(comparisons, NNGPComparison):
        comparisons = {"": comparisons}
    if not comparisons:
        raise ValueError("comparisons is empty")
    figure = _figure(5.5 * len(comparisons), 3.8)
    axes = figure.subplots(1, len(comparisons), squeeze=False)[0]
    for ax, (name, comparison) in zip(axes, comparisons.items(), strict=True):
        table = comparison.table
        if output not in set(table["output"]):
            raise ValueError(f"output {output} is not in the comparison")
        part = table[table["output"] == output].set_index("test_point").sort_index()
        ordered = points is None
        index = part.index.to_numpy() if points is None else part.index.to_numpy()[points]
        if ordered:
            index = index[np.argsort(part.loc[index, "nngp_mean"].to_numpy())]
        rows = part.loc[index]
        x = np.arange(len(rows)) if t is None else np.asarray(t, dtype=float)
        if x.shape != (len(rows),):
            raise ValueError(f"t has {x.size} values for {len(rows)} points")
        for prefix, color, label in (("nngp", "black", "NNGP"), ("sampled", "C0", "sampled")):
            mean = rows[f"{prefix}_mean"].to_numpy()
            sd = np.sqrt(rows[f"{prefix}_var"].to_numpy())
            ax.plot(x, mean, color=color, lw=1.5 if prefix == "sampled" else 1.0, label=label)
            ax.fill_between(x, mean - 2 * sd, mean + 2 * sd, color=color, alpha=0.15, lw=0)
        ax.set_title(name or None)
        ax.set_xlabel(xlabel or ("slice coordinate t" if t is not None else "test point (sorted)"))
        ax.set_ylabel(f"f (output {output}), mean ± 2 sd")
        ax.legend(fontsize="small")
    return figure

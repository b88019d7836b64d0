"""Self-contained HTML and Markdown reports of runs and width sweeps.

A report is built once as a list of blocks (headings, paragraphs, tables,
figures, lists) and rendered twice: HTML with every image embedded as base64
(one file to mail around) and a Markdown twin whose images sit in
``figures/`` next to it.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wide_bnn.diagnostics import (
    Diagnosis,
    NNGPComparison,
    as_inference_data,
    compare_with_nngp,
    diagnose,
    load_inference_data,
    run_attrs,
    run_widths,
)
from wide_bnn.plots import (
    figure_png,
    plot_distance_vs_width,
    plot_ess_vs_width,
    plot_predictive_vs_nngp,
    plot_trace,
)
from wide_bnn.sweep import Sweep, read_table, run_row, summary_table

__all__ = ["report", "result_html", "verdict"]

# (column, header) of the compact sweep table shown in reports.
_SWEEP_COLUMNS = [
    ("width", "width"),
    ("parameterisation", "parameterisation"),
    ("sampler", "sampler"),
    ("f_test_ess_per_draw_min", "ESS/draw f_test (min)"),
    ("f_test_ess_per_draw_median", "ESS/draw f_test (median)"),
    ("f_test_ess_per_s_min", "ESS/s f_test (min)"),
    ("f_test_mean_ess_per_draw_min", "ESS/draw f_test_mean (min)"),
    ("f_test_mean_ess_per_s_min", "ESS/s f_test_mean (min)"),
    ("speedup_f_test_ess_per_s_min", "speed-up ESS/s f_test vs standard"),
    ("f_test_rhat_max", "R-hat max f_test"),
    ("f_test_mean_rhat_max", "R-hat max f_test_mean"),
    ("grads_per_draw", "gradients/draw"),
    ("sampling_s", "sampling s"),
    ("kl_to_nngp", "KL to NNGP"),
    ("kl_to_nngp_mcse", "± MCSE"),
    ("var_ratio_median", "var ratio vs NNGP"),
    ("num_warnings", "warnings"),
]
_DIAGNOSIS_COLUMNS = [
    "ess_bulk_min",
    "ess_bulk_median",
    "ess_tail_min",
    "ess_per_draw_min",
    "ess_per_draw_median",
    "ess_per_grad_median",
    "ess_per_s_min",
    "rhat_max",
    "mcse_over_sd_max",
]
_MAX_TRACE_FIGURES = 4


# ----------------------------------------------------------------------------
# Blocks and their two renderings


@dataclasses.dataclass
class _Block:
    kind: str  # "h2", "p", "table", "figure", "list", "code"
    content: Any
    name: str = ""


def _fmt(value) -> str:
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return "–"
        if math.isinf(value):
            return "inf"
        return f"{value:.4g}"
    return str(value)


def _render_html(title: str, blocks: list[_Block], *, fragment: bool = False) -> str:
    parts = [] if fragment else [f"<h1>{html.escape(title)}</h1>"]
    for block in blocks:
        if block.kind == "h2":
            parts.append(f"<h2>{html.escape(block.content)}</h2>")
        elif block.kind == "h3":
            parts.append(f"<h3>{html.escape(block.content)}</h3>")
        elif block.kind == "p":
            parts.append(f"<p>{html.escape(block.content)}</p>")
        elif block.kind == "code":
            parts.append(f"<pre>{html.escape(block.content)}</pre>")
        elif block.kind == "list":
            items = "".join(f"<li>{html.escape(item)}</li>" for item in block.content)
            parts.append(f"<ul>{items}</ul>")
        elif block.kind == "table":
            frame = block.content.map(_fmt)
            parts.append(frame.to_html(index=False, escape=True, border=0))
        elif block.kind == "figure":
            png, caption = block.content
            data = base64.b64encode(png).decode("ascii")
            parts.append(
                f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    body = "\n".join(parts)
    if fragment:
        return f'<div class="wide-bnn-result">{body}</div>'
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )


_CSS = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;font-size:0.85em;margin:1em 0;display:block;overflow-x:auto}"
    "th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}"
    "th{background:#f2f2f2}figure{margin:1em 0}img{max-width:100%}"
    "figcaption{font-size:0.85em;color:#555}pre{background:#f6f6f6;padding:0.5em}"
)


def _markdown_table(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        return _fmt(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _render_markdown(title: str, blocks: list[_Block], figure_dir: str) -> str:
    parts = [f"# {title}"]
    for block in blocks:
        if block.kind == "h2":
            parts.append(f"## {block.content}")
        elif block.kind == "h3":
            parts.append(f"### {block.content}")
        elif block.kind == "p":
            parts.append(block.content)
        elif block.kind == "code":
            parts.append(f"```\n{block.content}\n```")
        elif block.kind == "list":
            parts.append("\n".join(f"- {item}" for item in block.content))
        elif block.kind == "table":
            parts.append(_markdown_table(block.content))
        elif block.kind == "figure":
            caption = block.content[1]
            parts.append(f"![{caption}]({figure_dir}/{block.name}.png)\n\n*{caption}*")
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------
# Inputs


@dataclasses.dataclass
class _Runs:
    runs: dict[str, Any]  # label -> InferenceData
    table: pd.DataFrame | None
    settings: dict[str, Any]
    slice_info: dict[str, float] | None


def _label(idata, fallback: str) -> str:
    attrs = run_attrs(idata)
    if "parameterisation" not in attrs:
        return fallback
    widths = run_widths(idata)
    width = f"w{max(widths)}-" if widths else ""
    return f"{width}{attrs['parameterisation']}-{attrs.get('sampler', 'sampler')}"


def _collect(source) -> _Runs:
    if isinstance(source, Sweep):
        runs = {label: source.inference_data(label) for label in source.results}
        return _Runs(runs, source.table, dict(source.settings), source.slice_info)
    if isinstance(source, str | os.PathLike):
        return _collect_path(Path(source))
    if isinstance(source, Mapping):
        if not source:
            raise ValueError("source is an empty mapping: nothing to report")
        runs = {str(k): as_inference_data(v) for k, v in source.items()}
        return _Runs(runs, None, {}, None)
    idata = as_inference_data(source)
    return _Runs({_label(idata, "run"): idata}, None, {}, None)


def _collect_path(path: Path) -> _Runs:
    if path.is_file() and path.suffix == ".nc":
        idata = load_inference_data(path)
        return _Runs({_label(idata, path.stem): idata}, None, {}, None)
    if not path.is_dir():
        raise ValueError(f"run directory {os.fspath(path)!r} does not exist")
    files = sorted((path / "runs").glob("*.nc")) or sorted(path.glob("*.nc"))
    if not files:
        raise ValueError(
            f"run directory {os.fspath(path)!r} holds no runs (expected runs/*.nc; "
            "create one with `wide-bnn sample` or `wide-bnn demo`)"
        )
    loaded = {file.stem: load_inference_data(file) for file in files}
    # By width, not by file name (w128 would sort before w32).
    order = sorted(loaded, key=lambda label: (max(run_widths(loaded[label]) or [0]), label))
    runs = {label: loaded[label] for label in order}
    table = read_table(path / "sweep.csv") if (path / "sweep.csv").exists() else None
    settings, slice_info = {}, None
    if (path / "sweep.json").exists():
        meta = json.loads((path / "sweep.json").read_text())
        settings, slice_info = meta.get("settings", {}), meta.get("slice")
    return _Runs(runs, table, settings, slice_info)


def _comparison(idata) -> NNGPComparison | None:
    constant = getattr(idata, "constant_data", None)
    if constant is None or "nngp_mean" not in constant or "f_test" not in idata.posterior:
        return None
    return compare_with_nngp(idata)


def _slice_from_attrs(idata, slice_info):
    attrs = run_attrs(idata)
    if slice_info is None and "slice_start" in attrs:
        slice_info = {k: attrs[f"slice_{k}"] for k in ("start", "stop", "t0", "t1")}
    if not slice_info:
        return None, None
    start, stop = int(slice_info["start"]), int(slice_info["stop"])
    t = np.linspace(float(slice_info["t0"]), float(slice_info["t1"]), stop - start)
    return slice(start, stop), t


# ----------------------------------------------------------------------------
# Content


def verdict(table: pd.DataFrame, diagnoses: Mapping[str, Diagnosis]) -> str:
    """A short plain-words verdict on a sweep table and its diagnoses."""
    sentences = []
    widest = table["width"].max()
    top = table[table["width"] == widest]
    # ESS per second needs sampling times; a run resumed from a finished
    # checkpoint has none, so fall back to ESS per draw.
    column, unit = "f_test_ess_per_s_min", "effective draws per second"
    if not top[column].notna().any():
        column, unit = "f_test_ess_per_draw_min", "effective draws per draw"
    reprior = _best_row(top[top["parameterisation"] == "repriorised"], column)
    standard = _best_row(top[top["parameterisation"] == "standard"], column)
    if reprior is not None and standard is not None:
        best_s = standard[column]
        ratio = reprior[column] / best_s if best_s > 0 else math.inf
        sentences.append(
            f"At width {widest}, repriorised sampling ({reprior['sampler']}) reached "
            f"{_fmt(reprior[column])} {unit} on the test predictions (worst test point), "
            f"{_fmt(ratio)}x the standard parameterisation ({standard['sampler']}, "
            f"{_fmt(best_s)})."
        )
    else:
        best = _best_row(top, column)
        if best is not None:
            sentences.append(
                f"At width {widest}, the best run ({best['parameterisation']}, "
                f"{best['sampler']}) reached {_fmt(best[column])} {unit} on the test "
                "predictions (worst test point)."
            )
    widths = sorted(table["width"].unique())
    if len(widths) > 1 and len(table[table["parameterisation"] == "repriorised"]):
        part = table[table["parameterisation"] == "repriorised"].groupby("width")
        per_draw = part["f_test_ess_per_draw_min"].max()
        trend = "grows" if per_draw.iloc[-1] > per_draw.iloc[0] else "does not grow"
        sentences.append(
            f"Its ESS per draw {trend} with width ({_fmt(per_draw.iloc[0])} at width "
            f"{widths[0]}, {_fmt(per_draw.iloc[-1])} at width {widths[-1]})."
        )
    if "kl_to_nngp" in table and table["kl_to_nngp"].notna().any():
        rows = table[table["parameterisation"] == "repriorised"]
        rows = rows if rows["kl_to_nngp"].notna().any() else table
        kl = rows.groupby("width")["kl_to_nngp"].min().dropna()
        name = "repriorised" if rows is not table else "sampled"
        sentences.append(
            f"The {name} predictive marginals are {_fmt(kl.iloc[-1])} nats (mean KL) from the "
            f"infinite-width NNGP posterior at width {kl.index[-1]}"
            + (f", {_fmt(kl.iloc[0])} at width {kl.index[0]}." if len(kl) > 1 else ".")
        )
    flagged = [label for label, d in diagnoses.items() if d.warnings]
    if flagged:
        dominance = [
            label
            for label, d in diagnoses.items()
            if any(w.startswith("readout dominance") for w in d.warnings)
        ]
        sentence = (
            f"{len(flagged)} of {len(diagnoses)} runs failed a convergence check "
            f"({', '.join(flagged)}); treat their numbers with caution (details below)."
        )
        if dominance:
            sentence += (
                f" In {', '.join(dominance)} the hidden layers barely moved although f_test "
                "looks well mixed."
            )
        sentences.append(sentence)
    else:
        sentences.append(
            f"All {len(diagnoses)} runs passed the convergence checks (R-hat <= 1.01, enough "
            "effective draws)."
        )
    return " ".join(sentences)


def _best_row(frame: pd.DataFrame, column: str):
    values = frame[column].dropna()
    return None if values.empty else frame.loc[values.idxmax()]


def _settings_table(runs: _Runs) -> pd.DataFrame:
    first = next(iter(runs.runs.values()))
    attrs = run_attrs(first)
    keys = [
        "num_chains",
        "num_warmup",
        "num_samples",
        "thinning",
        "noise_std",
        "dtype",
        "collapsed",
        "seed",
        "wide_bnn_version",
        "jax_version",
        "arviz_version",
    ]
    rows = [(k, v) for k, v in runs.settings.items() if not isinstance(v, dict | list)]
    seen = {k for k, _ in rows}
    rows += [(k, attrs[k]) for k in keys if k in attrs and k not in seen]
    rows += [(k, json.dumps(v)) for k, v in runs.settings.items() if isinstance(v, dict | list)]
    return pd.DataFrame(rows, columns=["setting", "value"]).astype(str)


def _compact(table: pd.DataFrame) -> pd.DataFrame:
    present = [(c, h) for c, h in _SWEEP_COLUMNS if c in table.columns]
    return table[[c for c, _ in present]].rename(columns=dict(present))


def _blocks(runs: _Runs) -> tuple[list[_Block], pd.DataFrame]:
    diagnoses = {label: diagnose(idata, emit=False) for label, idata in runs.runs.items()}
    comparisons = {label: _comparison(idata) for label, idata in runs.runs.items()}
    table = runs.table
    if table is None:
        rows = [run_row(runs.runs[k], diagnoses[k], comparisons[k]) for k in runs.runs]
        table = summary_table(rows)
    blocks = [_Block("h2", "Verdict"), _Block("p", verdict(table, diagnoses))]
    blocks += [_Block("h2", "Settings"), _Block("table", _settings_table(runs))]
    blocks += [
        _Block("h2", "Results"),
        _Block(
            "p",
            "ESS is ArviZ's rank-normalised bulk ESS over all chains; 'min' is over test "
            "points. f_test are predictive draws of f(x_test); f_test_mean = E[f(x_test) | "
            "hidden] shows whether the hidden layers mix. KL to NNGP is the mean KL divergence "
            "between Gaussian fits of the sampled and infinite-width (NNGP) marginals.",
        ),
        _Block("table", _compact(table)),
    ]
    figures = _figures(runs, table, diagnoses, comparisons)
    if figures:
        blocks.append(_Block("h2", "Figures"))
        blocks += figures
    blocks.append(_Block("h2", "Diagnostics per run"))
    for label, diagnosis in diagnoses.items():
        blocks.append(_Block("h3", label))
        summary = diagnosis.summary[[c for c in _DIAGNOSIS_COLUMNS if c in diagnosis.summary]]
        blocks.append(_Block("table", summary.reset_index()))
        blocks.append(_Block("list", diagnosis.warnings or ["No warnings."]))
    return blocks, table


def _figures(runs, table, diagnoses, comparisons) -> list[_Block]:
    blocks = []
    if table["width"].nunique() > 1:
        figure = plot_ess_vs_width(table)
        caption = "ESS per draw and per second vs width (min over test points)."
        blocks.append(_Block("figure", (figure_png(figure), caption), "ess_vs_width"))
        if table["kl_to_nngp"].notna().all():
            figure = plot_distance_vs_width(table)
            caption = "Distance to the NNGP posterior vs width (dotted: Monte Carlo noise floor)."
            blocks.append(_Block("figure", (figure_png(figure), caption), "distance_vs_width"))
    widest = _widest_runs(runs.runs)
    shown = {label: comparisons[label] for label in widest if comparisons.get(label) is not None}
    if shown:
        points, t = _slice_from_attrs(runs.runs[next(iter(shown))], runs.slice_info)
        figure = plot_predictive_vs_nngp(shown, points=points, t=t)
        where = "along a 1-D input slice" if t is not None else "at the test points"
        caption = f"Sampled vs NNGP predictive mean ± 2 sd {where} (output 0)."
        blocks.append(_Block("figure", (figure_png(figure), caption), "predictive_vs_nngp"))
    for index, label in enumerate(widest[:_MAX_TRACE_FIGURES]):
        idata = runs.runs[label]
        var = "f_test_mean"
        summary = diagnoses[label].summary
        if var not in summary.index or summary.loc[var, "num_constant"] == summary.loc[var, "size"]:
            var = "f_test" if "f_test" in summary.index else summary.index[0]
        figure = plot_trace(idata, var, diagnosis=diagnoses[label], max_elements=2)
        caption = f"{label}: traces and autocorrelation of the two worst-mixing {var} elements."
        blocks.append(_Block("figure", (figure_png(figure), caption), f"trace_{index}"))
    return blocks


def _widest_runs(runs: Mapping[str, Any]) -> list[str]:
    widths = {}
    for label, idata in runs.items():
        widths[label] = max(run_widths(idata) or [0])
    top = max(widths.values())
    return [label for label, width in widths.items() if width == top]


# ----------------------------------------------------------------------------
# Public entry points


def report(source, out_dir: str | os.PathLike | None = None, *, title: str | None = None) -> Path:
    """Write ``report.html`` (self-contained) and ``report.md`` (+ ``figures/``) for runs.

    Parameters
    ----------
    source : Sweep, SampleResult, arviz.InferenceData, mapping or path
        A width sweep, one run, a mapping of label to runs, a run directory
        (``runs/*.nc`` plus optional ``sweep.csv`` / ``sweep.json``, as written by
        :meth:`wide_bnn.sweep.Sweep.save` and the command line) or one ``.nc`` file.
    out_dir : path, optional
        Where to write; defaults to ``source`` when it is a directory.
    title : str, optional
        Report title.

    Returns
    -------
    pathlib.Path
        The HTML file.
    """
    if out_dir is None:
        if isinstance(source, str | os.PathLike) and Path(source).is_dir():
            out_dir = source
        else:
            raise ValueError("out_dir is required unless source is a run directory")
    runs = _collect(source)
    title = title or "wide_bnn report"
    blocks, _ = _blocks(runs)
    out = Path(out_dir)
    figure_dir = out / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    for block in blocks:
        if block.kind == "figure":
            (figure_dir / f"{block.name}.png").write_bytes(block.content[0])
    html_path = out / "report.html"
    html_path.write_text(_render_html(title, blocks), encoding="utf-8")
    (out / "report.md").write_text(_render_markdown(title, blocks, "figures"), encoding="utf-8")
    return html_path


def result_html(result) -> str:
    """An HTML summary of one run for notebooks: settings, timings, diagnostics, warnings."""
    idata = as_inference_data(result)
    diagnosis = diagnose(idata, emit=False)
    attrs = run_attrs(idata)
    head = ", ".join(
        f"{key} {attrs[key]}"
        for key in ("sampler", "parameterisation", "num_chains", "num_draws")
        if key in attrs
    )
    times = ", ".join(
        f"{key[7:-2]} {float(value):.2f} s"
        for key, value in attrs.items()
        if key.startswith("timing_")
    )
    summary = diagnosis.summary[[c for c in _DIAGNOSIS_COLUMNS if c in diagnosis.summary]]
    blocks = [
        _Block("h3", f"SampleResult: {head}"),
        _Block("p", f"Timings: {times}." if times else "No timings recorded."),
        _Block("table", summary.reset_index()),
        _Block("list", diagnosis.warnings or ["No warnings."]),
    ]
    return _render_html("", blocks, fragment=True)

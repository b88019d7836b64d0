"""Tests of wide_bnn.plots, wide_bnn.sweep and wide_bnn.reporting on synthetic runs.

Synthetic SampleResults stand in for sampling runs so that the report, its
figures and the sweep table are checked in seconds; the real sampler is
exercised end to end by ``wide-bnn demo --quick`` in tests/test_cli.py.
"""

import base64
import functools
import html.parser
import io
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from wide_bnn import sweep as sweep_module
from wide_bnn.data import RegressionData
from wide_bnn.diagnostics import compare_with_gaussian, diagnose, to_inference_data
from wide_bnn.plots import (
    plot_distance_vs_width,
    plot_ess_vs_width,
    plot_predictive_vs_nngp,
    plot_trace,
)
from wide_bnn.reporting import report, result_html, verdict
from wide_bnn.results import SampleResult
from wide_bnn.sweep import (
    Sweep,
    input_slice,
    read_table,
    run_row,
    summary_table,
    width_sweep,
)

CHROMIUM = "/usr/bin/chromium"
POINTS = 10  # 6 test points + a 4-point slice


def fake_result(rng, *, width, parameterisation, mix=0.1, draws=1000, chains=4, frozen=False):
    """A run whose hidden part is AR(1) with coefficient ``mix`` (frozen: never moves)."""
    shape = (chains, draws, POINTS, 1)
    hidden = np.empty(shape)
    hidden[:, 0] = rng.normal(size=(chains, POINTS, 1))
    for t in range(1, draws):
        step = rng.normal(size=(chains, POINTS, 1))
        hidden[:, t] = mix * hidden[:, t - 1] + np.sqrt(1 - mix**2) * step
    if frozen:
        hidden[:] = hidden[:, :1]
    scale = 1.0 / np.sqrt(width)
    f_mean = scale * hidden
    x = rng.normal(size=(12, 2))
    return SampleResult(
        draws={
            "f_test": f_mean + rng.normal(size=shape),
            "f_test_mean": f_mean,
            "projections": rng.normal(size=(chains, draws, 3)),
        },
        stats={
            "lp": rng.normal(size=(chains, draws)),
            "acceptance_rate": np.full((chains, draws), 0.8),
            "diverging": np.zeros((chains, draws), dtype=bool),
            "num_grad_evals": np.full((chains, draws), 4),
        },
        x_test=rng.normal(size=(POINTS, 2)),
        settings={
            "sampler": "pcn" if parameterisation == "repriorised" else "nuts",
            "parameterisation": parameterisation,
            "collapsed": parameterisation == "repriorised",
            "widths": [width],
            "num_samples": draws,
            "seed": 0,
        },
        timings={"compile": 1.0, "warmup": 1.0, "sampling": 2.0 if frozen else 1.0},
        data=RegressionData(x, rng.normal(size=(12,)), 0.1),
    )


@functools.cache
def fake_sweep(*, frozen_standard=False) -> Sweep:
    """Four synthetic runs (2 widths x 2 parameterisations); cached, never mutated."""
    rng = np.random.default_rng(7)
    nngp = (np.zeros((POINTS, 1)), np.full(POINTS, 1.0))
    slice_info = {"start": 6, "stop": 10, "t0": -0.25, "t1": 1.25}
    results, diagnoses, comparisons, rows = {}, {}, {}, []
    for width in (32, 128):
        for param in ("repriorised", "standard"):
            result = fake_result(
                rng,
                width=width,
                parameterisation=param,
                mix=0.1 if param == "repriorised" else 0.3,
                frozen=frozen_standard and param == "standard",
            )
            label = f"w{width}-{param}-{result.settings['sampler']}"
            idata = to_inference_data(result, nngp=nngp)
            diagnosis = diagnose(idata, emit=False)
            comparison = compare_with_gaussian(result.draws["f_test"], *nngp)
            results[label], diagnoses[label], comparisons[label] = result, diagnosis, comparison
            rows.append(run_row(idata, diagnosis, comparison))
    settings = {"widths": [32, 128], "num_chains": 4, "dataset": "synthetic"}
    return Sweep(summary_table(rows), results, diagnoses, comparisons, nngp, slice_info, settings)


class _Images(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])


def _non_blank(png: bytes) -> bool:
    pixels = imread(io.BytesIO(png), format="png")[..., :3]
    return float(pixels.std()) > 0.01 and float((pixels < 0.9).mean()) > 0.001


# ----------------------------------------------------------------------------
# Sweep table


def test_summary_table_is_tidy_with_speedups():
    table = fake_sweep().table
    assert len(table) == 4
    assert list(table["width"]) == [32, 32, 128, 128]
    assert set(table["parameterisation"]) == {"repriorised", "standard"}
    standard = table[table["parameterisation"] == "standard"]
    np.testing.assert_allclose(standard["speedup_f_test_ess_per_s_min"], 1.0)
    reprior = table[table["parameterisation"] == "repriorised"].set_index("width")
    base = standard.set_index("width")["f_test_ess_per_s_min"]
    np.testing.assert_allclose(
        reprior["speedup_f_test_ess_per_s_min"], reprior["f_test_ess_per_s_min"] / base
    )
    for column in ("f_test_ess_per_draw_min", "kl_to_nngp", "kl_to_nngp_mcse", "grads_per_draw"):
        assert table[column].notna().all()
    np.testing.assert_allclose(table["grads_per_draw"], 4.0)


def test_input_slice_runs_through_both_points():
    points, t = input_slice(np.array([0.0, 1.0]), np.array([2.0, 1.0]), 7, margin=0.5)
    assert points.shape == (7, 2)
    np.testing.assert_allclose(t, np.linspace(-0.5, 1.5, 7))
    np.testing.assert_allclose(points[:, 0], 2 * t)
    np.testing.assert_allclose(points[:, 1], 1.0)
    with pytest.raises(ValueError, match="num"):
        input_slice(np.zeros(2), np.ones(2), 1)
    with pytest.raises(ValueError, match="differ in shape"):
        input_slice(np.zeros(2), np.ones(3), 5)


def test_width_sweep_runs_every_combination_with_the_same_budget(monkeypatch):
    # The sampler is replaced by a recorder: this checks the plumbing (same data,
    # budget and seed for every run; slice points appended; NNGP once).
    from wide_bnn.datasets import teacher

    calls = []
    rng = np.random.default_rng(3)

    def fake_sample(net, data, *, x_test, sampler, parameterisation, **budget):
        calls.append((net.spec.hidden, sampler, parameterisation, budget, x_test.shape))
        frozen = sampler == "elliptical"  # one bad run: the sweep must say so
        result = fake_result(
            rng, width=net.spec.hidden[0], parameterisation=parameterisation, frozen=frozen
        )
        result.draws = {k: v[:, :, : x_test.shape[0]] for k, v in result.draws.items()}
        result.draws["projections"] = rng.normal(size=(4, 1000, 3))
        result.settings["sampler"] = sampler or "nuts"
        return result

    import wide_bnn.sampling

    monkeypatch.setattr(wide_bnn.sampling, "sample", fake_sample)
    dataset = teacher(n_train=12, n_test=6, in_dim=2, seed=0)
    with pytest.warns(sweep_module.DiagnosticWarning, match="2 of 6 runs have diagnostic") as rec:
        result = width_sweep(
            [8, 16],
            dataset,
            samplers={"repriorised": ["pcn", "elliptical"], "standard": "nuts"},
            sampler_options={"pcn": {"scale": 0.5}},
            num_chains=4,
            num_warmup=7,
            num_samples=1000,
            seed=5,
            slice_points=4,
            progress=False,
        )
    assert "w8-repriorised-elliptical, w16-repriorised-elliptical" in str(rec[0].message)
    assert len(calls) == 6
    assert {(c[0], c[1], c[2]) for c in calls} == {
        ((w,), s, p)
        for w in (8, 16)
        for s, p in (("pcn", "repriorised"), ("elliptical", "repriorised"), ("nuts", "standard"))
    }
    for _, sampler, _, budget, shape in calls:
        assert budget["num_warmup"] == 7 and budget["num_samples"] == 1000
        assert budget["seed"] == 5 and budget["num_chains"] == 4
        assert budget.get("scale") == (0.5 if sampler == "pcn" else None)
        assert shape == (10, 2)  # 6 test points + 4 slice points
    assert len(result.table) == 6 and len(result.comparisons) == 6
    assert result.slice_info["start"] == 6 and result.slice_info["stop"] == 10
    assert result.nngp[0].shape == (10, 1)


def test_width_sweep_rejects_bad_arguments():
    from wide_bnn.datasets import teacher

    dataset = teacher(n_train=12, n_test=6, in_dim=2, seed=0)
    with pytest.raises(ValueError, match="widths"):
        width_sweep([], dataset)
    with pytest.raises(ValueError, match="widths"):
        width_sweep([8, 0], dataset)
    with pytest.raises(ValueError, match="parameterisations"):
        width_sweep([8], dataset, parameterisations=["weird"])
    with pytest.raises(ValueError, match="x_test is required"):
        width_sweep([8], dataset.train_data())


# ----------------------------------------------------------------------------
# Plots


def test_plot_functions_return_figures():
    sweep = fake_sweep()
    figure = plot_ess_vs_width(sweep.table)
    assert isinstance(figure, Figure) and len(figure.axes) == 2
    # one line per (parameterisation, sampler) and variable in each panel
    assert len(figure.axes[0].lines) == 4
    assert isinstance(plot_distance_vs_width(sweep.table), Figure)
    comparison = sweep.comparisons["w128-repriorised-pcn"]
    figure = plot_predictive_vs_nngp(comparison, points=slice(6, 10), t=np.linspace(0, 1, 4))
    assert len(figure.axes) == 1 and len(figure.axes[0].lines) == 2
    with pytest.raises(ValueError, match="t has"):
        plot_predictive_vs_nngp(comparison, points=slice(6, 10), t=np.zeros(3))
    with pytest.raises(ValueError, match="missing columns"):
        plot_ess_vs_width(sweep.table.drop(columns=["f_test_ess_per_s_min"]))


def test_plot_trace_shows_the_worst_mixing_elements():
    rng = np.random.default_rng(1)
    result = fake_result(rng, width=32, parameterisation="repriorised")
    # element 4 is stuck: it must be among those drawn
    result.draws["f_test_mean"][:, :, 4] = np.linspace(0, 1, 1000)[None, :, None]
    diagnosis = diagnose(result, emit=False)
    figure = plot_trace(result, "f_test_mean", diagnosis=diagnosis, max_elements=2)
    assert len(figure.axes) == 4
    assert figure.axes[0].get_ylabel() == "f_test_mean[4,0]"
    figure = plot_trace(result, "projections", elements=[(1,)])
    assert figure.axes[0].get_ylabel() == "projections[1]"
    with pytest.raises(ValueError, match="not a valid index"):
        plot_trace(result, "projections", elements=[(5,)])
    with pytest.raises(ValueError, match="var_name"):
        plot_trace(result, "nothing")


# ----------------------------------------------------------------------------
# Report


def _check_report(html_path: Path, *, min_images: int) -> str:
    text = html_path.read_text(encoding="utf-8")
    parser = _Images()
    parser.feed(text)
    parser.close()
    assert parser.tags.count("html") == 1 and "table" in parser.tags
    assert len(parser.images) >= min_images
    for src in parser.images:
        assert src.startswith("data:image/png;base64,"), src[:40]
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert _non_blank(png)
    # self-contained: no external resources
    assert 'src="http' not in text and 'href="http' not in text
    markdown = (html_path.parent / "report.md").read_text(encoding="utf-8")
    for name in parser.images and _markdown_images(markdown):
        assert (html_path.parent / name).stat().st_size > 0
    assert len(_markdown_images(markdown)) == len(parser.images)
    return text


def _markdown_images(markdown: str) -> list[str]:
    import re

    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


def test_report_of_a_sweep_is_self_contained(tmp_path):
    path = report(fake_sweep(), tmp_path, title="Synthetic sweep")
    assert path == tmp_path / "report.html"
    # ESS vs width, distance vs width, predictive slice, 2 trace figures
    text = _check_report(path, min_images=5)
    assert "<h1>Synthetic sweep</h1>" in text
    for heading in ("Verdict", "Settings", "Results", "Figures", "Diagnostics per run"):
        assert f"<h2>{heading}</h2>" in text
    markdown = (tmp_path / "report.md").read_text()
    assert "| width | parameterisation |" in markdown
    assert "along a 1-D input slice" in markdown


def test_report_from_a_saved_run_directory(tmp_path):
    sweep = fake_sweep()
    (tmp_path / "run" / "runs").mkdir(parents=True)
    (tmp_path / "run" / "runs" / "w4-old-run.nc").write_bytes(b"stale")
    sweep.save(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run" / "runs").iterdir()) == sorted(
        f"{label}.nc" for label in sweep.results
    )
    path = report(tmp_path / "run")
    text = _check_report(path, min_images=5)
    assert "w128-repriorised-pcn" in text
    table = read_table(tmp_path / "run" / "sweep.csv")
    pd.testing.assert_frame_equal(table, sweep.table, check_dtype=False)


def test_report_of_one_run_and_of_a_mapping(tmp_path):
    rng = np.random.default_rng(2)
    result = fake_result(rng, width=64, parameterisation="repriorised")
    path = report(result, tmp_path / "one")
    _check_report(path, min_images=1)
    runs = {"a": result, "b": fake_result(rng, width=64, parameterisation="standard")}
    path = report(runs, tmp_path / "two")
    text = _check_report(path, min_images=2)
    assert "x the standard parameterisation" in text
    with pytest.raises(ValueError, match="out_dir is required"):
        report(result)
    with pytest.raises(ValueError, match="holds no runs"):
        report(tmp_path / "two")  # a directory without runs/*.nc
    with pytest.raises(ValueError, match="does not exist"):
        report(tmp_path / "missing", tmp_path / "out")


def test_verdict_names_the_frozen_run():
    sweep = fake_sweep(frozen_standard=True)
    text = verdict(sweep.table, sweep.diagnoses)
    assert "hidden layers barely moved" in text
    assert "w128-standard-nuts" in text
    clean = fake_sweep()
    assert "passed the convergence checks" in verdict(clean.table, clean.diagnoses)


def test_result_html_for_notebooks():
    result = fake_result(np.random.default_rng(4), width=16, parameterisation="repriorised")
    fragment = result.__class__._repr_html_(result)
    assert fragment == result_html(result)
    assert fragment.startswith('<div class="wide-bnn-result">')
    assert "<table" in fragment and "SampleResult: sampler pcn" in fragment
    assert "No warnings." in fragment


def test_report_renders_in_headless_chromium(tmp_path):
    chromium = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if chromium is None:
        message = "chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    path = report(fake_sweep(), tmp_path / "report")
    shot = tmp_path / "shot.png"
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1280,2400",
        path.resolve().as_uri(),
    ]
    completed = subprocess.run(command, capture_output=True, timeout=180, check=False)
    assert shot.exists(), completed.stderr.decode(errors="replace")[-2000:]
    png = shot.read_bytes()
    assert _non_blank(png)
    pixels = imread(io.BytesIO(png), format="png")[..., :3]
    assert pixels.shape[:2] == (2400, 1280)
    # Figures are drawn: some mid-page rows hold many non-white pixels.
    assert float((pixels[800:2000] < 0.8).mean()) > 0.005

"""Tests of the ``wide-bnn`` command line: help, one-line errors, demo, resumable sample, report."""

import os
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import wide_bnn.cli as cli
from wide_bnn.diagnostics import load_inference_data

REPO = Path(cli.__file__).resolve().parents[1]


def run_cli(*args, cwd, timeout=300):
    """Run ``python -m wide_bnn.cli`` in a fresh process (as the console script does)."""
    env = dict(os.environ)
    # Import this checkout even where an editable install is stale.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, "-m", "wide_bnn.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_console_script_is_declared():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("wide-bnn") == "wide_bnn.cli:main"


# Records OPENBLAS_NUM_THREADS at the moment numpy is first imported, then imports the CLI.
_NUMPY_IMPORT_PROBE = """
import importlib.abc, os, sys

class Probe(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "numpy" and "seen" not in globals():
            globals()["seen"] = os.environ.get("OPENBLAS_NUM_THREADS", "unset")
        return None

sys.meta_path.insert(0, Probe())
import wide_bnn.cli
import numpy
print(seen)
"""


def test_cli_sets_blas_threads_before_numpy_loads(tmp_path):
    # OpenBLAS reads the variable once, when numpy loads it; the CLI sets it at import,
    # which only works if importing the package does not load numpy first.
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run(
        [sys.executable, "-c", _NUMPY_IMPORT_PROBE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip() == "1"


@pytest.mark.parametrize("command", [[], ["demo"], ["sample"], ["report"]])
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: wide-bnn")
    assert "--help" in out


def test_missing_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2
    assert "required" in capsys.readouterr().err


def _one_line_error(capsys, argv) -> str:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("wide-bnn: error: ")
    assert "Traceback" not in captured.err
    return lines[0]


def test_errors_are_one_readable_line(tmp_path, capsys):
    message = _one_line_error(capsys, ["report", str(tmp_path / "missing")])
    assert "is not a directory" in message
    message = _one_line_error(capsys, ["report", str(tmp_path)])
    assert "holds no runs" in message
    message = _one_line_error(capsys, ["sample", "--no-progress"])
    assert "--out is required" in message
    bad = tmp_path / "bad.toml"
    bad.write_text("hidden = [8\n")
    message = _one_line_error(capsys, ["sample", "--config", str(bad)])
    assert "not valid TOML" in message
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('out = "x"\nwidth = 3\n')
    message = _one_line_error(capsys, ["sample", "--config", str(unknown)])
    assert "unknown key(s) ['width']" in message
    message = _one_line_error(capsys, ["sample", "--out", "x", "--option", "novalue"])
    assert "KEY=VALUE" in message
    message = _one_line_error(capsys, ["sample", "--config", str(tmp_path / "none.toml")])
    assert "does not exist" in message
    message = _one_line_error(capsys, ["sample", "--out", "x", "--hidden", "0"])
    assert "positive widths" in message


def test_error_in_a_fresh_process_has_no_traceback(tmp_path):
    completed = run_cli("report", str(tmp_path / "nothing"), cwd=tmp_path, timeout=120)
    assert completed.returncode == 2
    assert completed.stderr.strip().startswith("wide-bnn: error: ")
    assert len(completed.stderr.strip().splitlines()) == 1
    assert "Traceback" not in completed.stderr


def test_demo_quick_runs_end_to_end(tmp_path):
    start = time.perf_counter()
    completed = run_cli("demo", "--quick", "--no-progress", "--out", "demo", cwd=tmp_path)
    seconds = time.perf_counter() - start
    assert completed.returncode == 0, completed.stderr[-3000:]
    out_dir = (tmp_path / "demo").resolve()
    assert f"report written to {out_dir}" in completed.stdout
    assert "Traceback" not in completed.stderr
    table = pd.read_csv(out_dir / "sweep.csv")
    assert len(table) == 4
    assert set(table["parameterisation"]) == {"repriorised", "standard"}
    assert sorted(table["width"].unique()) == [16, 64]
    assert table["kl_to_nngp"].notna().all()
    assert len(list((out_dir / "runs").glob("*.nc"))) == 4
    html = (out_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5
    assert (out_dir / "report.md").exists()
    print(f"wide-bnn demo --quick took {seconds:.1f} s")


def test_sample_is_resumable_and_report_rebuilds(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(
        "\n".join(
            [
                'dataset = "teacher"',
                "n_train = 16",
                "n_test = 4",
                "hidden = [8]",
                'sampler = "pcn"',
                "chains = 2",
                "threads = 2",
                "warmup = 20",
                "samples = 40",
                "seed = 3",
                f'out = "{tmp_path / "run"}"',
                "report = false",
                "[options]",
                "scale = 0.5",
            ]
        )
    )
    argv = ["sample", "--config", str(config), "--no-progress"]
    assert cli.main(argv) == 0
    first_out = capsys.readouterr().out
    files = list((tmp_path / "run" / "runs").glob("*.nc"))
    assert [f.name for f in files] == ["w8-repriorised-pcn.nc"]
    first = load_inference_data(files[0])
    assert first.attrs["sampler"] == "pcn"
    assert "scale" in first.attrs["settings_json"]
    assert '"threads": 2' in first.attrs["settings_json"]
    assert (tmp_path / "run" / "checkpoints").is_dir()
    assert "draws saved to" in first_out
    # Re-running the same command resumes from the checkpoints: nothing is
    # sampled again (no sampling time) and the draws are identical.
    assert cli.main(argv) == 0
    capsys.readouterr()
    second = load_inference_data(files[0])
    np.testing.assert_array_equal(second.posterior["f_test"], first.posterior["f_test"])
    assert second.attrs["timing_sampling_s"] < 0.1 * first.attrs["timing_sampling_s"] + 1e-3
    assert cli.main(["report", str(tmp_path / "run"), "--title", "resumed"]) == 0
    assert "report written to" in capsys.readouterr().out
    assert "<h1>resumed</h1>" in (tmp_path / "run" / "report.html").read_text()


@pytest.mark.slow
def test_sample_float32_in_a_fresh_process(tmp_path):
    completed = run_cli(
        "sample",
        "--float32",
        "--no-progress",
        "--n-train",
        "16",
        "--n-test",
        "4",
        "--hidden",
        "8",
        "--sampler",
        "pcn",
        "--chains",
        "2",
        "--warmup",
        "20",
        "--samples",
        "40",
        "--out",
        "run32",
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    (path,) = (tmp_path / "run32" / "runs").glob("*.nc")
    idata = load_inference_data(path)
    assert idata.posterior["f_test"].dtype == np.float32
    assert (tmp_path / "run32" / "report.html").exists()

"""Faults lose nothing: a SIGKILLed ``wide-bnn sample`` resumes bit-identically, and
checkpoint writes are atomic (a crash during a write keeps the last good checkpoint)."""

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import wide_bnn.checkpoint as ckpt
import wide_bnn.cli as cli
from wide_bnn.diagnostics import load_inference_data

REPO = Path(cli.__file__).resolve().parents[1]
NUM_SAMPLES = 600
CHUNK = 5
# A tiny pCN run whose sampling phase is many small chunks (each one checkpointed and
# fsynced), so that it lasts long enough to be killed in the middle.
COMMAND = [
    "sample",
    "--dataset",
    "teacher",
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
    str(NUM_SAMPLES),
    "--chunk-size",
    str(CHUNK),
    "--seed",
    "11",
    "--no-progress",
    "--no-report",
]


def cli_process(out: Path, **kwargs) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return subprocess.Popen(
        [sys.executable, "-m", "wide_bnn.cli", *COMMAND, "--out", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def run_to_end(out: Path) -> None:
    process = cli_process(out)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert "draws saved to" in stdout


def saved_draws(directory: Path) -> int | None:
    """Draws per chain covered by the checkpoint (None before the first one)."""
    try:
        with open(directory / ckpt.STATE_FILE, "rb") as stream, np.load(stream) as stored:
            return int(stored["num_draws"])
    except (FileNotFoundError, KeyError, ValueError, OSError, zipfile.BadZipFile):
        return None


def draws_file(out: Path) -> Path:
    (path,) = (out / "runs").glob("*.nc")
    return path


def assert_bit_identical(path_a: Path, path_b: Path) -> None:
    a, b = load_inference_data(path_a), load_inference_data(path_b)
    for group in ("posterior", "sample_stats"):
        ga, gb = a[group], b[group]
        assert set(ga.data_vars) == set(gb.data_vars)
        for name in ga.data_vars:
            np.testing.assert_array_equal(ga[name].values, gb[name].values, err_msg=name)
    assert a.posterior.sizes["draw"] == NUM_SAMPLES


@pytest.mark.slow  # three CLI processes of ~30 s each (imports, compilation, NNGP, netCDF)
def test_sigkill_mid_run_then_restart_gives_bit_identical_draws(tmp_path):
    reference = tmp_path / "reference"
    run_to_end(reference)

    killed = tmp_path / "killed"
    checkpoints = killed / "checkpoints"
    process = cli_process(killed)
    try:
        deadline = time.monotonic() + 240
        while (saved_draws(checkpoints) or 0) == 0:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "no post-warm-up checkpoint appeared"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    at_kill = saved_draws(checkpoints)
    assert 0 < at_kill < NUM_SAMPLES, at_kill  # really killed mid-run
    assert not (killed / "runs").exists()
    # Chunks covered by the last checkpoint must not be sampled or written again.
    kept = {
        path.name: path.stat().st_mtime_ns
        for path in checkpoints.glob("draws_*.npz")
        if int(path.stem.split("_")[1]) < at_kill
    }
    assert kept

    run_to_end(killed)
    assert_bit_identical(draws_file(reference), draws_file(killed))
    for name, mtime in kept.items():
        assert (checkpoints / name).stat().st_mtime_ns == mtime, name
    assert saved_draws(checkpoints) == NUM_SAMPLES
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".tmp-")]


# -- atomic writes -------------------------------------------------------------------------------


class Crash(BaseException):
    """Stands for the process dying in the middle of a write."""


def test_a_crash_during_a_write_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    directory = str(tmp_path)
    states, tuning = {"x": np.arange(3.0)}, {"s": np.ones(2)}
    ckpt.write_state(directory, "f" * 64, 0, states, tuning, config_fingerprint="c" * 64)
    before = (tmp_path / ckpt.STATE_FILE).read_bytes()

    def torn_savez(stream, **arrays):
        stream.write(b"PK\x03\x04 half a zip file")  # some bytes reach the disk ...
        raise Crash  # ... then the process dies

    monkeypatch.setattr(ckpt.np, "savez", torn_savez)
    with pytest.raises(Crash):
        ckpt.write_state(directory, "f" * 64, 9, {"x": np.zeros(3)}, tuning)
    monkeypatch.undo()
    # The old checkpoint is untouched and still reads; no temporary is left behind.
    assert (tmp_path / ckpt.STATE_FILE).read_bytes() == before
    assert ckpt.check(directory, "c" * 64) == 0
    assert sorted(os.listdir(directory)) == [ckpt.STATE_FILE]


def test_a_sigkill_during_a_write_leaves_a_temporary_that_the_restart_removes(tmp_path):
    # SIGKILL runs no cleanup: simulate its leftovers and the restart's recovery.
    directory = str(tmp_path)
    ckpt.write_state(directory, "f" * 64, 0, {}, {}, config_fingerprint="c" * 64)
    stale = tmp_path / ".tmp-abc123.npz"
    stale.write_bytes(b"PK\x03\x04 torn")
    assert ckpt.check(directory, "c" * 64) == 0  # the torn temporary is never read
    assert ckpt.remove_stale_temporaries(directory) == [stale.name]
    assert sorted(os.listdir(directory)) == [ckpt.STATE_FILE]


def test_writes_go_through_a_temporary_and_os_replace(tmp_path, monkeypatch):
    replaced = []
    real_replace = os.replace

    def spy(src, dst):
        replaced.append((Path(src).name, Path(dst).name))
        # At this moment the new content is complete in the temporary only.
        assert Path(src).read_bytes()[:2] == b"PK"
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", spy)
    ckpt.write_chunk(str(tmp_path), 0, {"f": np.ones((2, 3))}, {"lp": np.zeros((2, 3))})
    ckpt.write_state(str(tmp_path), "f" * 64, 3, {}, {})
    assert [dst for _, dst in replaced] == [ckpt.chunk_file(0), ckpt.STATE_FILE]
    assert all(src.startswith(".tmp-") for src, _ in replaced)

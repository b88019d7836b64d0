"""Shared helpers of the benchmark scripts: ESS summaries, time budgets, machine facts.

Import this module *after* the script has set ``OPENBLAS_NUM_THREADS`` (it imports
NumPy and JAX).

ESS conventions (used by ``bench_p1.py`` and documented in
``docs/benchmarks-sampling.md``):

* bulk ESS is ArviZ's rank-normalised, multi-chain ``ess(method="bulk")`` of each
  scalar quantity (a test point of one output, or one projection);
* an element whose draws are constant within *every* chain ("frozen": a chain that
  never moves that quantity) gets ESS 0 (ArviZ would return NaN or a meaningless
  number) and R-hat ``inf``; the number of frozen elements is reported;
* other undefined ESS values (e.g. too few draws) are NaN.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np

#: Seed of the fixed random directions projecting the test-prediction vector; the
#: same directions for every configuration of a run.
OUTPUT_PROJECTION_SEED = 20240604


def _arviz():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        import arviz

    return arviz


def output_directions(dim: int, num: int = 100, seed: int = OUTPUT_PROJECTION_SEED) -> np.ndarray:
    """``num`` fixed Gaussian unit directions in R^dim, shape ``(dim, num)``."""
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((dim, num))
    return directions / np.linalg.norm(directions, axis=0, keepdims=True)


def frozen_elements(values: np.ndarray) -> np.ndarray:
    """Elements of ``(chain, draw, m)`` draws that are constant within every chain, ``(m,)``."""
    return np.all(values.max(axis=1) == values.min(axis=1), axis=0)


def bulk_ess_and_rhat(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bulk ESS and rank-normalised split R-hat of each element of ``(chain, draw, m)`` draws.

    Frozen elements (see :func:`frozen_elements`) get ESS 0 and R-hat ``inf``.
    """
    az = _arviz()
    values = np.asarray(values, dtype=np.float64)
    _, draws, m = values.shape
    if draws < 4:
        nan = np.full(m, math.nan)
        return nan, nan
    dataset = az.convert_to_dataset({"x": values})
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # Short or frozen chains make ArviZ warn and divide by zero; handled below.
        warnings.simplefilter("ignore")
        ess = np.asarray(az.ess(dataset, method="bulk")["x"].values, dtype=np.float64)
        rhat = np.asarray(az.rhat(dataset)["x"].values, dtype=np.float64)
    ess, rhat = ess.reshape(m), rhat.reshape(m)
    frozen = frozen_elements(values)
    ess = np.where(frozen, 0.0, ess)
    rhat = np.where(frozen | ~np.isfinite(rhat), math.inf, rhat)
    return ess, rhat


def ess_summary(
    views: Mapping[str, np.ndarray],
) -> tuple[dict[str, float], dict[str, int], float]:
    """Min and median bulk ESS of several views of the draws.

    Parameters
    ----------
    views : mapping of str to array ``(chain, draw, m)``
        E.g. ``{"f_test/points": ..., "f_test/proj": ...}``.

    Returns
    -------
    ess : dict
        ``"<view>/min"`` and ``"<view>/median"`` (NaN when undefined).
    frozen : dict
        Number of frozen elements per view.
    rhat_max : float
        Largest R-hat over all elements of all views (``inf`` if any is frozen).
    """
    ess, frozen, rhats = {}, {}, []
    for name, values in views.items():
        element_ess, element_rhat = bulk_ess_and_rhat(values)
        finite = element_ess[np.isfinite(element_ess)]
        ess[f"{name}/min"] = float(np.min(finite)) if finite.size else math.nan
        ess[f"{name}/median"] = float(np.median(finite)) if finite.size else math.nan
        frozen[name] = int(np.sum(frozen_elements(np.asarray(values))))
        rhats.append(element_rhat[~np.isnan(element_rhat)])
    defined = np.concatenate(rhats) if rhats else np.zeros(0)
    rhat_max = float(np.max(defined)) if defined.size else math.nan
    return ess, frozen, rhat_max


def per_unit(ess: Mapping[str, float], amount: float) -> dict[str, float]:
    """``ess / amount`` for every entry (NaN when ``amount`` is not positive)."""
    if not amount > 0:
        return {key: math.nan for key in ess}
    return {key: value / amount for key, value in ess.items()}


# -- time budget of wide_bnn.sample -----------------------------------------------------------


@contextlib.contextmanager
def sampling_time_budget(seconds: float | None, warm_iters: int) -> Iterator[dict[str, Any]]:
    """Stop the *sampling* phase of :func:`wide_bnn.sample` after about ``seconds``.

    ``sample`` has no time budget of its own; it does stop cleanly on Ctrl-C during
    sampling (returning the draws so far, ``complete=False``). This wraps the
    engine's per-chunk seam ``wide_bnn.sampling._run_chunk`` and raises
    ``KeyboardInterrupt`` before launching a sampling chunk that would end past the
    budget (predicted from the previous chunk's duration). Warm-up (chunks starting
    before iteration ``warm_iters``) is never interrupted. If the seam is missing
    (the engine changed), the run is simply not budgeted (``info["budgeted"]`` False).
    """
    from wide_bnn import sampling

    info: dict[str, Any] = {"budgeted": False, "stopped": False}
    original = getattr(sampling, "_run_chunk", None)
    if seconds is None or original is None:
        yield info
        return
    info["budgeted"] = True
    clock = {"start": None, "previous": None}

    def budgeted(compiled, states, tunes, start, *rest):
        if int(start) >= warm_iters:
            now = time.perf_counter()
            if clock["start"] is None:
                clock["start"] = now
            else:
                last_chunk = now - clock["previous"]
                if now - clock["start"] + last_chunk > seconds:
                    info["stopped"] = True
                    raise KeyboardInterrupt
            clock["previous"] = now
        return original(compiled, states, tunes, start, *rest)

    sampling._run_chunk = budgeted
    try:
        yield info
    finally:
        sampling._run_chunk = original


# -- machine description ----------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """CPU, cores, load, library versions and thread settings of this run."""
    import blackjax
    import numpyro

    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "load_average_at_start": load,
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "numpyro": numpyro.__version__,
        "blackjax": blackjax.__version__,
        "arviz": _arviz().__version__,
        "numpy": np.__version__,
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "x64": bool(jax.config.jax_enable_x64),
        "git_commit": _git_commit(),
    }


def jsonable(value: Any) -> Any:
    """Nested data with NumPy scalars as Python numbers and non-finite floats as ``None``."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def fmt(value: float | None, digits: int = 3) -> str:
    """Compact number for tables: 3 significant digits, ``-`` for missing, ``inf``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 10 ** (digits - 1):
        return f"{value:.0f}"
    return f"{value:.{digits}g}"

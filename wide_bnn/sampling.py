"""``sample()``: multi-chain MCMC for wide BNNs with recording, progress and checkpoints.

The loop
--------
All chains advance together (``vmap``) on one device; on a CPU they are split into
``threads`` equal groups whose compiled chunks run at the same time on host threads (one
per core), each chain keeping its own keys. A run is a sequence of
*iterations* of ``thinning`` kernel steps each: first ``ceil(num_warmup / thinning)``
warm-up iterations (tuning on, steps beyond ``num_warmup`` skipped), then one iteration
per saved draw. Iterations are executed in *chunks*: one call of a jitted ``lax.scan``
compiled once per run for both phases (the phase only switches branches of
``lax.cond``; a last, shorter chunk is padded with skipped iterations instead of being
recompiled). Between chunks the progress bar is updated, a checkpoint written and
Ctrl-C handled.

Keys follow a fixed schedule: step ``i`` of phase ``p`` (0 warm-up, 1 sampling) of chain
``c`` uses ``fold_in(fold_in(key_c, p), i)`` and the recording of draw ``j`` uses
``fold_in(fold_in(key_c, 2), j)``. So a chunked run is bit-identical to one long scan
and a resumed run to an uninterrupted one.

Recording (test predictions, exact readout draws in collapsed mode, projections)
runs only at the end of a sampling iteration, so a saved draw costs ``thinning``
kernel steps plus one recording.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from wide_bnn import checkpoint as ckpt
from wide_bnn import linalg, units
from wide_bnn.data import RegressionData, checked_host_array
from wide_bnn.linalg import NumericalWarning
from wide_bnn.nets import Network
from wide_bnn.results import SampleResult
from wide_bnn.samplers import (
    SAMPLERS,
    Kernel,
    build_kernel,
    default_sampler,
    resolve_options,
)
from wide_bnn.targets import PARAMETERISATIONS, Target, build_target

__all__ = ["default_threads", "sample"]

#: float32 runs with a noise scale below this warn (log-acceptance errors grow as 1/sigma^2).
FLOAT32_MIN_NOISE_STD = 0.05
_MAX_INIT_ATTEMPTS = 20
# Samplers whose BlackJAX internals are not type-stable for float32 positions under x64.
_NOT_FLOAT32_UNDER_X64 = frozenset({"nuts"})
_DEFAULT_NUM_CHUNKS = 20


def sample(
    net: Network,
    data: RegressionData,
    *,
    x_test: Any = None,
    sampler: str | None = None,
    parameterisation: str = "repriorised",
    collapsed: bool | None = None,
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 1000,
    thinning: int = 1,
    seed: int = 0,
    progress: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    keep_params: bool = False,
    record_train: bool = False,
    num_projections: int = 100,
    chunk_size: int | None = None,
    devices: Any = None,
    data_shards: int = 1,
    threads: int | None = None,
    **sampler_options: Any,
) -> SampleResult:
    """Sample the posterior of a Bayesian neural network; record function-space outputs.

    Parameters
    ----------
    net : Network
        The network (:func:`wide_bnn.mlp`, :func:`wide_bnn.resnet`, ...).
    data : RegressionData
        Training data; its dtype (float32 or float64) is the dtype of the whole run.
    x_test : array_like, shape (m, ...), optional
        Inputs at which outputs are recorded; same feature shape and dtype as
        ``data.x``. ``None`` records at the training inputs (and sets
        ``result.x_test`` to them).
    sampler : str, optional
        A key of :data:`wide_bnn.samplers.SAMPLERS`: ``"nuts"``, ``"hmc"``, ``"mala"``,
        ``"langevin"``, ``"pcn"``, ``"pcnl"``, ``"elliptical"``, ``"block_pcn"`` (hidden
        units in blocks; one-hidden-layer MLPs only). ``None`` picks one from the
        benchmark (:func:`wide_bnn.samplers.default_sampler`): ``"nuts"`` for the
        standard parameterisation; for a repriorised chain whose readout has at least 4
        features per training point ``"block_pcn"`` (one-hidden-layer MLP) or ``"pcn"``
        (other networks, collapsed); ``"hmc"`` otherwise. The choice is in
        ``result.settings["sampler"]``.
    parameterisation : {"repriorised", "standard"}
        Sample the whitened coordinates of :class:`wide_bnn.Repriorisation` or the
        original weights. Both target the same posterior.
    collapsed : bool, optional
        Repriorised only (default ``True`` there, ``False`` for ``"standard"``): run the
        chain on the hidden parameters with the readout integrated out, and draw the
        readout exactly for every saved draw. ``False`` keeps the whitened readout in
        the chain (the paper's sampler).
    num_chains : int
        Chains, run in parallel with ``vmap``.
    num_warmup : int
        Warm-up (tuning) steps per chain, not saved. Ctrl-C during warm-up stops the
        run with ``KeyboardInterrupt`` (there is nothing to return yet).
    num_samples : int
        Saved draws per chain.
    thinning : int
        Kernel steps per saved draw.
    seed : int
        Seed of every random choice; the same seed gives identical results.
    progress : bool
        Show tqdm progress bars (acceptance rate and step size per chunk).
    checkpoint_dir : str or path, optional
        Directory for atomic checkpoints (after warm-up and every chunk). A run with
        the same arguments resumes from it and gives draws bit-identical to an
        uninterrupted run; a checkpoint of another run raises ``ValueError``.
    keep_params : bool
        Also record every parameter (original weight space) as ``params/<path>``.
        Memory grows with the number of weights; off by default.
    record_train : bool
        Also record ``f_train`` and ``f_train_mean`` at the training inputs.
    num_projections : int
        Number of fixed random projections of the parameters recorded per draw.
    chunk_size : int, optional
        Saved draws (and warm-up steps) per compiled chunk; default about 1/20 of
        the run. Smaller chunks mean more frequent progress updates and checkpoints.
    devices : None, "all", int or sequence of jax.Device
        Spread the chains over devices: ``None`` runs everything on JAX's default
        device; ``"all"`` uses ``jax.devices()`` (every device of every host after
        ``jax.distributed.initialize()``), an int ``d`` the first ``d`` of them. The
        chains are split over the ``"chain"`` axis of a device mesh; the data are
        replicated unless ``data_shards > 1``. ``num_chains`` must be a multiple of the
        number of devices. The key schedule is per chain, so the draws do not depend on
        the devices. Several CPU devices: see the multi-device guide (``PJRT_NPROC``).
    data_shards : int
        Also split the ``n`` training points over this many of the ``devices``
        (default 1: every device holds all the data). The devices form a
        ``(len(devices) / data_shards, data_shards)`` mesh with axes ``("chain",
        "data")``: each device computes the features of its block of points and XLA
        sums their Gram / likelihood contributions with an all-reduce, so the
        ``(n, p)`` features, the largest arrays for large ``n``, are limited by the
        total rather than the per-device memory. Needs ``devices``; ``n`` and the
        number of devices must be multiples of ``data_shards``, ``num_chains`` a
        multiple of ``len(devices) / data_shards``. Draws agree with an unsharded
        run up to rounding (sums are taken in another order; see the multi-device
        guide).
    threads : int, optional
        On one device (``devices=None``): split the chains into this many equal groups
        and run the groups at the same time in as many host threads, so that a CPU's
        cores all work (on 2 cores 1.2 to 2.1 times more steps per second). ``None`` (default)
        takes, on a CPU, the largest divisor of ``num_chains`` not above the number of
        cores available to the process, and 1 on an accelerator; ``1`` runs all chains
        in one call. Each chain's key schedule is the same whatever the grouping, but a
        different group size can change the last bits of floating-point results (XLA
        may compile a batch of 2 chains differently from a batch of 4), so identical
        results need the same ``threads`` (``result.settings["threads"]``).
    **sampler_options
        Options of the chosen sampler, e.g. ``step_size``, ``target_acceptance_rate``,
        ``adapt_mass_matrix``, ``max_tree_depth``, ``num_integration_steps``,
        ``alpha``, ``friction``, ``scale``, ``block_size`` (see
        :data:`~wide_bnn.samplers.SAMPLERS`
        ``[name].defaults``; unknown options raise ``ValueError``).

    Returns
    -------
    SampleResult
        ``draws``: ``f_test`` and ``f_test_mean`` ``(chain, draw, test_point, output)``,
        ``projections`` ``(chain, draw, num_projections)``, optional ``f_train``,
        ``f_train_mean`` and ``params/<path>``; ``stats``: ``lp`` (the log target of the
        sampled coordinates), ``acceptance_rate`` (mean over the ``thinning`` steps),
        ``diverging`` (any), ``n_steps``, ``num_grad_evals`` and ``numerical_failures``
        (proposals whose log density could not be evaluated; sums), and where the
        sampler has them ``energy``, ``step_size``, ``tree_depth`` (last step);
        ``timings`` in seconds: ``compile`` (tracing, compilation and the initial states),
        ``warmup`` and ``sampling`` (execution only); ``settings`` include the resolved
        sampler options and the tuned per-chain values (``settings["adapted"]``);
        ``complete=False`` when interrupted by Ctrl-C.

    Raises
    ------
    ValueError
        For invalid arguments, a network that does not map ``data.x`` (or ``x_test``) to
        ``(n, out_dim)`` outputs, or a ``checkpoint_dir`` holding a corrupt checkpoint
        or one of a different run; all raised before anything is compiled.

    Warns
    -----
    NumericalWarning
        For float32 data with ``noise_std < 0.05`` (use float64).
    """
    setup = _setup(
        net,
        data,
        x_test=x_test,
        sampler=sampler,
        parameterisation=parameterisation,
        collapsed=collapsed,
        num_chains=num_chains,
        num_warmup=num_warmup,
        num_samples=num_samples,
        thinning=thinning,
        seed=seed,
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        keep_params=keep_params,
        record_train=record_train,
        num_projections=num_projections,
        chunk_size=chunk_size,
        devices=devices,
        data_shards=data_shards,
        threads=threads,
        sampler_options=sampler_options,
    )
    # Chains split over devices keep batched LAPACK calls (see wide_bnn.linalg).
    split = _several_devices(setup["devices"])
    with linalg.batched_calls() if split else contextlib.nullcontext():
        return _Run(setup).run()


# -- validation -----------------------------------------------------------------------------


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _setup(
    net,
    data,
    *,
    x_test,
    sampler,
    parameterisation,
    collapsed,
    num_chains,
    num_warmup,
    num_samples,
    thinning,
    seed,
    progress,
    checkpoint_dir,
    keep_params,
    record_train,
    num_projections,
    chunk_size,
    devices,
    data_shards,
    sampler_options,
    threads=None,
) -> dict[str, Any]:
    if not isinstance(net, Network):
        raise ValueError(f"net must be a wide_bnn Network, got {type(net).__name__}")
    if not isinstance(data, RegressionData):
        raise ValueError(f"data must be a wide_bnn RegressionData, got {type(data).__name__}")
    if data.out_dim != net.out_dim:
        raise ValueError(
            f"data has {data.out_dim} output(s) (columns of y) but net.out_dim is {net.out_dim}"
        )
    if sampler is not None and (not isinstance(sampler, str) or sampler not in SAMPLERS):
        raise ValueError(f"sampler must be one of {tuple(SAMPLERS)} or None, got {sampler!r}")
    if parameterisation not in PARAMETERISATIONS:
        raise ValueError(
            f"parameterisation must be one of {PARAMETERISATIONS}, got {parameterisation!r}"
        )
    if collapsed is None:
        collapsed = parameterisation == "repriorised"
    collapsed = _check_bool("collapsed", collapsed)
    if collapsed and parameterisation == "standard":
        raise ValueError(
            "collapsed=True integrates the readout out, which needs "
            "parameterisation='repriorised'; use collapsed=False (or None) with 'standard'"
        )
    num_chains = _check_int("num_chains", num_chains, 1)
    num_warmup = _check_int("num_warmup", num_warmup, 0)
    num_samples = _check_int("num_samples", num_samples, 1)
    thinning = _check_int("thinning", thinning, 1)
    num_projections = _check_int("num_projections", num_projections, 1)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if not 0 <= int(seed) < 2**63:
        raise ValueError(f"seed must be in [0, 2**63), got {seed!r}")
    progress = _check_bool("progress", progress)
    keep_params = _check_bool("keep_params", keep_params)
    record_train = _check_bool("record_train", record_train)
    if chunk_size is not None:
        chunk_size = _check_int("chunk_size", chunk_size, 1)
    if checkpoint_dir is not None:
        if not isinstance(checkpoint_dir, str | os.PathLike):
            raise ValueError(f"checkpoint_dir must be a path or None, got {checkpoint_dir!r}")
        checkpoint_dir = os.fspath(checkpoint_dir)
        if os.path.exists(checkpoint_dir) and not os.path.isdir(checkpoint_dir):
            raise ValueError(f"checkpoint_dir={checkpoint_dir!r} exists and is not a directory")
    x_is_train = x_test is None
    if x_test is not None:
        # Checked on the host first: nothing touches a device before the input is valid.
        host = checked_host_array("x_test", x_test)
        if host.ndim != data.x.ndim or host.shape[1:] != data.x.shape[1:]:
            want = ", ".join(str(s) for s in data.x.shape[1:])
            raise ValueError(
                f"x_test must have shape (m, {want}) like the training inputs, got "
                f"{tuple(host.shape)}"
            )
        dtype = jax.dtypes.canonicalize_dtype(host.dtype)
        if dtype != data.dtype:
            raise ValueError(
                f"x_test has dtype {dtype} but the data are {data.dtype}; convert it "
                f"with x_test.astype('{data.dtype}')"
            )
        x_test = jnp.asarray(x_test)
    data_shards = _check_int("data_shards", data_shards, 1)
    devices = _check_devices(devices, num_chains, data_shards)
    if data.num_points % data_shards:
        raise ValueError(
            f"data_shards={data_shards} must divide the number of training points "
            f"({data.num_points}), so that every device holds the same number of them"
        )
    threads = _check_threads(threads, num_chains, devices)
    _check_net_fits(net, data, x_test)
    if sampler is None:
        sampler = default_sampler(
            parameterisation,
            collapsed,
            _num_features(net, data),
            data.num_points,
            has_units=units.supports(net),
        )
    options = resolve_options(sampler, sampler_options)
    if SAMPLERS[sampler].needs_units and not units.supports(net):
        raise ValueError(
            f"sampler={sampler!r} moves the hidden units of a one-hidden-layer MLP in blocks; "
            f"{net.name} has no such units (use wide_bnn.mlp(hidden=(width,)), or "
            "sampler='pcn' for other networks)"
        )
    if (
        sampler in _NOT_FLOAT32_UNDER_X64
        and jnp.dtype(data.dtype) == jnp.float32
        and jax.config.read("jax_enable_x64")
    ):
        raise ValueError(
            f"sampler={sampler!r} cannot run float32 data while jax_enable_x64 is on "
            "(BlackJAX's trajectory code promotes to float64); use float64 data (recommended) "
            "or run float32 with x64 disabled"
        )
    if jnp.dtype(data.dtype) == jnp.float32 and data.noise_std < FLOAT32_MIN_NOISE_STD:
        warnings.warn(
            f"float32 sampling with noise_std={data.noise_std:g} < {FLOAT32_MIN_NOISE_STD}: "
            "log-acceptance ratios lose accuracy as 1/noise_std^2 (errors ~1e-3 at 0.1, "
            "~5e-2 at 0.01); use float64 data (jax_enable_x64) for exact sampling",
            NumericalWarning,
            stacklevel=3,
        )
    setup = {
        "net": net,
        "data": data,
        "x_test": x_test,
        "x_is_train": x_is_train,
        "sampler": sampler,
        "options": options,
        "user_options": dict(sampler_options),
        "parameterisation": parameterisation,
        "collapsed": collapsed,
        "num_chains": num_chains,
        "num_warmup": num_warmup,
        "num_samples": num_samples,
        "thinning": thinning,
        "seed": int(seed),
        "progress": progress,
        "checkpoint_dir": checkpoint_dir,
        "keep_params": keep_params,
        "record_train": record_train,
        "num_projections": num_projections,
        "chunk_size": chunk_size,
        "devices": devices,
        "data_shards": data_shards,
        "threads": threads,
        "config_payload": None,
    }
    if checkpoint_dir is not None:
        # Compare with a checkpoint's configuration now, so that a wrong or corrupt
        # checkpoint_dir fails in seconds rather than after compilation.
        setup["config_payload"] = _config_payload(setup)
        ckpt.check(checkpoint_dir, _hash(setup["config_payload"]))
    # Warn only about a run that will start: a refused one must print its error alone.
    if _several_devices(devices):
        _warn_if_cpu_pool_can_deadlock(devices)
    return setup


def default_threads(num_chains: int) -> int:
    """The chain groups ``sample(threads=None)`` runs at once on one CPU device.

    The largest divisor of ``num_chains`` not above the number of cores this process may
    use, so that every group has the same number of chains.
    """
    cores = _available_cores()
    return max(g for g in range(1, min(cores, num_chains) + 1) if num_chains % g == 0)


def _check_threads(threads: Any, num_chains: int, devices) -> int:
    """Resolve ``threads``: chain groups run at the same time on the default device."""
    if threads is None:
        if devices is not None or jax.default_backend() != "cpu":
            return 1
        return default_threads(num_chains)
    threads = _check_int("threads", threads, 1)
    if devices is not None and threads > 1:
        raise ValueError(
            f"threads={threads} splits the chains on one device; with devices={devices!r} "
            "they are already split over devices: leave threads=None"
        )
    if num_chains % threads:
        raise ValueError(
            f"threads={threads} must divide num_chains={num_chains}, so that every thread "
            "runs the same number of chains"
        )
    return threads


def _available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every OS
        return os.cpu_count() or 1


def _check_devices(
    devices: Any, num_chains: int, data_shards: int = 1
) -> tuple[jax.Device, ...] | None:
    """Resolve ``devices`` to a tuple of distinct devices (``None``: default device)."""
    if devices is None:
        if data_shards > 1:
            raise ValueError(
                f"data_shards={data_shards} needs devices to split the data over; pass "
                "devices='all' or a number of devices"
            )
        return None
    usage = f"devices must be None, 'all', an int or a sequence of jax.Device, got {devices!r}"
    if isinstance(devices, str):
        if devices != "all":
            raise ValueError(usage)
        resolved = tuple(jax.devices())
    elif isinstance(devices, int | np.integer) and not isinstance(devices, bool):
        available = jax.devices()
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"devices={devices} but there are {len(available)} device(s); "
                f"use 1..{len(available)}"
            )
        resolved = tuple(available[: int(devices)])
    else:
        try:
            resolved = tuple(devices)
        except TypeError:
            raise ValueError(usage) from None
        if not resolved or not all(isinstance(d, jax.Device) for d in resolved):
            raise ValueError(usage)
        if len(set(resolved)) != len(resolved):
            raise ValueError(f"devices lists a device twice: {devices!r}")
    if len(resolved) % data_shards:
        raise ValueError(
            f"data_shards={data_shards} must divide the number of devices ({len(resolved)})"
        )
    groups = len(resolved) // data_shards
    if num_chains % groups:
        what = "devices" if data_shards == 1 else "device groups (devices / data_shards)"
        raise ValueError(
            f"num_chains={num_chains} must be a multiple of the number of {what} "
            f"({groups}), so that every device runs the same number of chains"
        )
    return resolved


#: jaxlib releases whose CPU runtime blocks pool threads in collectives and batched LAPACK
#: calls (0.10.0 up to 0.11.0).
_BLOCKING_POOL_JAXLIB = ((0, 10), (0, 11, 0))


class ThreadPoolWarning(RuntimeWarning):
    """XLA's CPU thread pool is small enough for this jaxlib to deadlock in it."""


def _several_devices(devices: tuple[jax.Device, ...] | None) -> bool:
    """Whether a run's chains (and possibly its data) are split over devices."""
    return devices is not None and len(devices) > 1


def _warn_if_cpu_pool_can_deadlock(devices: tuple[jax.Device, ...]) -> None:
    """Warn before a run on several devices that can hang: blocking calls on a small pool.

    All CPU devices of a process share one XLA thread pool with as many threads as cores.
    jaxlib 0.10's batched LAPACK calls and collectives block a pool thread each while they
    wait for work queued on the same pool; when every thread is blocked at once the run
    hangs using no CPU. On one device large LAPACK calls go one matrix at a time
    (:mod:`wide_bnn.linalg`), which runs inline; chains split over several devices keep
    batched calls, and a data split adds collectives. ``PJRT_NPROC`` set before JAX
    starts enlarges the pool. (A data split always spans several devices.)
    """
    local = [d for d in devices if getattr(d, "process_index", 0) == jax.process_index()]
    if not local or any(getattr(d, "platform", None) != "cpu" for d in local):
        return
    if "PJRT_NPROC" in os.environ:
        return
    version = tuple(int(part) for part in jax.lib.__version__.split(".")[:3] if part.isdigit())
    if not any(version[: len(bad)] == bad for bad in _BLOCKING_POOL_JAXLIB):
        return
    threads = 2 * max(len(local), os.cpu_count() or 1)
    warnings.warn(
        f"jaxlib {jax.lib.__version__} on several CPU devices: batched LAPACK calls and "
        "collectives can deadlock XLA's thread pool (one thread per core by default), and "
        "the run then hangs without using CPU. Set the environment variable "
        f"PJRT_NPROC={threads} (or more) before JAX starts; it costs about 10% speed "
        "(docs/guides/multi-device.md)",
        ThreadPoolWarning,
        stacklevel=4,
    )


def _num_features(net: Network, data: RegressionData) -> int:
    """Readout features ``p`` of ``net`` on ``data`` (shapes only: nothing is compiled)."""

    def features(x):
        return net.readout_features(net.init(jax.random.key(0), x)["hidden"], x)

    return int(jax.eval_shape(features, data.x).shape[-1])


def _check_net_fits(net: Network, data: RegressionData, x_test) -> None:
    """Raise ``ValueError`` unless ``net`` maps the inputs to ``(points, out_dim)``.

    Only shapes are traced (:func:`jax.eval_shape`): nothing is compiled or run.
    Catches e.g. an MLP given image-shaped inputs, which would otherwise broadcast
    into outputs of the wrong shape.
    """

    def outputs(x_fit, x_eval):
        return net.apply(net.init(jax.random.key(0), x_fit), x_eval)

    for name, x in (("data.x", data.x), ("x_test", x_test)):
        if x is None:
            continue
        try:
            shape = jax.eval_shape(outputs, data.x, x).shape
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(
                f"net cannot be applied to {name} of shape {tuple(x.shape)}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        want = (x.shape[0], net.out_dim)
        if tuple(shape) != want:
            raise ValueError(
                f"net maps {name} of shape {tuple(x.shape)} to outputs of shape "
                f"{tuple(shape)}, not (points, out_dim) = {want}; check the input shape "
                "the network expects"
            )


# -- the run ---------------------------------------------------------------------------------


def _run_chunk(compiled: Callable, *args):
    """Run one compiled chunk (a seam for tests that simulate Ctrl-C)."""
    return compiled(*args)


def _fold_in(keys, *indices):
    for index in indices:
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, index)
    return keys


def _select(flag, when_true, when_false):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(flag, a, b), when_true, when_false)


def _zeros(shapes):
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _aggregate(stats: dict[str, jax.Array], active: jax.Array) -> dict[str, jax.Array]:
    """Reduce ``(thinning, chains)`` per-step statistics over the active steps."""
    weight = active.astype(jnp.int32)[:, None]
    count = jnp.maximum(jnp.sum(active), 1)
    last = jnp.maximum(jnp.sum(active) - 1, 0)
    out = {}
    for name, value in stats.items():
        if name == "acceptance_rate":
            out[name] = jnp.sum(value * weight, axis=0) / count.astype(value.dtype)
        elif name == "diverging":
            out[name] = jnp.any(value & (weight > 0), axis=0)
        elif name in ("n_steps", "num_grad_evals", "numerical_failures"):
            out[name] = jnp.sum(value * weight, axis=0).astype(value.dtype)
        else:
            out[name] = value[last]
    return out


class _Run:
    """One call of :func:`sample`: builds the pure functions, runs warm-up and sampling."""

    def __init__(self, setup: dict[str, Any]):
        self.s = s = setup
        self.target, self.kernel = self._model(s["data"])
        self.timings = {"compile": 0.0, "warmup": 0.0, "sampling": 0.0}
        self.placement = _Placement(s["devices"], s["data_shards"])
        key_init, key_chains = jax.random.split(jax.random.key(s["seed"]))
        self.key_init = key_init
        self.chain_keys = jax.random.split(key_chains, s["num_chains"])
        # The compiled chunk runs one group of chains; the groups run in parallel threads.
        self.group_size = s["num_chains"] // s["threads"]
        thinning = s["thinning"]
        self.warm_iters = -(-s["num_warmup"] // thinning)
        self.total_iters = self.warm_iters + s["num_samples"]
        default = max(1, math.ceil(s["num_samples"] / _DEFAULT_NUM_CHUNKS))
        self.chunk = min(s["chunk_size"] or default, max(s["num_samples"], self.warm_iters))
        self.schedule = jnp.asarray(self.kernel.schedule(max(s["num_warmup"], 1)))

    def _model(self, data: RegressionData) -> tuple[Target, Kernel]:
        """The target and kernel on ``data`` (concrete, or traced and sharded)."""
        s = self.s
        target = build_target(
            s["net"],
            data,
            parameterisation=s["parameterisation"],
            collapsed=s["collapsed"],
            x_test=s["x_test"],
            record_train=s["record_train"],
            keep_params=s["keep_params"],
            num_projections=s["num_projections"],
        )
        kernel = build_kernel(
            s["sampler"],
            target.logdensity_fn,
            target.loglik_fn,
            target.dim,
            target.dtype,
            s["options"],
            loglik_cache_fn=target.loglik_cache_fn,
            units=target.units,
        )
        return target, kernel

    def _model_on(self, data_arrays):
        # Without data sharding the data are constants of the compiled programs (as
        # they always were); with it they arrive as sharded arguments ``(x, y)``.
        if data_arrays is None:
            return self.target, self.kernel
        return self._model(_with_arrays(self.s["data"], data_arrays))

    # -- pure pieces --------------------------------------------------------------------------
    def _init_states(self, init_keys, state_keys, data_arrays=None):
        target, kernel = self._model_on(data_arrays)
        positions = jax.vmap(target.init_position)(init_keys)
        states = jax.vmap(kernel.init)(state_keys, positions)
        tunes = jax.vmap(lambda _: kernel.adapt_init())(jnp.arange(init_keys.shape[0]))
        return states, jax.vmap(kernel.logdensity)(states), tunes

    def _shapes(self, states, tunes):
        """Shapes of one chain group's per-step statistics and per-draw records."""
        kernel = self.kernel
        keys = self.chain_keys[: self.group_size]
        params = jax.vmap(kernel.adapt_final)(tunes)
        step_stats = jax.vmap(kernel.step)(keys, states, params)[1]
        positions = jax.vmap(kernel.position)(states)
        recorded = jax.vmap(self.target.record, in_axes=(0, 0, None, 0))(
            keys, positions, self.target.record_consts, jax.vmap(kernel.cache)(states)
        )
        return step_stats, recorded

    def _chunk(self, states, tunes, start, stop, chain_keys, schedule, consts, data_arrays):
        """Iterations ``start .. start + chunk`` (those ``>= stop`` skipped) of both phases."""
        target, kernel = self._model_on(data_arrays)
        thinning = self.s["thinning"]
        num_warmup, warm_iters = self.s["num_warmup"], self.warm_iters
        step_shapes, record_shapes = self._shapes_cache

        def kernel_step(carry, t, iteration):
            states, tunes = carry
            warm = iteration < warm_iters
            warm_step = iteration * thinning + t
            sample_step = (iteration - warm_iters) * thinning + t
            # During warm-up the tuned values move every step; afterwards they are frozen
            # and the final (averaged) ones are used.
            params = _select(
                warm,
                jax.vmap(kernel.adapt_params)(tunes),
                jax.vmap(kernel.adapt_final)(tunes),
            )
            phase = jnp.where(warm, 0, 1)
            index = jnp.where(warm, warm_step, sample_step)
            states, stats = jax.vmap(kernel.step)(
                _fold_in(chain_keys, phase, index), states, params
            )

            def tune(tunes):
                stage = schedule[jnp.minimum(warm_step, num_warmup - 1)]
                positions = jax.vmap(kernel.position)(states)
                return jax.vmap(kernel.adapt_update, in_axes=(0, None, 0, 0))(
                    tunes, stage, positions, stats["acceptance_rate"]
                )

            tunes = jax.lax.cond(warm, tune, lambda tunes: tunes, tunes)
            return (states, tunes), stats

        def one_iteration(carry, iteration):
            warm = iteration < warm_iters

            def inner(carry, t):
                active = ~warm | (iteration * thinning + t < num_warmup)
                return jax.lax.cond(
                    active,
                    lambda c: (*kernel_step(c, t, iteration), jnp.ones((), bool)),
                    lambda c: (c, _zeros(step_shapes), jnp.zeros((), bool)),
                    carry,
                )

            def scanned(carry, t):
                carry, stats, active = inner(carry, t)
                return carry, (stats, active)

            carry, (stats, active) = jax.lax.scan(
                scanned, carry, jnp.arange(thinning, dtype=jnp.int32)
            )
            stats = _aggregate(stats, active)
            states = carry[0]
            stats["lp"] = jax.vmap(kernel.logdensity)(states)

            def record(states):
                positions = jax.vmap(kernel.position)(states)
                draw = iteration - warm_iters
                keys = _fold_in(chain_keys, 2, draw)
                # Kernels that keep the factorisation of their state (pCN) spare the
                # recording a second one.
                caches = jax.vmap(kernel.cache)(states)
                return jax.vmap(target.record, in_axes=(0, 0, None, 0))(
                    keys, positions, consts, caches
                )

            recorded = jax.lax.cond(warm, lambda st: _zeros(record_shapes), record, states)
            return carry, (recorded, stats)

        def body(carry, offset):
            iteration = start + offset
            skipped = (_zeros(record_shapes), self._stat_zeros)
            return jax.lax.cond(
                iteration < stop,
                one_iteration,
                lambda c, i: (c, skipped),
                carry,
                iteration,
            )

        (states, tunes), outputs = jax.lax.scan(
            body, (states, tunes), jnp.arange(self.chunk, dtype=jnp.int32)
        )
        return states, tunes, outputs

    # -- driver ----------------------------------------------------------------------------------
    def run(self) -> SampleResult:
        s = self.s
        chains = s["num_chains"]
        key_positions, key_states = jax.random.split(self.key_init)
        init_keys = jax.random.split(key_positions, chains)
        state_keys = jax.random.split(key_states, chains)
        t0 = time.perf_counter()
        # Everything the chunk function needs is known from shapes alone, so it is
        # lowered first and compiled in a background thread (XLA releases the GIL) while
        # the initial states are computed: the two compilations overlap.
        state_shapes, _, tune_shapes = jax.eval_shape(self._init_states, init_keys, state_keys)
        state_shapes, tune_shapes = _leading((state_shapes, tune_shapes), self.group_size)
        self._shapes_cache = jax.eval_shape(self._shapes, state_shapes, tune_shapes)
        step_shapes, record_shapes = self._shapes_cache
        self._stat_zeros = _zeros(
            {
                **jax.eval_shape(_aggregate, _stacked(step_shapes), jnp.ones((1,), bool)),
                "lp": jax.eval_shape(jax.vmap(self.kernel.logdensity), state_shapes),
            }
        )
        draw_names, stat_names = tuple(record_shapes), tuple(self._stat_zeros)
        consts = self.target.record_consts
        place = self.placement
        chain_keys = place.chains(self.chain_keys)
        schedule, consts = place.replicated((self.schedule, consts))
        data_arrays = place.data((s["data"].x, s["data"].y))
        groups = _chain_slices(chain_keys, s["threads"])
        lowered = place.jit(self._chunk).lower(
            place.chain_shapes(state_shapes),
            place.chain_shapes(tune_shapes),
            np.int32(0),
            np.int32(0),
            groups[0],
            schedule,
            consts,
            data_arrays,
        )
        directory = s["checkpoint_dir"]
        pool = ThreadPoolExecutor(max_workers=1)
        try:
            # With a checkpoint to validate, compile only once it is known to be usable.
            future = None if directory is not None else pool.submit(lowered.compile)
            states, init_lp, tunes = self._initial_states(
                init_keys, state_keys, key_positions, data_arrays
            )
            fingerprint = self._fingerprint(states, init_lp)
            draws: dict[str, list[np.ndarray]] = {n: [] for n in draw_names}
            stats: dict[str, list[np.ndarray]] = {n: [] for n in stat_names}
            done = None
            if directory is not None:
                os.makedirs(directory, exist_ok=True)
                ckpt.remove_stale_temporaries(directory)
                restored = ckpt.read(directory, fingerprint, states, tunes, draw_names, stat_names)
                if restored is not None:
                    states, tunes, done = restored.states, restored.tuning, restored.num_draws
                    for name in draw_names:
                        draws[name] = [restored.draws[name]] if done else []
                    for name in stat_names:
                        stats[name] = [restored.stats[name]] if done else []
            states, tunes = place.chains((states, tunes))
            compiled = lowered.compile() if future is None else future.result()
        finally:
            # On an error do not wait for a compilation nobody will use.
            pool.shutdown(wait=False)
        self.timings["compile"] += time.perf_counter() - t0

        def run_group(group, states, tunes, start, stop):
            return _run_chunk(
                compiled,
                states,
                tunes,
                np.int32(start),
                np.int32(stop),
                groups[group],
                schedule,
                consts,
                data_arrays,
            )

        workers = ThreadPoolExecutor(max_workers=len(groups)) if len(groups) > 1 else None

        def run_chunk(states, tunes, start, stop):
            if workers is None:
                return run_group(0, states, tunes, start, stop)
            # XLA releases the GIL while a compiled program runs, so the groups use
            # separate cores. A Ctrl-C while waiting leaves the running group calls to
            # finish in the background; their results are dropped.
            parts = _split_chains((states, tunes), len(groups))
            futures = [
                workers.submit(run_group, g, *part, start, stop) for g, part in enumerate(parts)
            ]
            return _join_chains([f.result() for f in futures])

        try:
            if done is None:
                states, tunes = self._warmup(run_chunk, states, tunes)
                done = 0
                if directory is not None:
                    self._write_state(fingerprint, 0, states, tunes)
            complete = self._sample(run_chunk, states, tunes, done, draws, stats, fingerprint)
        finally:
            if workers is not None:
                workers.shutdown(wait=False)
        params = _to_host(jax.jit(jax.vmap(self.kernel.adapt_final))(tunes))
        return self._result(draws, stats, record_shapes, params, complete)

    def _initial_states(self, init_keys, state_keys, key_positions, data_arrays):
        chains = self.s["num_chains"]
        init = jax.jit(self._init_states)
        states, lp, tunes = init(init_keys, state_keys, data_arrays)
        # Rarely a prior draw overflows (deep nets, float32) or its factorisation fails:
        # redraw only those chains, from a fixed key sequence.
        for attempt in range(1, _MAX_INIT_ATTEMPTS + 1):
            bad = ~np.isfinite(np.asarray(lp))
            if not bad.any():
                break
            retry_keys = jax.random.split(jax.random.fold_in(key_positions, attempt), chains)
            new_states, new_lp, _ = init(retry_keys, state_keys, data_arrays)
            mask = jnp.asarray(bad)
            states = jax.tree_util.tree_map(
                lambda new, old, mask=mask: jnp.where(
                    mask.reshape((-1,) + (1,) * (new.ndim - 1)), new, old
                ),
                new_states,
                states,
            )
            lp = jnp.where(mask, new_lp, lp)
        if not np.all(np.isfinite(np.asarray(lp))):
            raise ValueError(
                "could not find initial positions with a finite log-density in "
                f"{_MAX_INIT_ATTEMPTS} prior draws: the network outputs overflow or the "
                "factorisation fails; use float64 data or a larger noise_std"
            )
        return states, lp, tunes

    def _fingerprint(self, states, init_lp) -> str:
        """The configuration payload plus the initial positions, hashed."""
        positions = jax.vmap(self.kernel.position)(states)
        payload = self.s["config_payload"] or _config_payload(self.s)
        return _hash({**payload, "init": _digest(positions, init_lp)})

    def _write_state(self, fingerprint, num_draws, states, tunes) -> None:
        # A collective on several hosts: every process gathers, process 0 writes.
        states, tunes = _to_host((states, tunes))
        if _is_writer():
            config = _hash(self.s["config_payload"])
            ckpt.write_state(
                self.s["checkpoint_dir"],
                fingerprint,
                num_draws,
                states,
                tunes,
                config_fingerprint=config,
            )

    def _warmup(self, run_chunk, states, tunes):
        if self.warm_iters == 0:
            return states, tunes
        bar = _bar(self.s["progress"], self.s["num_warmup"], "warmup")
        t0 = time.perf_counter()
        try:
            for start in range(0, self.warm_iters, self.chunk):
                states, tunes, (_, stats) = run_chunk(states, tunes, start, self.warm_iters)
                count = min(self.chunk, self.warm_iters - start) * self.s["thinning"]
                count = min(count, self.s["num_warmup"] - start * self.s["thinning"])
                stats = _to_host(stats)
                _update_bar(
                    bar, _chunk_summary(stats, min(self.chunk, self.warm_iters - start)), count
                )
            jax.block_until_ready(states)
        finally:
            self.timings["warmup"] += time.perf_counter() - t0
            if bar is not None:
                bar.close()
        return states, tunes

    def _sample(self, run_chunk, states, tunes, done, draws, stats, fingerprint) -> bool:
        s = self.s
        num_samples = s["num_samples"]
        if done >= num_samples:
            return True
        bar = _bar(s["progress"], num_samples, "sampling", initial=done)
        directory = s["checkpoint_dir"]
        t0 = time.perf_counter()
        try:
            for first in range(done, num_samples, self.chunk):
                start = self.warm_iters + first
                states, tunes, (recorded, chunk_stats) = run_chunk(
                    states, tunes, start, self.total_iters
                )
                count = min(self.chunk, num_samples - first)
                recorded, chunk_stats = _to_host((recorded, chunk_stats))
                recorded = {k: np.swapaxes(v[:count], 0, 1) for k, v in recorded.items()}
                chunk_stats = {k: np.swapaxes(v[:count], 0, 1) for k, v in chunk_stats.items()}
                for name, value in recorded.items():
                    draws[name].append(value)
                for name, value in chunk_stats.items():
                    stats[name].append(value)
                if directory is not None:
                    if _is_writer():
                        ckpt.write_chunk(directory, first, recorded, chunk_stats)
                    self._write_state(fingerprint, first + count, states, tunes)
                _update_bar(bar, _chunk_summary(chunk_stats), count)
        except KeyboardInterrupt:
            return False
        finally:
            self.timings["sampling"] += time.perf_counter() - t0
            if bar is not None:
                bar.close()
        return True

    # -- result --------------------------------------------------------------------------------
    def _settings_core(self) -> dict[str, Any]:
        return _settings_core(self.s)

    def _result(self, draws, stats, record_shapes, params, complete) -> SampleResult:
        s = self.s
        chains = s["num_chains"]
        stat_shapes = self._stat_zeros

        def assemble(pieces, shapes):
            # shapes are per iteration, (chains, ...)
            out = {}
            for name, parts in pieces.items():
                if parts:
                    out[name] = np.concatenate(parts, axis=1)
                else:
                    shape = shapes[name].shape
                    out[name] = np.zeros((chains, 0, *shape[1:]), shapes[name].dtype)
            return out

        draws = assemble(draws, record_shapes)
        stats = assemble(stats, stat_shapes)
        net, data, rp = s["net"], s["data"], self.target.repriorisation
        spec = net.spec
        settings = self._settings_core()
        settings.update(
            {
                "chunk_size": self.chunk,
                "network": net.name,
                "widths": None if spec is None else list(spec.hidden),
                "noise_std": float(data.noise_std),
                "dtype": str(jnp.dtype(data.dtype)),
                "num_params": int(sum(np.prod(p.shape) for p in _param_shapes(net, data))),
                "dim": self.target.dim,
                "route": rp.route,
                "threads": s["threads"],
                "x_test_is_train": s["x_is_train"],
                "adapted": {
                    name: np.asarray(value).tolist()
                    for name, value in params.items()
                    if np.ndim(value) == 1
                },
            }
        )
        x_test = np.asarray(data.x if s["x_is_train"] else s["x_test"])
        return SampleResult(
            draws=draws,
            stats=stats,
            x_test=x_test,
            settings=settings,
            timings=dict(self.timings),
            complete=complete,
            data=data,
        )


def _settings_core(s: dict[str, Any]) -> dict[str, Any]:
    """The arguments that determine a run's draws (JSON-serialisable)."""
    return {
        "sampler": s["sampler"],
        "sampler_options": {k: _jsonable(v) for k, v in s["options"].items()},
        "parameterisation": s["parameterisation"],
        "collapsed": s["collapsed"],
        "num_chains": s["num_chains"],
        "num_warmup": s["num_warmup"],
        "num_samples": s["num_samples"],
        "thinning": s["thinning"],
        "seed": s["seed"],
        "num_projections": s["num_projections"],
        "keep_params": s["keep_params"],
        "record_train": s["record_train"],
    }


def _leading(tree, size):
    """Shapes of ``tree`` with the leading (chain) axis of every leaf set to ``size``."""
    return jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct((size, *s.shape[1:]), s.dtype), tree
    )


def _chain_slices(tree, num_groups):
    """``num_groups`` trees holding consecutive equal slices of every leaf's chain axis."""
    size = jax.tree_util.tree_leaves(tree)[0].shape[0] // num_groups
    return [
        jax.tree_util.tree_map(lambda leaf, g=g: leaf[g * size : (g + 1) * size], tree)
        for g in range(num_groups)
    ]


#: :func:`_chain_slices` in one dispatch per chunk instead of one per leaf.
_split_chains = jax.jit(_chain_slices, static_argnums=1)


@jax.jit
def _join_chains(parts):
    """Inverse of :func:`_chain_slices` for chunk outputs ``(states, tunes, per_draw)``.

    States and tuning have the chain axis first; per-draw outputs are ``(chunk, chain, ...)``.
    """
    chain_first = [(states, tunes) for states, tunes, _ in parts]
    per_draw = [outputs for _, _, outputs in parts]
    states, tunes = jax.tree_util.tree_map(lambda *leaves: jnp.concatenate(leaves), *chain_first)
    outputs = jax.tree_util.tree_map(lambda *leaves: jnp.concatenate(leaves, axis=1), *per_draw)
    return states, tunes, outputs


def _config_payload(s: dict[str, Any]) -> dict[str, Any]:
    """Everything a checkpoint must agree on that is known before compilation."""
    net, data = s["net"], s["data"]
    spec = net.spec
    net_desc = [net.name, net.out_dim, net.out_w_std, net.out_b_std]
    if spec is not None:
        net_desc.append([list(spec.hidden), spec.activation.name, spec.w_std, spec.b_std])
    return {
        "version": _library_version(),
        "settings": _settings_core(s),
        "net": net_desc,
        "data": _digest(data.x, data.y, np.asarray(data.noise_std)),
        "x_test": None if s["x_test"] is None else _digest(s["x_test"]),
    }


def _hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class _Placement:
    """Where arrays live: JAX's default device, or a ``("chain", "data")`` mesh.

    On a mesh, arrays with a leading chain axis (states, tuning, keys) are split over
    its ``"chain"`` axis, the training data (with ``data_shards > 1``) over its
    ``"data"`` axis, everything else (constants, schedule) is replicated, and the
    compiled chunk returns its per-draw outputs ``(chunk, chains, ...)`` split along
    the chain axis. XLA propagates the data split to the features and inserts the
    all-reduces of their Gram / likelihood sums. Arrays are built from host copies
    with :func:`jax.make_array_from_callback`, which works unchanged on several hosts.
    """

    def __init__(self, devices: tuple[jax.Device, ...] | None, data_shards: int = 1):
        self.mesh = None
        self.shards_data = data_shards > 1
        if devices is not None:
            grid = np.asarray(devices).reshape(len(devices) // data_shards, data_shards)
            self.mesh = Mesh(grid, ("chain", "data"))

    def _sharding(self, *spec):
        return NamedSharding(self.mesh, PartitionSpec(*spec))

    def chains(self, tree):
        """Split the leading (chain) axis of every leaf over the mesh."""
        return tree if self.mesh is None else _put(tree, self._sharding("chain"))

    def replicated(self, tree):
        """A copy of every leaf on every device of the mesh."""
        return tree if self.mesh is None else _put(tree, self._sharding())

    def data(self, arrays):
        """The training arrays split along their first (point) axis, or ``None``.

        ``None`` (no data sharding) keeps them constants of the compiled programs.
        """
        return _put(arrays, self._sharding("data")) if self.shards_data else None

    def chain_shapes(self, shapes):
        """``ShapeDtypeStruct`` leaves carrying the chain sharding (for lowering)."""
        if self.mesh is None:
            return shapes
        sharding = self._sharding("chain")
        return jax.tree_util.tree_map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes
        )

    def jit(self, chunk_fn):
        """``jax.jit`` of the chunk function with chain-split outputs on a mesh."""
        if self.mesh is None:
            return jax.jit(chunk_fn)
        chains, per_draw = self._sharding("chain"), self._sharding(None, "chain")
        # (states, tunes, (recorded, stats)); pytree prefixes cover every leaf.
        return jax.jit(chunk_fn, out_shardings=(chains, chains, per_draw))


def _with_arrays(data: RegressionData, arrays) -> RegressionData:
    """``data`` with its ``x`` and ``y`` replaced (traced or sharded), unvalidated."""
    x, y = arrays
    # The noise scale stays a concrete number: the targets read it as a float.
    return RegressionData.tree_unflatten(data.y_is_vector, (x, y, data.noise_std))


def _put(tree, sharding):
    def put(leaf):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = put(jax.random.key_data(leaf))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        # A global array (e.g. initial states computed with data split over hosts) is
        # gathered first; every process then fills its own devices' shards.
        host = _to_host(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(put, tree)


def _to_host(tree):
    """NumPy copies of every leaf; gathers across hosts when a leaf spans several."""

    def get(leaf):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return leaf  # typed keys have no NumPy form; checkpoints store their key_data
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return np.asarray(jax.device_get(leaf))

    return jax.tree_util.tree_map(get, tree)


def _is_writer() -> bool:
    # On several hosts exactly one process writes checkpoint files.
    return jax.process_index() == 0


def _stacked(shapes):
    # Per-step shapes with a leading thinning axis of length one.
    return jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct((1, *s.shape), s.dtype), shapes)


def _chunk_summary(stats, count=None):
    """Mean acceptance, divergences and mean step size of a chunk's ``(draw, chain)`` stats."""
    if count is not None:
        stats = {k: np.asarray(v)[:count] for k, v in stats.items()}
    step = stats.get("step_size")
    return {
        "acceptance_rate": float(np.mean(stats["acceptance_rate"])),
        "diverging": int(np.sum(stats["diverging"])),
        "step_size": float(np.mean(step)) if step is not None else float("nan"),
    }


def _bar(enabled, total, desc, initial=0):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, initial=initial, leave=True, dynamic_ncols=True)


def _update_bar(bar, summary, count):
    if bar is None:
        return
    postfix = {"acc": f"{summary['acceptance_rate']:.2f}"}
    if np.isfinite(summary["step_size"]):
        postfix["step"] = f"{summary['step_size']:.3g}"
    if summary["diverging"]:
        postfix["div"] = summary["diverging"]
    bar.set_postfix(postfix, refresh=False)
    bar.update(count)


def _param_shapes(net, data):
    return jax.tree_util.tree_leaves(jax.eval_shape(net.init, jax.random.key(0), data.x))


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    return value


def _library_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wide-bnn")
    except PackageNotFoundError:  # pragma: no cover - source checkout without install
        return "unknown"

"""P1 sampling benchmark: ESS per draw, per gradient and per second of every sampler, one run.

Runs side by side, in one process, per width of a one-hidden-layer GELU MLP (w_std
sqrt(2), b_std 0.1, readout 1.0 / 0.1, NTK parameterisation, noise_std 0.1, float64,
4 chains) on problem P1 (``datasets.teacher()``: n_train 64, 32 test points, d_in 16)
or on the digits one-hot regression (``--dataset digits``: n_train 256, 10 outputs):

==================  =========================================================================
configuration       what runs
==================  =========================================================================
reprior-<s>         ``wide_bnn.sample(sampler=s)``, repriorised, collapsed (readout drawn
                    exactly per saved draw), for s in nuts, hmc, mala, langevin, pcn, pcnl,
                    elliptical, block-pcn (``block_pcn``); default options (warm-up tuning)
reprior-ref-dual    ``wide_bnn.sample(sampler="langevin", collapsed=False,
                    **LANGEVIN_REFERENCE)``: the authors' sampler (step 0.1, refresh 0.01)
                    on the non-collapsed chain, auto route (dual when p > n)
authors             the same sampler on the same non-collapsed target through the *primal*
                    route (the (p, p) Cholesky every step, as the reference code): built here
                    from ``Repriorisation(route="primal")`` + ``samplers.build_kernel``
                    because ``sample`` cannot choose the route
std-nuts            ``wide_bnn.sample(sampler="nuts", parameterisation="standard")``
std-langevin        the same with ``sampler="langevin"`` (step size tuned, target 0.9)
std-pcn             the same with ``sampler="pcn"`` (scale tuned)
std-block-pcn       the same with ``sampler="block_pcn"`` (scale tuned)
numpyro-nuts        NumPyro's ``NUTS(model)`` with its defaults on the model written below
                    (standard parameterisation, N(0, 1) priors, NTK scaling); each chain a
                    jitted scan, ``--threads`` chains at a time in host threads
control             hidden parameters frozen at each chain's prior draw, readout drawn
                    exactly per draw (what a sampler that never moves the hidden layer
                    reports): every working sampler must beat it on the metrics below
==================  =========================================================================

Metrics (bulk ESS, ArviZ, rank-normalised, all chains; see _common.py and
docs/benchmarks-sampling.md): for ``f_test`` (network outputs at the test inputs with
the readout of the draw) and ``f_test_mean`` (``E[f(x_test) | hidden]``) the min and
median over test points x outputs ("points") and over 100 fixed Gaussian directions
of the test-prediction vector ("proj", the same directions for every configuration);
``weights/proj``: the library's 100 fixed projections of all weights. Each ESS is
divided by the draws (all chains), by the log-density / gradient evaluations of the
sampling phase (all chains) and by the sampling wall time (seconds; compile and
warm-up reported separately). Also: max R-hat over all those elements, mean
acceptance, gradients per draw.

The ``authors`` configuration deadlocked XLA's CPU thread pool from width 512 on 2 cores
(jaxlib 0.10, batched primal-route Cholesky) until the chains' LAPACK calls were made one
matrix at a time (docs/guides/multi-device.md); the width-512 figures in the docs were
measured with ``PJRT_NPROC=8``.

Cores: every configuration runs its chains in ``--threads`` groups at the same time, in
host threads (default: the largest divisor of ``--chains`` not above the core count):
``wide_bnn.sample(threads=...)``, and the same grouping for NumPyro, the authors'
configuration and the control, so that ratios compare samplers on the same cores.

Run lengths: every configuration takes up to ``--num-samples`` draws per chain, and
its sampling phase stops at ``--budget`` seconds (``--slow-budget`` for the slow
baselines std-nuts, numpyro-nuts and authors, which are skipped above
``--slow-max-width``). The NUTS configurations and the authors' burn-in get a shorter
warm-up (``--slow-warmup`` up to width 512, halved per doubling above, at least 50);
the others ``--num-warmup`` kernel steps. Per-second metrics are comparable whatever
the number of draws; rows with fewer than 20 draws per chain report no ESS.

Usage::

    python benchmarks/bench_p1.py --out p1.json                      # full run (teacher)
    python benchmarks/bench_p1.py --dataset digits --out digits.json
    python benchmarks/bench_p1.py --quick --out smoke.json           # widths 32 128, short

JSON schema (``--out``; ``null`` = undefined, e.g. the R-hat of a frozen chain)::

    {
      "schema": "wide_bnn-bench-p1/1",
      "command": str, "machine": {cpu, cores, load_average_at_start, versions, ...},
      "settings": {dataset, widths, num_chains, num_warmup, num_samples, ...},
      "runs": [                                   # one per (dataset, width, config)
        {"dataset": str, "width": int, "config": str, "label": str,
         "sampler": str|null, "parameterisation": str, "collapsed": bool, "route": str,
         "num_chains": int, "num_warmup": int, "num_draws": int (per chain),
         "thinning": int, "complete": bool (false: stopped by the time budget),
         "compile_s": float, "warmup_s": float, "sampling_s": float, "wall_s": float,
         "num_grad_evals": int (sampling, all chains), "grads_per_draw": float,
         "ms_per_step": float (sampling wall time per kernel step, all chains),
         "acceptance": float, "step_size": float|null, "rhat_max": float|null,
         "ess":          {"<quantity>/<view>/<stat>": float, ...},
         "ess_per_draw": {same keys}, "ess_per_grad": {same keys},
         "ess_per_s":    {same keys},
         "frozen":       {"<quantity>/<view>": int (elements constant in every chain)},
         "ratio_vs_numpyro_nuts": {same keys as ess_per_s} (ESS/s ratio),
         "ratio_vs_std_nuts":     {same keys},
         "ratio_vs_best_anchor": float|null (ESS/s f_test min over the best anchor of
                                 BENCHMARKS.md at this width; teacher only),
         "notes": [str]}
      ],
      "targets": [{"check": str, "value": float|null, "threshold": float|null,
                   "passed": bool|null}]
    }

with quantity in ``f_test``, ``f_test_mean``, ``weights``; view in ``points``,
``proj``; stat in ``min``, ``median`` (``weights`` has ``proj`` only).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import dataclasses
import itertools
import json
import math
import shlex
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from _common import (
    ess_summary,
    fmt,
    jsonable,
    machine_info,
    output_directions,
    per_unit,
    sampling_time_budget,
)
from jax.flatten_util import ravel_pytree
from numpyro.infer import NUTS

from wide_bnn import datasets
from wide_bnn.nets import mlp
from wide_bnn.reprior import Repriorisation
from wide_bnn.samplers import LANGEVIN_REFERENCE, build_kernel
from wide_bnn.sampling import default_threads, sample
from wide_bnn.targets import project, projection

SCHEMA = "wide_bnn-bench-p1/1"
W_STD, B_STD, OUT_W_STD, OUT_B_STD = math.sqrt(2.0), 0.1, 1.0, 0.1
NUM_PROJECTIONS = 100
#: Fewer saved draws per chain than this: no ESS is reported (NaN).
MIN_DRAWS = 20
#: Rows whose largest R-hat exceeds this are flagged and never picked as "best".
RHAT_UNMIXED = 1.1

#: Best of the three anchors of BENCHMARKS.md (P1, ESS/s on f_test), per width.
ANCHOR_ESS_PER_S = {32: 90.0, 128: 127.0, 512: 16.0, 1024: 14.2, 2048: 1.7}
#: NumPyro NUTS (defaults, standard parameterisation) in BENCHMARKS.md, ESS/s on f_test.
NUMPYRO_ANCHOR_ESS_PER_S = {32: 65.0, 128: 43.0, 512: 16.0, 1024: 14.2, 2048: 1.7}


@dataclasses.dataclass(frozen=True)
class Config:
    """One column of the benchmark."""

    name: str
    kind: str  # "wide_bnn" | "authors" | "numpyro" | "control"
    label: str
    sampler: str | None = None
    parameterisation: str = "repriorised"
    collapsed: bool = True
    options: tuple = ()
    one_step: bool = False  # one leapfrog per step: saved draws are thinned
    short_warmup: bool = False  # expensive warm-up iterations: --slow-warmup schedule
    baseline: bool = False  # slow baseline: --slow-budget, skipped above --slow-max-width

    @property
    def is_repriorised_sampler(self) -> bool:
        return self.kind in ("wide_bnn", "authors") and self.parameterisation == "repriorised"


_REF = tuple(sorted(LANGEVIN_REFERENCE.items()))

CONFIGS = (
    Config("reprior-nuts", "wide_bnn", "NUTS, repriorised, collapsed", "nuts", short_warmup=True),
    Config("reprior-hmc", "wide_bnn", "HMC 10 steps, repriorised, collapsed", "hmc"),
    Config("reprior-mala", "wide_bnn", "MALA, repriorised, collapsed", "mala", one_step=True),
    Config(
        "reprior-langevin",
        "wide_bnn",
        "Langevin (tuned), repriorised, collapsed",
        "langevin",
        one_step=True,
    ),
    Config("reprior-pcn", "wide_bnn", "pCN, repriorised, collapsed", "pcn"),
    Config("reprior-pcnl", "wide_bnn", "pCN-Langevin, repriorised, collapsed", "pcnl"),
    Config(
        "reprior-block-pcn",
        "wide_bnn",
        "block pCN (blocks of hidden units), repriorised, collapsed",
        "block_pcn",
    ),
    Config(
        "reprior-elliptical", "wide_bnn", "elliptical slice, repriorised, collapsed", "elliptical"
    ),
    Config(
        "reprior-ref-dual",
        "wide_bnn",
        "Langevin step 0.1 refresh 0.01, repriorised, non-collapsed, auto route",
        "langevin",
        collapsed=False,
        options=_REF,
        one_step=True,
    ),
    Config(
        "authors",
        "authors",
        "authors' configuration: Langevin 0.1 / 0.01, non-collapsed, primal route",
        "langevin",
        collapsed=False,
        options=_REF,
        one_step=True,
        short_warmup=True,
        baseline=True,
    ),
    Config(
        "std-nuts",
        "wide_bnn",
        "NUTS, standard parameterisation",
        "nuts",
        "standard",
        collapsed=False,
        short_warmup=True,
        baseline=True,
    ),
    Config(
        "std-langevin",
        "wide_bnn",
        "Langevin (tuned), standard parameterisation",
        "langevin",
        "standard",
        collapsed=False,
        one_step=True,
    ),
    Config(
        "std-pcn", "wide_bnn", "pCN, standard parameterisation", "pcn", "standard", collapsed=False
    ),
    Config(
        "std-block-pcn",
        "wide_bnn",
        "block pCN, standard parameterisation",
        "block_pcn",
        "standard",
        collapsed=False,
    ),
    Config(
        "numpyro-nuts",
        "numpyro",
        "NumPyro NUTS (defaults), standard parameterisation",
        "nuts",
        "standard",
        collapsed=False,
        short_warmup=True,
        baseline=True,
    ),
    Config(
        "control",
        "control",
        "control: hidden frozen at the initial prior draw",
        None,
        collapsed=True,
    ),
)
CONFIG_NAMES = tuple(c.name for c in CONFIGS)
BASELINES = ("numpyro-nuts", "std-nuts")


@dataclasses.dataclass(frozen=True)
class Plan:
    """Run lengths of one configuration."""

    num_warmup: int  # kernel steps
    num_samples: int  # saved draws per chain (at most)
    thinning: int
    budget: float | None  # seconds of sampling (all chains)


def plan_for(cfg: Config, args, width: int) -> Plan:
    thinning = args.step_thinning if cfg.one_step else 1
    warmup = args.num_warmup
    if cfg.short_warmup:
        # NUTS costs tens (repriorised) to ~1000 (standard) gradients per warm-up
        # iteration, the primal route a (p, p) Cholesky per step, and both grow with the
        # width: a shorter warm-up, halved per doubling above width 512 (at least 50).
        warmup = min(warmup, args.slow_warmup)
        if width > 512:
            warmup = max(min(warmup, 50), round(warmup * 512 / width))
    budget = min(args.budget, args.slow_budget) if cfg.baseline else args.budget
    if cfg.kind == "control":
        warmup, thinning = 0, 1
    return Plan(warmup, args.num_samples, thinning, budget)


# -- problem --------------------------------------------------------------------------------------


def load_problem(name: str, n_test: int | None):
    if name == "teacher":
        ds = datasets.teacher(n_test=n_test or 32)
    else:
        ds = datasets.load("digits", n_train=256, n_test=n_test or 32)
    data = ds.train_data(np.float64)
    x_test = ds.test_inputs(np.float64)
    return ds, data, x_test


def make_net(width: int, out_dim: int):
    return mlp(
        (width,),
        out_dim,
        "gelu",
        w_std=W_STD,
        b_std=B_STD,
        out_w_std=OUT_W_STD,
        out_b_std=OUT_B_STD,
    )


def record_draw(net, cond, hidden, readout_matrix, x_test, proj):
    """What every configuration records per saved draw (as ``wide_bnn.sample`` does)."""
    psi_test = net.readout_features(hidden, x_test)
    params = {"hidden": hidden, "readout": net.readout_from_matrix(readout_matrix)}
    return {
        "f_test": psi_test @ readout_matrix,
        "f_test_mean": jnp.where(cond.ok, cond.predict_mean(psi_test), jnp.nan),
        "projections": project(proj, ravel_pytree(params)[0]),
    }


# -- driver for vmapped chains (authors' configuration, control) ----------------------------------


def chunked(one, length):
    """A jittable ``chunk(carry, start, count)``: ``one(carry, start + t)`` for ``t < count``.

    ``one(carry, index) -> (carry, out)`` is one iteration; the chunk scans ``length``
    iterations and skips (at no cost) those at or beyond ``count``, so one compiled
    function serves every chunk size up to ``length``. Outputs are stacked, first axis
    ``length`` (skipped entries are zeros).
    """

    def chunk(carry, start, count):
        out_shape = jax.eval_shape(one, carry, start)[1]

        def skip(carry):
            return carry, jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), out_shape)

        def body(carry, t):
            return jax.lax.cond(t < count, lambda c: one(c, start + t), skip, carry)

        return jax.lax.scan(body, carry, jnp.arange(length, dtype=jnp.int32))

    return chunk


def budgeted_loop(run, total, max_chunk, budget):
    """Call ``run(start, count)`` until ``total`` units are done or ``budget`` seconds are used.

    Chunk sizes adapt to the measured time per unit (one unit first), so that a chunk
    takes about a tenth of the budget and the budget is not overrun by more than one
    unit. Returns the outputs of the calls, the units done, whether all were done, and
    the seconds spent.
    """
    outputs, done, per_unit = [], 0, None
    start = time.perf_counter()
    while done < total:
        count = min(max_chunk, total - done)
        if budget is not None:
            elapsed = time.perf_counter() - start
            if per_unit is None:
                count = 1
            else:
                count = min(count, max(1, int(0.1 * budget / per_unit)))
                count = min(count, int((budget - elapsed) / per_unit))
                if count < 1:
                    break
        t0 = time.perf_counter()
        outputs.append(run(done, count))
        spent = time.perf_counter() - t0
        per_unit = spent / count if per_unit is None else 0.5 * (per_unit + spent / count)
        done += count
    return outputs, done, done >= total, time.perf_counter() - start


def _stack_chunks(outputs, *, chains_second=True):
    """Concatenate ``(out, count)`` chunk outputs along their first axis (the iteration).

    With ``chains_second`` (vmapped chains) the result is moved to ``(chain, draw, ...)``.
    """
    pieces = [jax.tree_util.tree_map(lambda a, n=count: a[:n], out) for out, count in outputs]
    stacked = jax.tree_util.tree_map(lambda *a: np.concatenate(a), *pieces)
    if not chains_second:
        return stacked
    return jax.tree_util.tree_map(lambda a: np.swapaxes(a, 0, 1), stacked)


def run_vmapped(*, init_fn, step_fn, record_fn, chains, plan: Plan, seed, warmup_budget, threads):
    """Chunked, jitted multi-chain loop with time budgets; returns draws, stats, timings.

    ``init_fn(key) -> state``, ``step_fn(key, state) -> (state, {"acceptance_rate",
    "num_grad_evals"})``, ``record_fn(key, state) -> dict``; all single-chain. Keys:
    step ``i`` of phase ``p`` (0 warm-up, 1 sampling) of chain ``c`` uses
    ``fold_in(fold_in(key_c, p), i)``, the recording of draw ``j`` phase 2. The chains
    run vmapped in ``threads`` equal groups, the groups at the same time in host threads
    (as ``wide_bnn.sample(threads=...)`` does).
    """
    timings = {"compile": 0.0, "warmup": 0.0, "sampling": 0.0}
    chain_keys = jax.random.split(jax.random.key(seed), chains)
    fold = jax.vmap(jax.random.fold_in, in_axes=(0, None))
    thinning = plan.thinning
    draw_chunk = max(1, min(50, math.ceil(plan.num_samples / 20)))
    warm_chunk = max(1, min(plan.num_warmup, 50))

    def warm_one(carry, index):
        keys, states = carry
        states = jax.vmap(step_fn)(fold(fold(keys, 0), index), states)[0]
        return (keys, states), None

    def draw_one(carry, index):
        keys, states = carry

        def inner(states, t):
            return jax.vmap(step_fn)(fold(fold(keys, 1), index * thinning + t), states)

        states, stats = jax.lax.scan(inner, states, jnp.arange(thinning, dtype=jnp.int32))
        stats = {
            "acceptance_rate": jnp.mean(stats["acceptance_rate"], axis=0),
            "num_grad_evals": jnp.sum(stats["num_grad_evals"], axis=0),
        }
        recorded = jax.vmap(record_fn)(fold(fold(keys, 2), index), states)
        return (keys, states), (recorded, stats)

    t0 = time.perf_counter()
    states = jax.block_until_ready(jax.jit(jax.vmap(init_fn))(fold(chain_keys, 3)))
    size = chains // threads
    carries = [
        jax.tree_util.tree_map(lambda a, g=g: a[g * size : (g + 1) * size], (chain_keys, states))
        for g in range(threads)
    ]
    zero = np.int32(0)
    warm_c = None
    if plan.num_warmup:
        warm_c = jax.jit(chunked(warm_one, warm_chunk)).lower(carries[0], zero, zero).compile()
    draw_c = jax.jit(chunked(draw_one, draw_chunk)).lower(carries[0], zero, zero).compile()
    timings["compile"] = time.perf_counter() - t0

    def run_groups(compiled, start, count):
        with ThreadPoolExecutor(max_workers=threads) as pool:
            futures = [
                pool.submit(compiled, carry, np.int32(start), np.int32(count)) for carry in carries
            ]
            results = jax.block_until_ready([f.result() for f in futures])
        carries[:] = [carry for carry, _ in results]
        return [out for _, out in results]

    def run_warm(start, count):
        run_groups(warm_c, start, count)

    def run_draws(start, count):
        outs = jax.device_get(run_groups(draw_c, start, count))
        joined = jax.tree_util.tree_map(lambda *parts: np.concatenate(parts, axis=1), *outs)
        return joined, count

    _, done_warm, _, timings["warmup"] = budgeted_loop(
        run_warm, plan.num_warmup, warm_chunk, warmup_budget
    )
    outputs, _, complete, timings["sampling"] = budgeted_loop(
        run_draws, plan.num_samples, draw_chunk, plan.budget
    )
    recorded, stats = _stack_chunks(outputs)
    return recorded, stats, timings, {"warmup_steps": done_warm, "complete": complete}


def run_authors(cfg, net, data, x_test, plan, args):
    """Langevin step 0.1 / refresh 0.01 on the non-collapsed target, primal route."""
    rp = Repriorisation(net, data, route="primal")
    shapes = jax.eval_shape(net.init, jax.random.key(0), data.x)
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    flat, unravel = ravel_pytree(zeros)
    dim = flat.size
    proj = projection(dim, NUM_PROJECTIONS, np.float64)

    def logdensity(position):
        return rp.log_density(unravel(position))

    def loglik(position):  # unused by the Langevin kernel
        return logdensity(position) + 0.5 * jnp.sum(position**2)

    kernel = build_kernel("langevin", logdensity, loglik, dim, jnp.float64, dict(cfg.options))

    def init_fn(key):
        key_position, key_state = jax.random.split(key)
        return kernel.init(key_state, jax.random.normal(key_position, (dim,), jnp.float64))

    def step_fn(key, state):
        params = kernel.adapt_final(kernel.adapt_init())  # fixed step, refresh, identity mass
        state, stats = kernel.step(key, state, params)
        return state, {k: stats[k] for k in ("acceptance_rate", "num_grad_evals")}

    def record_fn(key, state):
        del key
        phi = unravel(kernel.position(state))
        cond = rp.conditional(phi["hidden"])  # primal factorisation
        readout = cond.transform(net.readout_matrix(phi["readout"]))
        return record_draw(net, cond, phi["hidden"], readout, x_test, proj)

    recorded, stats, timings, info = run_vmapped(
        init_fn=init_fn,
        step_fn=step_fn,
        record_fn=record_fn,
        chains=args.chains,
        plan=plan,
        seed=args.seed,
        warmup_budget=plan.budget,
        threads=args.threads,
    )
    return recorded, stats, timings, info | {"route": rp.route, "step_size": 0.1}


def run_control(cfg, net, data, x_test, plan, args):
    """Hidden parameters frozen at each chain's prior draw; exact readout per draw."""
    rp = Repriorisation(net, data)
    num_params = ravel_pytree(net.init(jax.random.key(0), data.x))[0].size
    proj = projection(num_params, NUM_PROJECTIONS, np.float64)

    def init_fn(key):
        return net.init(key, data.x)["hidden"]

    def step_fn(key, hidden):
        del key
        zero = jnp.zeros((), jnp.float64)
        return hidden, {"acceptance_rate": zero, "num_grad_evals": jnp.zeros((), jnp.int32)}

    def record_fn(key, hidden):
        cond = rp.conditional(hidden)
        return record_draw(net, cond, hidden, cond.sample(key), x_test, proj)

    recorded, stats, timings, info = run_vmapped(
        init_fn=init_fn,
        step_fn=step_fn,
        record_fn=record_fn,
        chains=args.chains,
        plan=plan,
        seed=args.seed,
        warmup_budget=None,
        threads=args.threads,
    )
    return recorded, stats, timings, info | {"route": rp.route, "step_size": None}


# -- NumPyro --------------------------------------------------------------------------------------


def numpyro_forward(z, x):
    """The network of the NumPyro model: ``z`` holds the four weight arrays (N(0, 1))."""
    in_dim, width = z["w_hidden"].shape
    pre = (W_STD / math.sqrt(in_dim)) * (x @ z["w_hidden"]) + B_STD * z["b_hidden"]
    h = jax.nn.gelu(pre, approximate=False)  # exact: x Phi(x)
    return (OUT_W_STD / math.sqrt(width)) * (h @ z["w_out"]) + OUT_B_STD * z["b_out"]


def numpyro_model(in_dim, width, out_dim, noise_std):
    """What a NumPyro user writes for this BNN: N(0, 1) weights, NTK scaling in the layers."""

    def std_normal(*shape):
        return dist.Normal(jnp.zeros(shape), 1.0).to_event(len(shape))

    def model(x, y):
        z = {
            "w_hidden": numpyro.sample("w_hidden", std_normal(in_dim, width)),
            "b_hidden": numpyro.sample("b_hidden", std_normal(width)),
            "w_out": numpyro.sample("w_out", std_normal(width, out_dim)),
            "b_out": numpyro.sample("b_out", std_normal(out_dim)),
        }
        f = numpyro_forward(z, x)
        numpyro.sample("y", dist.Normal(f, noise_std).to_event(2), obs=y)

    return model


def _numpyro_params(z):
    return {
        "hidden": [{"w": z["w_hidden"], "b": z["b_hidden"]}],
        "readout": {"w": z["w_out"], "b": z["b_out"]},
    }


def run_numpyro(cfg, net, data, x_test, plan, args):
    """NumPyro NUTS, default settings; each chain a jitted scan, ``--threads`` at a time."""
    in_dim, width, out_dim = data.x.shape[1], net.spec.hidden[0], data.out_dim
    model = numpyro_model(in_dim, width, out_dim, float(data.noise_std))
    # The model's network must be the library's network exactly.
    z0 = {
        "w_hidden": jax.random.normal(jax.random.key(1), (in_dim, width)),
        "b_hidden": jax.random.normal(jax.random.key(2), (width,)),
        "w_out": jax.random.normal(jax.random.key(3), (width, out_dim)),
        "b_out": jax.random.normal(jax.random.key(4), (out_dim,)),
    }
    np.testing.assert_allclose(
        numpyro_forward(z0, data.x),
        net.apply(_numpyro_params(z0), data.x),
        rtol=1e-10,
        atol=1e-12,
    )
    rp = Repriorisation(net, data)
    num_params = ravel_pytree(_numpyro_params(z0))[0].size
    proj = projection(num_params, NUM_PROJECTIONS, np.float64)
    kernel = NUTS(model)
    model_args = (data.x, data.y)
    draw_chunk = max(1, min(50, math.ceil(plan.num_samples / 20)))
    warm_chunk = max(1, min(plan.num_warmup, 50))

    def record(z):
        params = _numpyro_params(z)
        cond = rp.conditional(params["hidden"])
        return record_draw(
            net, cond, params["hidden"], net.readout_matrix(params["readout"]), x_test, proj
        )

    def warm_one(state, index):
        del index  # NumPyro's state carries its key and adapts while state.i < num_warmup
        return kernel.sample(state, model_args, {}), None

    def draw_one(state, index):
        del index
        state = kernel.sample(state, model_args, {})
        stats = {"acceptance_rate": state.accept_prob, "num_grad_evals": state.num_steps}
        return state, (record(state.z), stats)

    timings = {"compile": 0.0, "warmup": 0.0, "sampling": 0.0}
    # Each thread runs chains one after another; per-chain budget so that the threads
    # together use about the whole sampling budget.
    chain_budget = None if plan.budget is None else plan.budget * args.threads / args.chains
    zero = np.int32(0)
    t0 = time.perf_counter()
    carries = [
        {
            "state": kernel.init(
                jax.random.fold_in(jax.random.key(args.seed), chain),
                plan.num_warmup,
                model_args=model_args,
            )
        }
        for chain in range(args.chains)
    ]
    compiled = {
        "draws": jax.jit(chunked(draw_one, draw_chunk))
        .lower(carries[0]["state"], zero, zero)
        .compile()
    }
    if plan.num_warmup:
        compiled["warm"] = (
            jax.jit(chunked(warm_one, warm_chunk)).lower(carries[0]["state"], zero, zero).compile()
        )
    timings["compile"] = time.perf_counter() - t0

    def warm_chain(carry):
        def run_warm(start, count):
            carry["state"] = jax.block_until_ready(
                compiled["warm"](carry["state"], np.int32(start), np.int32(count))[0]
            )

        # NumPyro adapts while state.i < num_warmup: the warm-up always runs to its end.
        budgeted_loop(run_warm, plan.num_warmup, warm_chunk, None)

    def sample_chain(carry):
        def run_draws(start, count):
            carry["state"], out = compiled["draws"](
                carry["state"], np.int32(start), np.int32(count)
            )
            return jax.device_get(out), count

        outputs, _, done_all, _ = budgeted_loop(
            run_draws, plan.num_samples, draw_chunk, chain_budget
        )
        return _stack_chunks(outputs, chains_second=False), done_all  # (draw, ...)

    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        t0 = time.perf_counter()
        list(pool.map(warm_chain, carries))
        timings["warmup"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        results = list(pool.map(sample_chain, carries))
        timings["sampling"] = time.perf_counter() - t0
    per_chain = [draws for draws, _ in results]
    complete = all(done for _, done in results)
    # Chains may have run different numbers of draws: keep the common length.
    num_draws = min(c[1]["acceptance_rate"].shape[0] for c in per_chain)
    recorded, stats = jax.tree_util.tree_map(
        lambda *a: np.stack([x[:num_draws] for x in a]), *per_chain
    )
    info = {"warmup_steps": plan.num_warmup, "complete": complete, "route": "-"}
    info["step_size"] = float(np.mean([c["state"].adapt_state.step_size for c in carries]))
    return recorded, stats, timings, info


# -- wide_bnn.sample ------------------------------------------------------------------------------


def run_wide_bnn(cfg, net, data, x_test, plan, args):
    warm_iters = -(-plan.num_warmup // plan.thinning)
    # The budget is checked between chunks (wide_bnn's default is 1/20 of the draws):
    # expensive configurations get small chunks, cheap ones keep the per-chunk overhead low.
    # Chunks of a few milliseconds would measure the per-chunk overhead (host copies,
    # thread dispatch: 1-3 ms), not the sampler: only the NUTS configurations, whose draws
    # take up to seconds at large width, get small chunks.
    width = max(net.spec.hidden)
    chunk_size = 50 if width <= 128 else 25
    if cfg.short_warmup:
        chunk_size = 5 if width <= 128 else 1
    with sampling_time_budget(plan.budget, warm_iters) as budget:
        result = sample(
            net,
            data,
            x_test=x_test,
            sampler=cfg.sampler,
            parameterisation=cfg.parameterisation,
            collapsed=cfg.collapsed,
            num_chains=args.chains,
            num_warmup=plan.num_warmup,
            num_samples=plan.num_samples,
            thinning=plan.thinning,
            seed=args.seed,
            progress=False,
            num_projections=NUM_PROJECTIONS,
            chunk_size=chunk_size,
            threads=args.threads,
            **dict(cfg.options),
        )
    step = result.stats.get("step_size")
    info = {
        "warmup_steps": plan.num_warmup,
        "complete": bool(result.complete),
        "route": result.settings.get("route", "?"),
        "step_size": None if step is None else float(np.mean(step)),
    }
    if plan.budget is not None and not budget["budgeted"]:
        info["note"] = "time budget unavailable (wide_bnn.sampling._run_chunk missing)"
    draws = {k: result.draws[k] for k in ("f_test", "f_test_mean", "projections")}
    stats = {k: result.stats[k] for k in ("acceptance_rate", "num_grad_evals")}
    return draws, stats, dict(result.timings), info


RUNNERS = {
    "wide_bnn": run_wide_bnn,
    "authors": run_authors,
    "numpyro": run_numpyro,
    "control": run_control,
}


# -- metrics --------------------------------------------------------------------------------------


def summarise(cfg, plan, draws, stats, timings, info, directions, args, width, dataset, wall):
    chains, num_draws = draws["f_test"].shape[:2]
    f = np.asarray(draws["f_test"]).reshape(chains, num_draws, -1)
    fm = np.asarray(draws["f_test_mean"]).reshape(chains, num_draws, -1)
    views = {
        "f_test/points": f,
        "f_test/proj": f @ directions,
        "f_test_mean/points": fm,
        "f_test_mean/proj": fm @ directions,
        "weights/proj": np.asarray(draws["projections"]),
    }
    ess, frozen, rhat_max = ess_summary(views)
    if num_draws < MIN_DRAWS:
        # ArviZ returns ~N for a handful of draws: an ESS from them would flatter the row.
        ess = {key: math.nan for key in ess}
    grads = int(np.sum(stats["num_grad_evals"]))
    seconds = float(timings["sampling"])
    total_draws = chains * num_draws
    notes = []
    if info.get("note"):
        notes.append(info["note"])
    if frozen["f_test_mean/points"]:
        notes.append(
            f"f_test_mean frozen within every chain at {frozen['f_test_mean/points']} elements: "
            "ESS reported as 0 (undefined), R-hat inf"
        )
    if num_draws < MIN_DRAWS:
        notes.append(f"only {num_draws} draws per chain (< {MIN_DRAWS}): ESS not estimated")
    elif num_draws < 100:
        notes.append(f"only {num_draws} draws per chain: ESS estimates are rough")
    if not info["complete"]:
        notes.append(f"stopped by the {plan.budget:g} s sampling budget")
    if grads == 0:
        notes.append("no log-density evaluations: ESS per gradient undefined")
    if not rhat_max <= RHAT_UNMIXED:
        notes.append(
            f"max R-hat {fmt(rhat_max)} > {RHAT_UNMIXED}: the chains disagree, ESS values "
            "are not meaningful"
        )
    return {
        "dataset": dataset,
        "width": width,
        "config": cfg.name,
        "label": cfg.label,
        "sampler": cfg.sampler,
        "parameterisation": cfg.parameterisation,
        "collapsed": cfg.collapsed,
        "options": dict(cfg.options),
        "route": info["route"],
        "num_chains": chains,
        "num_warmup": int(info["warmup_steps"]),
        "num_draws": num_draws,
        "thinning": plan.thinning,
        "budget_s": plan.budget,
        "complete": bool(info["complete"]),
        "compile_s": float(timings["compile"]),
        "warmup_s": float(timings["warmup"]),
        "sampling_s": seconds,
        "wall_s": wall,
        "num_grad_evals": grads,
        "grads_per_draw": grads / total_draws,
        "ms_per_step": 1e3 * seconds / (num_draws * plan.thinning),
        "acceptance": float(np.mean(stats["acceptance_rate"])),
        "step_size": info.get("step_size"),
        "rhat_max": rhat_max,
        "ess": ess,
        "ess_per_draw": per_unit(ess, total_draws),
        "ess_per_grad": per_unit(ess, grads),
        "ess_per_s": per_unit(ess, seconds),
        "frozen": frozen,
        "notes": notes,
    }


def add_ratios(rows, anchor=None):
    """ESS/s ratios of every row to the baselines of the same width (and to ``anchor``)."""
    by_name = {row["config"]: row for row in rows}
    for row in rows:
        value = row["ess_per_s"]["f_test/points/min"]
        row["ratio_vs_best_anchor"] = value / anchor if anchor else math.nan
        for base in BASELINES:
            key = "ratio_vs_" + base.replace("-", "_")
            ref = by_name.get(base)
            row[key] = {}
            for metric, value in row["ess_per_s"].items():
                denom = None if ref is None else ref["ess_per_s"].get(metric)
                ok = denom is not None and math.isfinite(denom) and denom > 0
                row[key][metric] = value / denom if ok else math.nan


# -- output ---------------------------------------------------------------------------------------


def print_tables(rows, dataset, width):
    def line(cells):
        print("| " + " | ".join(cells) + " |")

    print(f"\n### {dataset}, width {width}: ESS per draw / per gradient, costs\n")
    line(
        [
            "config",
            "draws/chain",
            "grads/draw",
            "acc",
            "R-hat max",
            "f_test min pts",
            "f_test med pts",
            "f_test min proj",
            "f_mean min pts",
            "f_mean min proj",
            "weights min proj",
            "ESS/grad f_test min pts",
            "compile s",
            "warm-up s",
            "sampling s",
        ]
    )
    line(["---"] * 15)
    for r in rows:
        d, g = r["ess_per_draw"], r["ess_per_grad"]
        line(
            [
                r["config"],
                str(r["num_draws"]),
                fmt(r["grads_per_draw"]),
                fmt(r["acceptance"], 2),
                fmt(r["rhat_max"]),
                fmt(d["f_test/points/min"]),
                fmt(d["f_test/points/median"]),
                fmt(d["f_test/proj/min"]),
                fmt(d["f_test_mean/points/min"]),
                fmt(d["f_test_mean/proj/min"]),
                fmt(d["weights/proj/min"]),
                fmt(g["f_test/points/min"]),
                fmt(r["compile_s"]),
                fmt(r["warmup_s"]),
                fmt(r["sampling_s"]),
            ]
        )
    print(f"\n### {dataset}, width {width}: ESS per second of sampling, and ratios\n")
    line(
        [
            "config",
            "f_test min pts",
            "f_test med pts",
            "f_test min proj",
            "f_mean min pts",
            "f_mean min proj",
            "x numpyro-nuts (f_test min)",
            "x std-nuts (f_test min)",
            "x numpyro-nuts (f_mean min)",
            "x std-nuts (f_mean min)",
            "x best anchor (f_test min)",
        ]
    )
    line(["---"] * 11)
    for r in rows:
        s, rn, rs = r["ess_per_s"], r["ratio_vs_numpyro_nuts"], r["ratio_vs_std_nuts"]
        line(
            [
                r["config"],
                fmt(s["f_test/points/min"]),
                fmt(s["f_test/points/median"]),
                fmt(s["f_test/proj/min"]),
                fmt(s["f_test_mean/points/min"]),
                fmt(s["f_test_mean/proj/min"]),
                fmt(rn["f_test/points/min"]),
                fmt(rs["f_test/points/min"]),
                fmt(rn["f_test_mean/points/min"]),
                fmt(rs["f_test_mean/points/min"]),
                fmt(r["ratio_vs_best_anchor"]),
            ]
        )
    notes = [(r["config"], n) for r in rows for n in r["notes"]]
    if notes:
        print()
        for name, note in notes:
            print(f"- {name}: {note}")
    sys.stdout.flush()


def _best(rows, metric):
    candidates = [
        r
        for r in rows
        if r["config"].startswith("reprior-")
        and math.isfinite(r["ess_per_s"][metric])
        and r["rhat_max"] <= RHAT_UNMIXED
    ]
    return max(candidates, key=lambda r: r["ess_per_s"][metric]) if candidates else None


def target_checks(all_rows, dataset):
    """The BENCHMARKS.md targets, evaluated on this run (anchors only for P1)."""
    checks = []

    def add(check, value, threshold, passed=None):
        if passed is None and value is not None and threshold is not None:
            passed = bool(value >= threshold) if math.isfinite(value) else False
        checks.append({"check": check, "value": value, "threshold": threshold, "passed": passed})

    widths = sorted({r["width"] for r in all_rows})
    key, key_mean = "f_test/points/min", "f_test_mean/points/min"
    advantage = []
    for width in widths:
        rows = [r for r in all_rows if r["width"] == width]
        best = _best(rows, key)
        if best is None:
            continue
        value = best["ess_per_s"][key]
        numpyro = next((r for r in rows if r["config"] == "numpyro-nuts"), None)
        std = next((r for r in rows if r["config"] == "std-nuts"), None)
        baseline = math.nan if numpyro is None else numpyro["ess_per_s"][key]
        source = "measured"
        if not (math.isfinite(baseline) and baseline > 0) and dataset == "teacher":
            baseline, source = NUMPYRO_ANCHOR_ESS_PER_S.get(width, math.nan), "anchor"
        if math.isfinite(baseline) and baseline > 0:
            advantage.append((width, value / baseline, source))
        anchors = []
        if dataset == "teacher" and width in ANCHOR_ESS_PER_S:
            anchors.append(ANCHOR_ESS_PER_S[width])
        anchors += [r["ess_per_s"][key] for r in (numpyro, std) if r is not None]
        anchors = [a for a in anchors if math.isfinite(a)]
        if anchors:
            add(
                f"width {width}: best ESS/s f_test min ({best['config']}) >= best anchor "
                "(BENCHMARKS.md table and this run's NumPyro / standard NUTS)",
                value,
                max(anchors),
            )
        if width != 1024:
            continue
        if dataset == "teacher":
            add(
                "width 1024: ESS/s f_test min >= 100 x 14.2 (NumPyro NUTS anchor)",
                value,
                100 * NUMPYRO_ANCHOR_ESS_PER_S[1024],
            )
        if std is not None:
            add(
                "width 1024: ESS/s f_test min >= 50 x std-nuts (this run)",
                value,
                50 * std["ess_per_s"][key],
            )
        add(
            f"width 1024: ESS/draw f_test min of {best['config']} >= 0.6",
            best["ess_per_draw"][key],
            0.6,
        )
        best_mean = _best(rows, key_mean)
        if best_mean is not None:
            add(
                f"width 1024: ESS/s f_test_mean min ({best_mean['config']}) >= 400",
                best_mean["ess_per_s"][key_mean],
                400.0,
            )
    if len(advantage) >= 2:
        grows = all(b[1] >= a[1] for a, b in itertools.pairwise(advantage))
        add(
            "advantage over NumPyro NUTS (best ESS/s f_test min / NumPyro's) grows with width: "
            + ", ".join(f"{w}: {fmt(a)}x ({src})" for w, a, src in advantage),
            None,
            None,
            grows,
        )
    for control in (r for r in all_rows if r["config"] == "control"):
        rows = [r for r in all_rows if r["width"] == control["width"]]
        best = _best(rows, key)
        frozen = control["ess"]["f_test_mean/points/min"] == 0
        flagged = not control["rhat_max"] <= RHAT_UNMIXED
        # Without a converged sampler (every R-hat > 1.1) there is no reliable ESS to
        # compare with: that criterion is undetermined, not failed.
        lower = None
        if best is not None:
            control_ess = control["ess_per_draw"]["f_test/proj/min"]
            lower = control_ess < best["ess_per_draw"]["f_test/proj/min"]
        add(
            f"width {control['width']}: control told apart (f_test_mean ESS 0: {frozen}, "
            f"R-hat > {RHAT_UNMIXED}: {flagged}, min ESS/draw over f_test projections below "
            f"the best sampler's: {'no sampler with R-hat <= 1.1' if lower is None else lower})",
            None,
            None,
            frozen and flagged and lower,  # None (undetermined) when only `lower` is None
        )
    return checks


def csv_rows(rows):
    """Flat rows for ``--csv`` (the columns ``docs/make_figures.py`` reads, and more).

    ``sampler`` holds the configuration name so that every configuration is its own line
    in the figure; ``f_test_ess_per_s_min`` etc. are over test points, ``*_proj_*`` over
    the projections.
    """
    out = []
    for r in rows:
        flat = {
            "dataset": r["dataset"],
            "width": r["width"],
            "config": r["config"],
            "parameterisation": "control" if r["config"] == "control" else r["parameterisation"],
            "sampler": r["config"],
            "collapsed": r["collapsed"],
            "route": r["route"],
            "num_draws": r["num_draws"],
            "thinning": r["thinning"],
            "complete": r["complete"],
            "grads_per_draw": r["grads_per_draw"],
            "acceptance": r["acceptance"],
            "rhat_max": r["rhat_max"],
            "compile_s": r["compile_s"],
            "warmup_s": r["warmup_s"],
            "sampling_s": r["sampling_s"],
        }
        for metric in ("ess", "ess_per_draw", "ess_per_grad", "ess_per_s"):
            for key, value in r[metric].items():
                quantity, view, stat = key.split("/")
                middle = "" if view == "points" else f"_{view}"
                flat[f"{quantity}{middle}_{metric}_{stat}"] = value
        out.append(flat)
    return out


def write_csv(path, rows):
    import csv

    flat = csv_rows(rows)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(flat[0]))
        writer.writeheader()
        for row in flat:
            writer.writerow({k: "" if v is None else v for k, v in jsonable(row).items()})


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("teacher", "digits"), default="teacher")
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 128, 512, 1024, 2048])
    parser.add_argument(
        "--samplers",
        nargs="+",
        default=list(CONFIG_NAMES),
        choices=CONFIG_NAMES,
        metavar="CONFIG",
        help=f"configurations to run (default all): {', '.join(CONFIG_NAMES)}",
    )
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="chain groups run at the same time in host threads, for every configuration "
        "(default: the largest divisor of --chains not above the number of cores)",
    )
    parser.add_argument("--num-warmup", type=int, default=300, help="warm-up kernel steps")
    parser.add_argument("--num-samples", type=int, default=1000, help="saved draws per chain")
    parser.add_argument(
        "--step-thinning",
        type=int,
        default=5,
        help="kernel steps per saved draw of the one-leapfrog samplers "
        "(mala, langevin, the authors' configuration)",
    )
    parser.add_argument(
        "--slow-warmup",
        type=int,
        default=100,
        help="warm-up of the NUTS configurations and burn-in of authors up to width 512 "
        "(halved per doubling above, at least 50)",
    )
    parser.add_argument(
        "--slow-budget",
        type=float,
        default=30.0,
        help="seconds of sampling (all chains) of std-nuts, numpyro-nuts and authors",
    )
    parser.add_argument(
        "--budget", type=float, default=30.0, help="seconds of sampling cap of every configuration"
    )
    parser.add_argument(
        "--slow-max-width",
        type=int,
        default=1024,
        help="skip std-nuts, numpyro-nuts and authors above this width (their warm-up alone "
        "takes many minutes at 2048; BENCHMARKS.md has anchors there)",
    )
    parser.add_argument(
        "--compilation-cache",
        default=None,
        metavar="DIR",
        help="JAX persistent compilation cache: reruns compile in seconds (compile times "
        "reported are then cache loads)",
    )
    parser.add_argument("--n-test", type=int, default=None, help="test points (default 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON results file")
    parser.add_argument(
        "--csv", default=None, help="also a flat CSV, one row per run (docs/make_figures.py)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: widths 32 128, 100 warm-up, 200 draws, 10 s budgets "
        "(explicit --widths still apply)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        if "--widths" not in (argv if argv is not None else sys.argv):
            args.widths = [32, 128]
        args.num_warmup, args.num_samples = min(args.num_warmup, 100), min(args.num_samples, 200)
        args.slow_warmup = min(args.slow_warmup, 50)
        args.budget, args.slow_budget = min(args.budget, 20.0), min(args.slow_budget, 10.0)
    if args.chains < 2:
        parser.error("--chains must be >= 2 (R-hat and multi-chain ESS)")
    if args.threads is None:
        args.threads = default_threads(args.chains)
    if args.threads < 1 or args.chains % args.threads:
        parser.error("--threads must be a positive divisor of --chains")
    return args


def main(argv=None):
    args = parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # a script, not the library: it owns the config
    if args.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    warnings.filterwarnings("ignore", category=FutureWarning)
    _, data, x_test = load_problem(args.dataset, args.n_test)
    out_dim = data.out_dim
    directions = output_directions(x_test.shape[0] * out_dim, NUM_PROJECTIONS)
    configs = [c for c in CONFIGS if c.name in args.samplers]
    machine = machine_info()
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *sys.argv[1:]])
    print(f"# {command}")
    print(
        f"# {machine['cpu']}, {machine['cores']} cores, load {machine['load_average_at_start']}, "
        f"jax {machine['jax']}, numpyro {machine['numpyro']}, blackjax {machine['blackjax']}, "
        f"arviz {machine['arviz']}, OPENBLAS_NUM_THREADS={machine['openblas_num_threads']}"
    )
    print(
        f"# {args.dataset}: n_train {data.num_points}, n_test {x_test.shape[0]}, outputs "
        f"{out_dim}, d_in {data.x.shape[1]}, noise_std {data.noise_std}; MLP 1 hidden layer gelu, "
        f"float64, {args.chains} chains in {args.threads} threads; warm-up {args.num_warmup} "
        f"(slow {args.slow_warmup}), "
        f"draws {args.num_samples}, one-step thinning {args.step_thinning}, budgets "
        f"{args.budget:g} s (slow {args.slow_budget:g} s)",
        flush=True,
    )
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "csv")}
    settings["n_train"], settings["n_test"] = data.num_points, int(x_test.shape[0])
    settings["out_dim"], settings["noise_std"] = out_dim, float(data.noise_std)
    report = {
        "schema": SCHEMA,
        "command": command,
        "machine": machine,
        "settings": settings,
        "runs": [],
        "targets": [],
    }
    start = time.perf_counter()
    for width in args.widths:
        net = make_net(width, out_dim)
        rows = []
        for cfg in configs:
            if cfg.baseline and width > args.slow_max_width:
                print(f"# width {width} {cfg.name}: skipped (--slow-max-width)", flush=True)
                continue
            plan = plan_for(cfg, args, width)
            t0 = time.perf_counter()
            draws, stats, timings, info = RUNNERS[cfg.kind](cfg, net, data, x_test, plan, args)
            wall = time.perf_counter() - t0
            row = summarise(
                cfg, plan, draws, stats, timings, info, directions, args, width, args.dataset, wall
            )
            rows.append(row)
            s = row["ess_per_s"]
            print(
                f"# width {width} {cfg.name}: {row['num_draws']} draws/chain, ESS/s f_test min "
                f"{fmt(s['f_test/points/min'])}, f_test_mean min "
                f"{fmt(s['f_test_mean/points/min'])}; compile {row['compile_s']:.1f} s, warm-up "
                f"{row['warmup_s']:.1f} s, sampling {row['sampling_s']:.1f} s "
                f"(elapsed {time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        add_ratios(rows, ANCHOR_ESS_PER_S.get(width) if args.dataset == "teacher" else None)
        print_tables(rows, args.dataset, width)
        report["runs"].extend(rows)
        report["targets"] = target_checks(report["runs"], args.dataset)
        report["elapsed_s"] = time.perf_counter() - start
        if args.out:
            with open(args.out, "w") as handle:
                json.dump(jsonable(report), handle, indent=1)
        if args.csv:
            write_csv(args.csv, report["runs"])
    print("\n### Targets (BENCHMARKS.md)\n")
    for check in report["targets"]:
        mark = {True: "PASS", False: "FAIL", None: "----"}[check["passed"]]
        threshold = "" if check["threshold"] is None else f" (threshold {fmt(check['threshold'])})"
        print(f"- {mark} {check['check']}: {fmt(check['value'])}{threshold}")
    print(f"\n# total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

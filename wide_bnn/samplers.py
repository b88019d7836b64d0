"""The Markov kernels :func:`wide_bnn.sample` offers, with their warm-up tuning: one table.

Every entry of :data:`SAMPLERS` builds a :class:`Kernel`: a NamedTuple of pure,
single-chain functions on a **flat** position ``(dim,)`` (the engine vmaps them over
chains and scans them over steps). All kernels are exact: each transition leaves the
target invariant (Metropolis-Hastings, slice or elliptical-slice corrected), and a
proposal whose log-density is NaN or infinite is rejected, never entered.

=============  ==============================================================  ==========
name           transition                                                      tuned in
                                                                               warm-up
=============  ==============================================================  ==========
``nuts``       BlackJAX NUTS (multinomial, max tree depth 10)                  step size,
                                                                               diag. mass
``hmc``        BlackJAX HMC, ``num_integration_steps`` leapfrog steps with a   step size,
               +-``step_size_jitter`` (default 90%) uniform step-size jitter    diag. mass
``mala``       Metropolis-adjusted Langevin; implemented as one-leapfrog HMC   step size,
               (identical to preconditioned MALA with step ``eps^2 / 2``)      diag. mass
``langevin``   Underdamped Langevin / generalised HMC (``blackjax.ghmc``):     step size,
               one leapfrog step, partial momentum refresh ``alpha``,          diag. mass
               momentum flip on rejection
``pcn``        preconditioned Crank-Nicolson: own Metropolis-Hastings kernel   scale ``s``
               on the likelihood part, ``x' = sqrt(1 - s^2) x + s xi``
``pcnl``       pCN-Langevin (Cotter et al. 2013) with the full potential       scale ``s``
               ``Phi = -log target - 0.5 ||x||^2``, own MH kernel
``elliptical`` elliptical slice sampling with the N(0, I) prior, own kernel     nothing
``block_pcn``  pCN moves of one block of hidden units at a time, each with    scale ``s``
               its own Metropolis-Hastings test (Metropolis-within-Gibbs);
               one step is a sweep over all blocks (one-hidden-layer MLPs)
=============  ==============================================================  ==========

``pcn``, ``pcnl``, ``elliptical`` and ``block_pcn`` exploit that every coordinate has a
N(0, 1) prior in both parameterisations of :mod:`wide_bnn` (and the repriorised posterior
tends to exactly that prior as the width grows): they only "see" the likelihood-like
factor ``exp(-Phi)``.

``block_pcn`` also exploits that the likelihood depends on the hidden units of a
one-hidden-layer network through a sum over units (:mod:`wide_bnn.units`): it proposes
new values for all units at once (pCN, scale ``s``), computes their features and their
terms of the sum in bulk, then visits the blocks of ``block_size`` units in turn and
accepts or rejects each block's proposal with its own Metropolis-Hastings test against
the current sum (one ``n x n`` factorisation per block). Each block move leaves the
target invariant, so the sweep does. The sum of the current state is recomputed from
the blocks' terms at the end of every sweep, so the incremental updates accumulate no
rounding error across sweeps. Coordinates outside the units are redrawn exactly from
N(0, I) (the whitened readout of the non-collapsed target, which the likelihood does not
depend on) or moved by one more pCN test (the readout bias of the standard
parameterisation). Because the hidden units of a wide network are nearly independent
under the repriorised posterior, a block's proposal is accepted far more often than a
proposal for the whole layer, and a sweep decorrelates the hidden layer (and
``f_test_mean``) in a few steps where whole-layer pCN needs tens.

Tuning rules (all per chain, during warm-up only; the kernel is fixed afterwards)

* Step size (and pCN scale ``s``): Nesterov dual averaging (Hoffman & Gelman 2014)
  towards ``target_acceptance_rate``; the final value is the dual-averaging average.
  For the gradient kernels, dual averaging restarts after the first step from
  Hoffman and Gelman's step-size search (the step at which one leapfrog step is
  accepted with probability about 1/2), as Stan and NumPyro start it.
  ``s = min(1, exp(x))``: the pCN scale is capped at 1 (independent prior proposals).
* Diagonal inverse mass matrix: Stan's windowed Welford variance estimates
  (``blackjax.adaptation.window_adaptation.build_schedule``), needing
  ``num_warmup >= 20``; shorter warm-ups adapt the step size only.
* ``langevin`` refresh: ``alpha = 1 - exp(-2 * friction * step_size)`` (the friction
  ``gamma`` of underdamped Langevin dynamics in time units of the mass-whitened
  target, as in MEADS, Hoffman & Sountsov 2022), so the momentum persists for about
  ``1 / (2 friction)`` time units whatever the step size. The reference configuration
  of the method's authors is ``LANGEVIN_REFERENCE`` (step 0.1, refresh 0.01, identity
  mass, nothing adapted).

Per-step statistics use ArviZ names (``acceptance_rate``, ``diverging``, ``energy``,
``n_steps``, ``step_size``, ``tree_depth``) plus ``num_grad_evals``: evaluations of
the log-density gradient, or of the log-density for the gradient-free ``pcn`` (one
per step) and ``elliptical`` (one per slice shrinkage iteration).

``numerical_failures`` (int32) counts the proposals of a step that could not be
evaluated: their log density (or log-likelihood part) was NaN or infinite, e.g. a
Cholesky factorisation failed or a value overflowed, and was mapped to ``-inf``, so
the proposal was rejected. The chains add no jitter to make such a factorisation
succeed, since that would silently change the target (see :mod:`wide_bnn.linalg`). The
chain stays exact, but many failures mean poor mixing. What is counted, per kernel:

* ``hmc``, ``mala``, ``langevin``: 0 or 1, whether the end point of the leapfrog
  trajectory (the Metropolis-Hastings proposal, BlackJAX's ``info.proposal``) has a
  non-finite log density. Intermediate leapfrog states are not proposals and are not
  counted.
* ``nuts``: 0 or 1, a divergent transition whose trajectory has a state with a
  non-finite log density at its leftmost or rightmost end. BlackJAX (1.7) stops the
  trajectory at the first such state (its energy error is ``-inf``: a divergence) and
  leaves it at that end, so this flags every step that evaluated a non-finite log
  density (at most one per step), and a step from a current state that is itself
  non-finite. Divergences with finite energies (large integration errors) are not
  counted.
* ``pcn``: 0 or 1, the proposal's log-likelihood is not finite.
* ``pcnl``: 0 or 1, the proposal's log-likelihood or its gradient is not finite.
* ``elliptical``: the number of slice shrinkage proposals of the step (the first one
  included) whose log-likelihood is not finite.
* ``block_pcn``: the number of block proposals of the sweep (and the readout-bias
  proposal of the standard parameterisation) whose log-likelihood is not finite. Its
  ``num_grad_evals`` counts the log-likelihood evaluations of a sweep: one per block,
  one for the recomputed sum, one for the readout bias (standard); each costs one small
  factorisation, and the features of all units are computed once per sweep.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.mass_matrix import mass_matrix_adaptation
from blackjax.adaptation.step_size import dual_averaging_adaptation
from blackjax.adaptation.window_adaptation import build_schedule
from blackjax.mcmc import ghmc, hmc, nuts

__all__ = [
    "DEFAULT_NUM_BLOCKS",
    "DEFAULT_SAMPLER",
    "LANGEVIN_REFERENCE",
    "PCN_FEATURES_PER_POINT",
    "SAMPLERS",
    "BlockState",
    "Kernel",
    "SamplerInfo",
    "build_kernel",
    "default_sampler",
    "pcnl_log_ratio",
    "resolve_options",
]

#: The library default for ``sampler=None`` when :func:`default_sampler` does not pick a
#: specialist: static HMC (10 leapfrog steps, step size and diagonal mass tuned). On the P1
#: benchmark (docs/benchmarks-sampling.md) it had the best or nearly the best ESS per second
#: on both ``f_test`` and ``f_test_mean`` of the repriorised chain up to width 128 (twice
#: the number of training points); NUTS mixes as well per draw but its vmapped chains run
#: in lockstep and paid 4-6x more per effective draw from width 128 on.
DEFAULT_SAMPLER = "hmc"

#: ``sampler=None`` on a repriorised chain picks ``"block_pcn"`` (one-hidden-layer MLPs) or,
#: collapsed, ``"pcn"`` (other networks) when the readout has at least this many features
#: per training point. P1: at width 256 = 4 n block_pcn beat HMC 2x on ``f_test`` and 1.5x
#: on ``f_test_mean``, and more at larger widths; at width 128 = 2 n HMC was slightly ahead
#: (1.1x / 1.8x), and far ahead below. pCN beat HMC from width 512 on.
PCN_FEATURES_PER_POINT = 4

#: Options reproducing the reference experiments of Hron et al. (2022) with
#: ``sampler="langevin"``: step 0.1, momentum refresh 0.01, identity mass matrix.
LANGEVIN_REFERENCE = types.MappingProxyType(
    {"step_size": 0.1, "alpha": 0.01, "adapt_mass_matrix": False}
)

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class Kernel(NamedTuple):
    """A single-chain Markov kernel on a flat position, plus its warm-up tuning.

    Attributes
    ----------
    init : callable
        ``init(key, position) -> state`` for a position of shape ``(dim,)``.
    step : callable
        ``step(key, state, params) -> (state, stats)``; ``stats`` is a dict of scalars
        with a fixed set of keys (see :attr:`stat_names`).
    position : callable
        ``position(state) -> (dim,)``.
    logdensity : callable
        ``logdensity(state) -> ()`` the full log target at the state's position.
    adapt_init : callable
        ``adapt_init() -> adapt_state``.
    adapt_update : callable
        ``adapt_update(adapt_state, stage, position, acceptance_rate) -> adapt_state``
        with ``stage = (window, is_window_end, search)`` from :attr:`schedule`.
    adapt_params : callable
        ``adapt_params(adapt_state) -> params`` in force during warm-up.
    adapt_final : callable
        ``adapt_final(adapt_state) -> params`` for sampling.
    schedule : callable
        ``schedule(num_warmup) -> numpy int array (num_warmup, 3)``: per warm-up step,
        the slow-window flag, the window-end flag and the step-size search flag.
    stat_names : tuple of str
        Keys of the ``stats`` dict returned by ``step``.
    cache : callable
        ``cache(state) -> pytree or None``: what the target's ``loglik_cache_fn``
        computed at the state's position (pass it to ``Target.record``), or ``None``
        for kernels that do not keep it.
    """

    init: Callable
    step: Callable
    position: Callable
    logdensity: Callable
    adapt_init: Callable
    adapt_update: Callable
    adapt_params: Callable
    adapt_final: Callable
    schedule: Callable
    stat_names: tuple[str, ...]
    cache: Callable = lambda state: None  # kernels that keep no cache


class SamplerInfo(NamedTuple):
    """One row of :data:`SAMPLERS`.

    Attributes
    ----------
    name : str
    description : str
    defaults : Mapping
        Every accepted option with its default (``None``: chosen by warm-up).
    uses_gradient : bool
        Whether the kernel needs the gradient of the log-density.
    build : callable
        ``build(logdensity_fn, loglik_fn, dim, dtype, options) -> Kernel``; with
        ``keeps_cache`` also the keyword ``loglik_cache_fn``.
    keeps_cache : bool
        Whether the kernel can keep the target's factorisation in its state
        (:attr:`Kernel.cache`).
    needs_units : bool
        Whether the kernel needs the target's :class:`~wide_bnn.units.UnitModel`
        (keyword ``units`` of ``build``), which only one-hidden-layer MLPs have.
    """

    name: str
    description: str
    defaults: Mapping[str, Any]
    uses_gradient: bool
    build: Callable
    keeps_cache: bool = False
    needs_units: bool = False


# -- option checks ---------------------------------------------------------------------


def resolve_options(sampler: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``options`` for ``sampler`` and fill in the defaults.

    Raises
    ------
    ValueError
        For an unknown sampler, an unknown option (the valid ones are listed) or an
        option value out of range.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {tuple(SAMPLERS)}, got {sampler!r}")
    info = SAMPLERS[sampler]
    unknown = sorted(set(options) - set(info.defaults))
    if unknown:
        valid = ", ".join(sorted(info.defaults)) or "none"
        raise ValueError(
            f"unknown option(s) {unknown} for sampler {sampler!r}; valid options: {valid}"
        )
    resolved = dict(info.defaults)
    resolved.update(options)
    for name, value in resolved.items():
        _CHECKS[name](sampler, name, value)
    return resolved


def _positive(sampler, name, value, *, allow_none=True, upper=None):
    if value is None and allow_none:
        return
    ok = isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0 or (upper is not None and value > upper):
        bound = f" and <= {upper}" if upper is not None else ""
        raise ValueError(
            f"{name} for sampler {sampler!r} must be a positive finite number{bound}, got {value!r}"
        )


def _probability(sampler, name, value):
    ok = isinstance(value, int | float | np.floating) and not isinstance(value, bool)
    if not ok or not 0 < value < 1:
        raise ValueError(f"{name} for sampler {sampler!r} must be in (0, 1), got {value!r}")


def _int_at_least(low):
    def check(sampler, name, value):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(
                f"{name} for sampler {sampler!r} must be an int >= {low}, got {value!r}"
            )

    return check


def _boolean(sampler, name, value):
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} for sampler {sampler!r} must be True or False, got {value!r}")


def _jitter(sampler, name, value):
    ok = isinstance(value, int | float | np.floating) and not isinstance(value, bool)
    if not ok or not 0 <= value < 1:
        raise ValueError(f"{name} for sampler {sampler!r} must be in [0, 1), got {value!r}")


_CHECKS = {
    "step_size": _positive,
    "scale": lambda s, n, v: _positive(s, n, v, upper=1.0),
    "alpha": lambda s, n, v: v is None or _probability(s, n, v),
    "friction": lambda s, n, v: _positive(s, n, v, allow_none=False),
    "target_acceptance_rate": lambda s, n, v: v is None or _probability(s, n, v),
    "adapt_mass_matrix": _boolean,
    "num_integration_steps": _int_at_least(1),
    "max_tree_depth": _int_at_least(1),
    "step_size_jitter": _jitter,
    "divergence_threshold": lambda s, n, v: _positive(s, n, v, allow_none=False),
    "block_size": lambda s, n, v: v is None or _int_at_least(1)(s, n, v),
}


# -- warm-up tuning: dual averaging + windowed diagonal mass matrix ----------------------


class _TuneState(NamedTuple):
    da_state: Any
    mm_state: Any
    step_size: jax.Array
    inverse_mass_matrix: jax.Array


def _tuning(
    dim, dtype, *, initial_step, target, adapt_step, adapt_mass, to_params, step_search=None
):
    """Stan-style windowed tuning of a step size and a diagonal inverse mass matrix.

    ``to_params(step_size, inverse_mass_matrix) -> params`` maps the tuned values
    (cast to ``dtype``) to the kernel's parameters. A step size that is not tuned is
    used exactly as given. ``step_search(position, step_size, inverse_mass_matrix) ->
    step_size``, if given, restarts dual averaging from a searched step size at the
    stages flagged by :attr:`schedule`'s third column (after the first step).
    """
    da_init, da_update, da_final = dual_averaging_adaptation(target)
    mm_init, mm_update, mm_final = mass_matrix_adaptation(is_diagonal_matrix=True)
    initial_step = float(initial_step)

    def cast(step, imm):
        return to_params(jnp.asarray(step, dtype), jnp.asarray(imm, dtype))

    def init():
        mm_state = mm_init(dim)
        step = jnp.asarray(initial_step, dtype)
        return _TuneState(da_init(initial_step), mm_state, step, mm_state.inverse_mass_matrix)

    def update(tune, stage, position, acceptance_rate):
        window, is_window_end, search = stage[0], stage[1], stage[2]
        da_state, mm_state = tune.da_state, tune.mm_state
        if adapt_step:
            # A NaN acceptance (not expected: rejections report 0) must not poison tuning.
            acceptance_rate = jnp.where(jnp.isfinite(acceptance_rate), acceptance_rate, 0.0)
            da_state = da_update(da_state, acceptance_rate)
        if adapt_mass:
            mm_state = jax.lax.cond(
                window == 1, lambda s: _like(mm_update(s, position), s), lambda s: s, mm_state
            )

            def window_end(args):
                # Slow window done: new mass matrix, and restart dual averaging from the
                # window's averaged step size (as Stan and BlackJAX do).
                da_state, mm_state = args
                if adapt_step:
                    da_state = da_init(da_final(da_state))
                return _like((da_state, mm_final(mm_state)), args)

            da_state, mm_state = jax.lax.cond(
                is_window_end, window_end, lambda args: args, (da_state, mm_state)
            )
        if adapt_step and step_search is not None:
            # From the initial step (1 unless given), which is far too large in
            # thousands of dimensions, dual averaging swings over orders of magnitude
            # through the initial buffer, and with a short warm-up a chain can end it
            # badly tuned (P1, width 1024, standard NUTS, 50 warm-up steps: one chain
            # of four at acceptance 0.08). Like Stan and NumPyro, restart it from a
            # searched step. ``search`` comes from the schedule, the same for every
            # chain, so the search runs at that stage only.
            def searched(da_state):
                step = jnp.exp(da_state.log_step_size)
                step = step_search(position, step, mm_state.inverse_mass_matrix)
                return _like(da_init(step), da_state)

            da_state = jax.lax.cond(search == 1, searched, lambda d: d, da_state)
        step = tune.step_size
        if adapt_step:
            step = jnp.exp(da_state.log_step_size).astype(dtype)
        return _TuneState(da_state, mm_state, step, mm_state.inverse_mass_matrix)

    def current(tune):
        return cast(tune.step_size, tune.inverse_mass_matrix)

    def final(tune):
        step = da_final(tune.da_state) if adapt_step else tune.step_size
        return cast(step, tune.inverse_mass_matrix)

    def schedule(num_warmup):
        stages = np.zeros((num_warmup, 3), np.int32)
        if num_warmup == 0:
            return stages
        if adapt_mass:
            # One device-to-host copy (BlackJAX returns a jax array).
            windows = np.asarray(build_schedule(num_warmup)).astype(np.int32)
            stages[:, :2] = windows.reshape(num_warmup, 2)
        stages[0, 2] = 1  # search the step size after the first step
        return stages

    return init, update, current, final, schedule


def _no_tuning(params):
    def schedule(num_warmup):
        return np.zeros((num_warmup, 3), np.int32)

    # A dummy array state keeps the tuning state vmappable over chains.
    return (
        lambda: jnp.zeros((), jnp.int32),
        lambda tune, stage, position, acceptance_rate: tune,
        lambda tune: params,
        lambda tune: params,
        schedule,
    )


def _as_kernel(
    init,
    step,
    position,
    logdensity,
    tuning,
    stat_names,
    dtype,
    cache=Kernel._field_defaults["cache"],
):
    tune_init, tune_update, tune_params, tune_final, schedule = tuning

    # Type stability: with x64 enabled, BlackJAX's and the tuning's Python-float
    # constants are float64; a float32 run must keep float32 scan carries.
    def typed_init(key, position):
        return _to_dtype(init(key, position), dtype)

    def typed_step(key, state, params):
        new_state, stats = step(key, state, params)
        return _like(new_state, state), stats

    def typed_tune_init():
        return _to_dtype(tune_init(), dtype)

    def typed_tune_update(tune, stage, position, acceptance_rate):
        return _like(tune_update(tune, stage, position, acceptance_rate), tune)

    return Kernel(
        typed_init,
        typed_step,
        position,
        logdensity,
        typed_tune_init,
        typed_tune_update,
        tune_params,
        tune_final,
        schedule,
        tuple(stat_names),
        cache,
    )


def _to_dtype(tree, dtype):
    def cast(leaf):
        leaf = jnp.asarray(leaf)
        return leaf.astype(dtype) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf

    return jax.tree_util.tree_map(cast, tree)


def _like(tree, template):
    return jax.tree_util.tree_map(lambda leaf, ref: jnp.asarray(leaf, ref.dtype), tree, template)


# -- HMC family: nuts, hmc, mala ----------------------------------------------------------


def _hmc_stats(info, step_size, n_steps, failures=None):
    """Step statistics of a BlackJAX HMC-family transition.

    ``failures`` (bool) flags a proposal with a non-finite log density; by default the
    end point of a static trajectory (``info.proposal``, the state the Metropolis-Hastings
    step accepts or rejects).
    """
    if failures is None:
        failures = ~jnp.isfinite(info.proposal.logdensity)
    return {
        "acceptance_rate": info.acceptance_rate,
        "diverging": info.is_divergent,
        "energy": info.energy,
        "n_steps": jnp.asarray(n_steps, jnp.int32),
        "num_grad_evals": jnp.asarray(n_steps, jnp.int32),
        "numerical_failures": jnp.asarray(failures, jnp.int32),
        "step_size": step_size,
    }


def _hmc_tuning(logdensity_fn, dim, dtype, options, default_target, to_params=None):
    fixed_step = options["step_size"]
    return _tuning(
        dim,
        dtype,
        initial_step=1.0 if fixed_step is None else fixed_step,
        target=options.get("target_acceptance_rate", default_target),
        adapt_step=fixed_step is None,
        adapt_mass=options["adapt_mass_matrix"],
        to_params=to_params or (lambda s, m: {"step_size": s, "inverse_mass_matrix": m}),
        step_search=partial(_search_step_size, logdensity_fn),
    )


#: Seed of the fixed momentum of :func:`_search_step_size` (a tuning heuristic: its
#: momentum need not be fresh, and a fixed one keeps the update free of keys).
_SEARCH_MOMENTUM_SEED = 20221203
_SEARCH_MAX_HALVINGS = 60


def _search_step_size(logdensity_fn, position, step_size, inverse_mass_matrix):
    """A step size at which one leapfrog step is accepted with probability about 1/2.

    Hoffman and Gelman's (2014) heuristic, as Stan and NumPyro use it: double the step
    while the one-step acceptance ratio exceeds 1/2, or halve it while it is below,
    and return the first step that crosses; at most ``_SEARCH_MAX_HALVINGS`` changes.
    A non-finite log density counts as acceptance 0.

    Written here rather than calling BlackJAX's ``find_reasonable_step_size``, which
    draws a fresh momentum for every trial step: with one fixed momentum the one-step
    acceptance is a deterministic function of the step, so the search stops exactly
    where it crosses 1/2 (as the tests check).
    """
    dtype = position.dtype
    value, grad = jax.value_and_grad(logdensity_fn)(position)
    noise = jax.random.normal(jax.random.key(_SEARCH_MOMENTUM_SEED), position.shape, dtype)
    momentum = noise / jnp.sqrt(inverse_mass_matrix)  # N(0, M), M = inverse_mass_matrix^-1
    energy = -value + 0.5 * jnp.sum(inverse_mass_matrix * jnp.square(momentum))
    half_log = jnp.log(jnp.asarray(0.5, dtype))

    def log_ratio(step):
        half = momentum + 0.5 * step * grad
        moved = position + step * inverse_mass_matrix * half
        new_value, new_grad = jax.value_and_grad(logdensity_fn)(moved)
        new_momentum = half + 0.5 * step * new_grad
        new_energy = -new_value + 0.5 * jnp.sum(inverse_mass_matrix * jnp.square(new_momentum))
        out = energy - new_energy
        return jnp.where(jnp.isnan(out), -jnp.inf, out)

    step_size = jnp.asarray(step_size, dtype)
    direction = jnp.where(log_ratio(step_size) > half_log, 1.0, -1.0).astype(dtype)

    def keep_going(carry):
        count, _, crossed = carry
        return (count < _SEARCH_MAX_HALVINGS) & ~crossed

    def change(carry):
        count, step, _ = carry
        step = step * jnp.exp2(direction)
        crossed = direction * (log_ratio(step) - half_log) <= 0
        return count + 1, step, crossed

    _, step_size, _ = jax.lax.while_loop(
        keep_going, change, (jnp.asarray(0), step_size, jnp.asarray(False))
    )
    return step_size


def _hmc_state_fns():
    return (lambda state: state.position, lambda state: state.logdensity)


def _build_nuts(logdensity_fn, loglik_fn, dim, dtype, options):
    del loglik_fn
    kernel = nuts.build_kernel(divergence_threshold=options["divergence_threshold"])
    max_depth = int(options["max_tree_depth"])

    def init(key, position):
        del key
        return hmc.init(position, logdensity_fn)

    def step(key, state, params):
        state, info = kernel(
            key,
            state,
            logdensity_fn,
            params["step_size"],
            params["inverse_mass_matrix"],
            max_num_doublings=max_depth,
        )
        # BlackJAX stops a NUTS trajectory at its first state with a non-finite log
        # density (its energy error is -inf, or NaN mapped to -inf: a divergence), and
        # that state is then the leftmost or rightmost state of the final trajectory.
        # So at most one non-finite state is evaluated per step, and this flags it.
        edges = (info.trajectory_leftmost_state, info.trajectory_rightmost_state)
        failed = info.is_divergent & (
            ~jnp.isfinite(edges[0].logdensity) | ~jnp.isfinite(edges[1].logdensity)
        )
        stats = _hmc_stats(info, params["step_size"], info.num_integration_steps, failed)
        stats["tree_depth"] = jnp.asarray(info.num_trajectory_expansions, jnp.int32)
        return state, stats

    tuning = _hmc_tuning(logdensity_fn, dim, dtype, options, 0.8)
    names = (*_HMC_STATS, "tree_depth")
    return _as_kernel(init, step, *_hmc_state_fns(), tuning, names, dtype)


_HMC_STATS = (
    "acceptance_rate",
    "diverging",
    "energy",
    "n_steps",
    "num_grad_evals",
    "numerical_failures",
    "step_size",
)


def _build_static_hmc(num_steps, jitter):
    def build(logdensity_fn, loglik_fn, dim, dtype, options):
        del loglik_fn
        kernel = hmc.build_kernel(divergence_threshold=options["divergence_threshold"])
        steps = int(num_steps if num_steps is not None else options["num_integration_steps"])
        spread = float(jitter if jitter is not None else options["step_size_jitter"])

        def init(key, position):
            del key
            return hmc.init(position, logdensity_fn)

        def step(key, state, params):
            key_jitter, key_kernel = jax.random.split(key)
            step_size = params["step_size"]
            if spread > 0:
                # A random step size independent of the state keeps detailed balance and
                # breaks the (near-)periodicity of a fixed trajectory on near-Gaussian
                # targets. Without it, trajectories of about half a period reflect the
                # state through the mean, or whole periods leave it in place, and the
                # chain is practically non-ergodic. Measured with 10 steps: on a Gaussian
                # truncated at +2 sd the left tail was never reached (mean off by 55
                # standard errors without jitter); on a 50-d Gaussian the min ESS of 8000
                # draws was 65 without jitter, 7814 / 6448 (x) and 1991 / 2685 (x^2)
                # with +-50% / +-90%; 3-d tuned steps of ~0.7 sd still stuck at +-50%.
                factor = jax.random.uniform(
                    key_jitter, (), dtype, minval=1.0 - spread, maxval=1.0 + spread
                )
                step_size = step_size * factor
            state, info = kernel(
                key_kernel,
                state,
                logdensity_fn,
                step_size,
                params["inverse_mass_matrix"],
                steps,
            )
            return state, _hmc_stats(info, step_size, steps)

        default_target = 0.8 if num_steps is None else 0.574
        tuning = _hmc_tuning(logdensity_fn, dim, dtype, options, default_target)
        return _as_kernel(init, step, *_hmc_state_fns(), tuning, _HMC_STATS, dtype)

    return build


# -- langevin: generalised HMC with one leapfrog step -------------------------------------


def _build_langevin(logdensity_fn, loglik_fn, dim, dtype, options):
    del loglik_fn
    kernel = ghmc.build_kernel(divergence_threshold=options["divergence_threshold"])
    fixed_alpha = options["alpha"]
    friction = float(options["friction"])

    def to_params(step_size, imm):
        if fixed_alpha is None:
            alpha = -jnp.expm1(-2.0 * friction * step_size)
        else:
            alpha = jnp.asarray(fixed_alpha, dtype)
        return {"step_size": step_size, "inverse_mass_matrix": imm, "alpha": alpha}

    def init(key, position):
        state = ghmc.init(position, logdensity_fn, key)
        return state._replace(slice=jnp.asarray(state.slice, dtype))

    def step(key, state, params):
        alpha = params["alpha"]
        # Neal's (2020) non-reversible slice variable moves by delta per step (MEADS:
        # delta = alpha / 2).
        delta = alpha / 2
        # ghmc squares its "momentum_inverse_scale" into the inverse mass matrix.
        scale = jnp.sqrt(params["inverse_mass_matrix"])
        state, info = kernel(key, state, logdensity_fn, params["step_size"], scale, alpha, delta)
        stats = _hmc_stats(info, params["step_size"], 1)
        return state, stats

    tuning = _hmc_tuning(logdensity_fn, dim, dtype, options, 0.9, to_params)
    return _as_kernel(init, step, *_hmc_state_fns(), tuning, _HMC_STATS, dtype)


# -- likelihood-only kernels: pcn, pcnl, elliptical ---------------------------------------


def _log_std_normal(x):
    return -0.5 * jnp.sum(jnp.square(x)) - x.size * _HALF_LOG_2PI


def _pcn_tuning(dim, dtype, options, target):
    fixed = options["scale"]
    return _tuning(
        dim,
        dtype,
        # Dual averaging shrinks towards log(10 * initial) = log(1): independent proposals.
        initial_step=0.1 if fixed is None else fixed,
        target=options.get("target_acceptance_rate", target),
        adapt_step=fixed is None,
        adapt_mass=False,
        to_params=lambda s, m: {"scale": jnp.minimum(s, jnp.asarray(1.0, dtype))},
    )


def _likelihood_state_fns():
    def logdensity(state):
        return state.logdensity + _log_std_normal(state.position)

    return (lambda state: state.position, logdensity)


class LikelihoodState(NamedTuple):
    """State of the pCN and elliptical slice chains: position, log-likelihood part, cache.

    ``cache`` is what the target's ``loglik_cache_fn`` returned with the
    log-likelihood (the factorisation of the collapsed target, so that recording a
    draw needs no second one), or ``None``.
    """

    position: jax.Array
    logdensity: jax.Array
    cache: Any = None


def _likelihood_init(loglik_fn, loglik_cache_fn):
    """``(evaluate, init)`` of a :class:`LikelihoodState` chain, with or without a cache."""
    if loglik_cache_fn is None:

        def loglik_cache_fn(position):
            return loglik_fn(position), None

    def init(key, position):
        del key
        return LikelihoodState(position, *loglik_cache_fn(position))

    return loglik_cache_fn, init


#: Per-step statistics of the tuned likelihood kernels (pcn, pcnl).
_PCN_STATS = (
    "acceptance_rate",
    "diverging",
    "n_steps",
    "num_grad_evals",
    "numerical_failures",
    "step_size",
)


def _build_pcn(logdensity_fn, loglik_fn, dim, dtype, options, loglik_cache_fn=None):
    del logdensity_fn
    loglik_cache_fn, init = _likelihood_init(loglik_fn, loglik_cache_fn)

    def step(key, state, params):
        scale = params["scale"]
        persistence = jnp.sqrt(1.0 - jnp.square(scale))
        key_proposal, key_accept = jax.random.split(key)
        noise = jax.random.normal(key_proposal, state.position.shape, state.position.dtype)
        moved = persistence * state.position + scale * noise
        proposal = LikelihoodState(moved, *loglik_cache_fn(moved))
        # The pCN proposal is reversible with respect to the N(0, I) prior, so the
        # Metropolis-Hastings ratio is the ratio of the likelihood parts alone. A -inf
        # proposal (failed factorisation, non-finite value) has probability 0; from a
        # -inf state any finite proposal is taken (-inf - -inf is NaN: rejected).
        log_ratio = proposal.logdensity - state.logdensity
        acceptance_rate = _acceptance(log_ratio)
        accept = jax.random.uniform(key_accept, (), state.position.dtype) < acceptance_rate
        new_state = _select(accept, proposal, state)
        stats = {
            "acceptance_rate": acceptance_rate,
            "diverging": ~jnp.isfinite(proposal.logdensity),
            "n_steps": jnp.asarray(1, jnp.int32),
            "num_grad_evals": jnp.asarray(1, jnp.int32),
            "numerical_failures": (~jnp.isfinite(proposal.logdensity)).astype(jnp.int32),
            "step_size": scale,
        }
        return new_state, stats

    tuning = _pcn_tuning(dim, dtype, options, 0.25)
    return _as_kernel(
        init,
        step,
        *_likelihood_state_fns(),
        tuning,
        _PCN_STATS,
        dtype,
        cache=lambda state: state.cache,
    )


def pcnl_log_ratio(u, v, loglik_u, loglik_v, grad_u, grad_v, scale):
    """Log Metropolis-Hastings ratio of the pCN-Langevin move ``u -> v``.

    Target ``exp(-Phi(x)) N(x; 0, I)`` with the full potential ``Phi = -loglik``;
    proposal ``q(v | u) = N(v; a u - (1 - a) g_u, s^2 I)``, ``a = sqrt(1 - s^2)``,
    ``g = grad Phi``. The prior and proposal terms in ``||x||^2`` cancel analytically
    (the pCN proposal is reversible for N(0, I)), leaving

        Phi(u) - Phi(v) - [<u - a v, g_v> - <v - a u, g_u>] / (1 + a)
        - (1 - a) / (2 (1 + a)) (||g_v||^2 - ||g_u||^2),

    which avoids the large, cancelling ``||x||^2`` terms of the textbook formula.
    """
    a = jnp.sqrt(1.0 - jnp.square(scale))
    g_u, g_v = -grad_u, -grad_v
    cross = jnp.vdot(u - a * v, g_v) - jnp.vdot(v - a * u, g_u)
    norms = jnp.sum(jnp.square(g_v)) - jnp.sum(jnp.square(g_u))
    return (loglik_v - loglik_u) - cross / (1.0 + a) - (1.0 - a) / (2.0 * (1.0 + a)) * norms


class PCNLState(NamedTuple):
    """State of the pCN-Langevin kernel: position, log-likelihood part and its gradient."""

    position: jax.Array
    logdensity: jax.Array
    logdensity_grad: jax.Array


def _build_pcnl(logdensity_fn, loglik_fn, dim, dtype, options):
    del logdensity_fn
    value_and_grad = jax.value_and_grad(loglik_fn)

    def init(key, position):
        del key
        value, grad = value_and_grad(position)
        return PCNLState(position, value, grad)

    def step(key, state, params):
        key_noise, key_accept = jax.random.split(key)
        scale = params["scale"]
        a = jnp.sqrt(1.0 - jnp.square(scale))
        u = state.position
        noise = jax.random.normal(key_noise, u.shape, u.dtype)
        # Cotter et al. (2013) pCNL with C = I: v = a u + (1 - a) grad loglik(u) + s xi.
        v = a * u + (1.0 - a) * state.logdensity_grad + scale * noise
        loglik_v, grad_v = value_and_grad(v)
        log_ratio = pcnl_log_ratio(
            u, v, state.logdensity, loglik_v, state.logdensity_grad, grad_v, scale
        )
        proposal_ok = jnp.isfinite(loglik_v) & jnp.all(jnp.isfinite(grad_v))
        log_ratio = jnp.where(proposal_ok & ~jnp.isnan(log_ratio), log_ratio, -jnp.inf)
        acceptance_rate = jnp.exp(jnp.minimum(log_ratio, 0.0))
        log_u = jnp.log(jax.random.uniform(key_accept, (), dtype))
        accept = log_u < log_ratio
        new_state = PCNLState(
            jnp.where(accept, v, u),
            jnp.where(accept, loglik_v, state.logdensity),
            jnp.where(accept, grad_v, state.logdensity_grad),
        )
        stats = {
            "acceptance_rate": acceptance_rate,
            "diverging": ~proposal_ok,
            "n_steps": jnp.asarray(1, jnp.int32),
            "num_grad_evals": jnp.asarray(1, jnp.int32),
            # Rejected because it could not be evaluated: a non-finite log-likelihood or
            # gradient (not a finite proposal that the MH ratio rejects).
            "numerical_failures": (~proposal_ok).astype(jnp.int32),
            "step_size": scale,
        }
        return new_state, stats

    tuning = _pcn_tuning(dim, dtype, options, 0.574)
    return _as_kernel(init, step, *_likelihood_state_fns(), tuning, _PCN_STATS, dtype)


#: Shrinkage steps after which an elliptical slice step gives up and stays put (it
#: only happens when the current state itself cannot be evaluated: the bracket then
#: shrinks towards a point whose log-likelihood is -inf).
_MAX_SHRINKS = 200


def _build_elliptical(logdensity_fn, loglik_fn, dim, dtype, options, loglik_cache_fn=None):
    """Elliptical slice sampling (Murray, Adams and MacKay 2010) with the N(0, I) prior.

    Own implementation rather than BlackJAX's so that the state can keep the target's
    factorisation (:class:`LikelihoodState`).
    """
    del logdensity_fn, options
    loglik_cache_fn, init = _likelihood_init(loglik_fn, loglik_cache_fn)

    def step(key, state, params):
        del params
        key_nu, key_u, key_theta, key_loop = jax.random.split(key, 4)
        position = state.position
        nu = jax.random.normal(key_nu, position.shape, position.dtype)
        log_u = jnp.log(jax.random.uniform(key_u, (), position.dtype))
        threshold = state.logdensity + log_u
        theta = jax.random.uniform(key_theta, (), position.dtype, 0.0, 2 * jnp.pi)

        def propose(theta):
            moved = position * jnp.cos(theta) + nu * jnp.sin(theta)
            return LikelihoodState(moved, *loglik_cache_fn(moved))

        def failed(proposal):
            return (~jnp.isfinite(proposal.logdensity)).astype(jnp.int32)

        def not_done(carry):
            _, _, _, proposal, count, _ = carry
            return ~(proposal.logdensity > threshold) & (count < _MAX_SHRINKS)

        def shrink(carry):
            theta, low, high, _, count, failures = carry
            # Shrink the bracket towards 0 (the current state), then draw inside it.
            low = jnp.where(theta < 0, theta, low)
            high = jnp.where(theta < 0, high, theta)
            theta = jax.random.uniform(
                jax.random.fold_in(key_loop, count), (), position.dtype, low, high
            )
            proposal = propose(theta)
            return theta, low, high, proposal, count + 1, failures + failed(proposal)

        first = propose(theta)
        one = jnp.ones((), jnp.int32)
        start = (theta, theta - 2 * jnp.pi, theta, first, one, failed(first))
        _, _, _, proposal, count, failures = jax.lax.while_loop(not_done, shrink, start)
        moved = proposal.logdensity > threshold
        new_state = jax.tree_util.tree_map(
            lambda new, old: jnp.where(moved, new, old), proposal, state
        )
        stats = {
            # Elliptical slice sampling always moves (unless the current state is
            # invalid); one log-likelihood per shrinkage step.
            "acceptance_rate": moved.astype(dtype),
            "diverging": ~moved,
            "n_steps": count,
            "num_grad_evals": count,
            # Shrinkage proposals (the first included) whose log-likelihood was not finite.
            "numerical_failures": failures,
        }
        return new_state, stats

    names = ("acceptance_rate", "diverging", "n_steps", "num_grad_evals", "numerical_failures")
    return _as_kernel(
        init,
        step,
        *_likelihood_state_fns(),
        _no_tuning({}),
        names,
        dtype,
        cache=lambda state: state.cache,
    )


# -- block_pcn: Metropolis-within-Gibbs over blocks of hidden units ------------------------

#: ``block_size=None`` splits the hidden units into this many blocks (fewer if there are
#: fewer units). Measured on P1 with ``benchmarks/bench_blocks.py``: 8 blocks lost a third
#: of the ESS per second at width 128 (scale below 1); from width 512 (scale 1) they gained
#: 9-17% on ``f_test`` and lost up to 14% on ``f_test_mean``.
DEFAULT_NUM_BLOCKS = 16


class BlockState(NamedTuple):
    """State of the ``block_pcn`` chain (see :mod:`wide_bnn.units` for the terms).

    Attributes
    ----------
    units : jax.Array, shape (unit_dim, num_blocks, block_size)
        The units (one column each), blocked; the last block is padded with units whose
        features are zero.
    rest : jax.Array, shape (rest_dim,)
        The coordinates outside the units.
    features : jax.Array, shape (num_blocks, n, block_size)
        Training features of the units (zero for padding).
    terms : jax.Array, shape (num_blocks, ...)
        Each block's term of the sum the likelihood depends on.
    total : jax.Array
        Their sum, taken in block order (what ``logdensity`` was computed from).
    logdensity : jax.Array, shape ()
        The log-likelihood part of the target at this state.
    aux : pytree
        What the unit model's ``loglik`` returned with it (the factorisation).
    """

    units: jax.Array
    rest: jax.Array
    features: jax.Array
    terms: jax.Array
    total: jax.Array
    logdensity: jax.Array
    aux: Any


def _build_block_pcn(logdensity_fn, loglik_fn, dim, dtype, options, units):
    del logdensity_fn, loglik_fn
    model = units
    size = min(options["block_size"] or -(-model.num_units // DEFAULT_NUM_BLOCKS), model.num_units)
    num_blocks = -(-model.num_units // size)
    padding = num_blocks * size - model.num_units
    # Padding units (the last block only) keep zero features, so they add nothing.
    real = (jnp.arange(num_blocks * size) < model.num_units).reshape(num_blocks, 1, size)

    def blocked_terms(units):
        features = jax.vmap(model.features, in_axes=1)(units) * real.astype(dtype)
        return features, jax.vmap(model.term, in_axes=(0, 1))(features, units)

    def evaluate(total, rest):
        value, aux = model.loglik(total, rest)
        return _finite(value), aux

    def init(key, position):
        del key
        columns, rest = model.split(position)
        columns = jnp.pad(columns, ((0, 0), (0, padding)))
        units = columns.reshape(model.unit_dim, num_blocks, size)
        features, terms = blocked_terms(units)
        total = jnp.sum(terms, axis=0)
        return BlockState(units, rest, features, terms, total, *evaluate(total, rest))

    def visit(rest):
        def visit_block(carry, block):
            total, value = carry
            old_term, new_term, log_u = block
            # The other blocks' terms are those of the current state; only this block's
            # term changes. Accumulated rounding is reset at the end of the sweep, where
            # the factorisation kept in the state is also computed.
            candidate = total - old_term + new_term
            candidate_value = evaluate(candidate, rest)[0]
            log_ratio = candidate_value - value
            # pCN is reversible for the N(0, I) prior: the likelihood ratio decides. A -inf
            # proposal is never taken; -inf - -inf is NaN: rejected.
            accept = log_u < log_ratio
            carry = _select(accept, (candidate, candidate_value), carry)
            return carry, (accept, _acceptance(log_ratio), ~jnp.isfinite(candidate_value))

        return visit_block

    def move_rest(key, state, keep, scale):
        """The coordinates outside the units: exact redraw, or one more pCN test."""
        key_noise, key_accept = jax.random.split(key)
        noise = jax.random.normal(key_noise, state.rest.shape, dtype)
        if not model.rest_in_likelihood:
            return state._replace(rest=noise), None
        moved = keep * state.rest + scale * noise
        value, aux = evaluate(state.total, moved)
        log_ratio = value - state.logdensity
        accept = jnp.log(jax.random.uniform(key_accept, (), dtype)) < log_ratio
        proposal = state._replace(rest=moved, logdensity=value, aux=aux)
        return _select(accept, proposal, state), (_acceptance(log_ratio), ~jnp.isfinite(value))

    def step(key, state, params):
        scale = params["scale"]
        keep = jnp.sqrt(1.0 - jnp.square(scale))
        key_units, key_accept, key_rest = jax.random.split(key, 3)
        # Every block's proposal depends only on that block's current units, which do not
        # change before the block is visited: all proposals, their features and their
        # terms are computed up front, in bulk; only the accept/reject tests are sequential.
        noise = jax.random.normal(key_units, state.units.shape, dtype)
        proposed = keep * state.units + scale * noise
        features, terms = blocked_terms(proposed)
        log_u = jnp.log(jax.random.uniform(key_accept, (num_blocks,), dtype))
        carry = (state.total, state.logdensity)
        _, (accepted, probability, failed) = jax.lax.scan(
            visit(state.rest), carry, (state.terms, terms, log_u)
        )

        def pick(new, old, axis=0):
            shape = [1] * new.ndim
            shape[axis] = num_blocks
            return jnp.where(accepted.reshape(shape), new, old)

        terms = pick(terms, state.terms)
        total = jnp.sum(terms, axis=0)
        state = BlockState(
            pick(proposed, state.units, axis=1),
            state.rest,
            pick(features, state.features),
            terms,
            total,
            *evaluate(total, state.rest),
        )
        evaluations = num_blocks + 1
        state, rest_move = move_rest(key_rest, state, keep, scale)
        if rest_move is not None:
            probability = jnp.concatenate([probability, rest_move[0][None]])
            failed = jnp.concatenate([failed, rest_move[1][None]])
            evaluations += 1
        stats = {
            "acceptance_rate": jnp.mean(probability),
            "diverging": jnp.any(failed),
            "n_steps": jnp.asarray(num_blocks, jnp.int32),
            "num_grad_evals": jnp.asarray(evaluations, jnp.int32),
            "numerical_failures": jnp.sum(failed.astype(jnp.int32)),
            "step_size": scale,
        }
        return state, stats

    def position(state):
        columns = state.units.reshape(model.unit_dim, num_blocks * size)
        return model.merge(columns[:, : model.num_units], state.rest)

    def logdensity(state):
        return state.logdensity + _log_std_normal(position(state))

    def cache(state):
        n = state.features.shape[1]
        columns = jnp.moveaxis(state.features, 0, 1).reshape(n, num_blocks * size)
        return model.cache(columns[:, : model.num_units], state.aux, state.rest)

    tuning = _pcn_tuning(dim, dtype, options, options["target_acceptance_rate"])
    return _as_kernel(init, step, position, logdensity, tuning, _PCN_STATS, dtype, cache=cache)


def _select(flag, when_true, when_false):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(flag, a, b), when_true, when_false)


def _acceptance(log_ratio):
    """Metropolis-Hastings acceptance probability ``min(1, exp(log_ratio))``; NaN gives 0."""
    return jnp.where(jnp.isnan(log_ratio), 0.0, jnp.exp(jnp.minimum(log_ratio, 0.0)))


# -- the table ----------------------------------------------------------------------------

_COMMON_HMC = {
    "step_size": None,
    "target_acceptance_rate": None,
    "adapt_mass_matrix": True,
    "divergence_threshold": 1000.0,
}


def _info(name, description, defaults, uses_gradient, build, keeps_cache=False, needs_units=False):
    return SamplerInfo(
        name,
        description,
        types.MappingProxyType(defaults),
        uses_gradient,
        build,
        keeps_cache,
        needs_units,
    )


def _drop_none_target(build, default_target):
    # "target_acceptance_rate": None in the table means "the sampler's own default".
    def wrapped(logdensity_fn, loglik_fn, dim, dtype, options, **extra):
        options = dict(options)
        if options.get("target_acceptance_rate") is None:
            options["target_acceptance_rate"] = default_target
        return build(logdensity_fn, loglik_fn, dim, dtype, options, **extra)

    return wrapped


SAMPLERS: Mapping[str, SamplerInfo] = types.MappingProxyType(
    {
        "nuts": _info(
            "nuts",
            "No-U-Turn sampler; step size and diagonal mass matrix tuned (target 0.8)",
            {**_COMMON_HMC, "max_tree_depth": 10},
            True,
            _drop_none_target(_build_nuts, 0.8),
        ),
        "hmc": _info(
            "hmc",
            "static HMC with a +-90% jittered step size; step size and diagonal mass tuned "
            "(target 0.8)",
            {**_COMMON_HMC, "num_integration_steps": 10, "step_size_jitter": 0.9},
            True,
            _drop_none_target(_build_static_hmc(None, None), 0.8),
        ),
        "mala": _info(
            "mala",
            "Metropolis-adjusted Langevin (one-leapfrog HMC); step size and diagonal mass "
            "tuned (target 0.574)",
            dict(_COMMON_HMC),
            True,
            _drop_none_target(_build_static_hmc(1, 0.0), 0.574),
        ),
        "langevin": _info(
            "langevin",
            "underdamped Langevin / generalised HMC, one leapfrog step per iteration; step "
            "size (target 0.9) and diagonal mass tuned, alpha = 1 - exp(-2 friction step)",
            {**_COMMON_HMC, "alpha": None, "friction": 1.0},
            True,
            _drop_none_target(_build_langevin, 0.9),
        ),
        "pcn": _info(
            "pcn",
            "preconditioned Crank-Nicolson (prior-reversible MH); scale tuned (target 0.25)",
            {"scale": None, "target_acceptance_rate": None},
            False,
            _drop_none_target(_build_pcn, 0.25),
            keeps_cache=True,
        ),
        "pcnl": _info(
            "pcnl",
            "pCN-Langevin with the full potential; scale tuned (target 0.574)",
            {"scale": None, "target_acceptance_rate": None},
            True,
            _drop_none_target(_build_pcnl, 0.574),
        ),
        "elliptical": _info(
            "elliptical",
            "elliptical slice sampling with the N(0, I) prior; nothing to tune",
            {},
            False,
            _build_elliptical,
            keeps_cache=True,
        ),
        "block_pcn": _info(
            "block_pcn",
            "pCN moves of one block of hidden units at a time (Metropolis-within-Gibbs), one "
            "sweep over all blocks per step; one-hidden-layer MLPs; scale tuned (target 0.5)",
            {"scale": None, "target_acceptance_rate": None, "block_size": None},
            False,
            _drop_none_target(_build_block_pcn, 0.5),
            needs_units=True,
        ),
    }
)


def default_sampler(
    parameterisation: str,
    collapsed: bool,
    num_features: int,
    num_points: int,
    has_units: bool = False,
) -> str:
    """The sampler that ``sampler=None`` means for a run (chosen from the P1 benchmark).

    Parameters
    ----------
    parameterisation : {"repriorised", "standard"}
    collapsed : bool
    num_features : int
        Features of the readout ``p`` (width, plus one with a readout bias).
    num_points : int
        Training points ``n``.
    has_units : bool
        Whether the network is a one-hidden-layer MLP (:func:`wide_bnn.units.supports`),
        which ``block_pcn`` needs.

    Returns
    -------
    str
        ``"nuts"`` for the standard parameterisation (the baseline: it adapts to the
        anisotropy of the original weights). For a repriorised chain with
        ``p >= PCN_FEATURES_PER_POINT * n``, where the target is close to its N(0, I)
        prior: ``"block_pcn"`` with ``has_units``, else ``"pcn"`` if collapsed.
        :data:`DEFAULT_SAMPLER` otherwise.
    """
    if parameterisation == "standard":
        return "nuts"
    if num_features >= PCN_FEATURES_PER_POINT * num_points:
        if has_units:
            return "block_pcn"
        if collapsed:
            return "pcn"
    return DEFAULT_SAMPLER


def build_kernel(
    sampler: str,
    logdensity_fn: Callable,
    loglik_fn: Callable,
    dim: int,
    dtype: Any,
    options: Mapping[str, Any] | None = None,
    *,
    loglik_cache_fn: Callable | None = None,
    units: Any = None,
) -> Kernel:
    """Build the kernel of ``sampler`` for a target on flat positions of shape ``(dim,)``.

    Parameters
    ----------
    sampler : str
        A key of :data:`SAMPLERS`.
    logdensity_fn : callable
        ``(dim,) -> ()`` the log target; must return ``-inf`` (not NaN) where undefined.
    loglik_fn : callable
        ``(dim,) -> ()`` the log target minus ``log N(x; 0, I)`` (the part that is not
        the prior), used by ``pcn``, ``pcnl`` and ``elliptical``.
    dim : int
        Dimension of the flat position.
    dtype : dtype
        Floating dtype of the positions; every kernel parameter is cast to it.
    options : mapping, optional
        Sampler options (validated with :func:`resolve_options`).
    loglik_cache_fn : callable, optional
        ``(dim,) -> (loglik, cache)``: ``loglik_fn`` plus the factorisation behind it
        (:attr:`wide_bnn.targets.Target.loglik_cache_fn`). Kernels that can
        (``SAMPLERS[sampler].keeps_cache``) keep the cache of the current state, so that
        recording a draw reuses it; the others ignore it.
    units : UnitModel, optional
        The target's hidden-unit structure (:attr:`wide_bnn.targets.Target.units`);
        required by samplers with ``SAMPLERS[sampler].needs_units`` (``block_pcn``),
        ignored by the others.

    Returns
    -------
    Kernel

    Raises
    ------
    ValueError
        For invalid options, or a sampler that needs ``units`` without them.
    """
    resolved = resolve_options(sampler, options or {})
    extra = {}
    if SAMPLERS[sampler].needs_units:
        if units is None:
            raise ValueError(
                f"sampler={sampler!r} moves the hidden units of a one-hidden-layer MLP in "
                "blocks; this network has no such units (use wide_bnn.mlp(hidden=(width,)), "
                "or sampler='pcn' for other networks)"
            )
        extra["units"] = units
    if loglik_cache_fn is not None and SAMPLERS[sampler].keeps_cache:

        def safe_loglik_cache(position):
            value, cache = loglik_cache_fn(position)
            return _finite(value), cache

        extra["loglik_cache_fn"] = safe_loglik_cache

    # NaN or +inf must reject, never be accepted (elliptical slice would take a NaN,
    # since `NaN <= threshold` is False) nor poison tuning: map them to -inf.
    def safe_logdensity(position):
        return _finite(logdensity_fn(position))

    def safe_loglik(position):
        return _finite(loglik_fn(position))

    return SAMPLERS[sampler].build(
        safe_logdensity, safe_loglik, int(dim), jnp.dtype(dtype), resolved, **extra
    )


def _finite(value):
    return jnp.where(jnp.isfinite(value), value, -jnp.inf)

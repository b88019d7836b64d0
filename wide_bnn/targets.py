"""Sampling targets on flat positions, their initial positions and what is recorded per draw.

A :class:`Target` is what the sampling engine needs from the model: log-densities on a
flat vector ``(dim,)`` (the layout of :func:`jax.flatten_util.ravel_pytree`), a way
to draw initial positions and a recording function that maps a saved position to
function-space outputs. Three targets, one per sampling mode:

``"standard"``
    the network parameters themselves, target :func:`wide_bnn.posterior.log_posterior`;
``"repriorised"`` (``collapsed=False``)
    ``phi = (hidden, Z)`` with the whitened readout ``Z``, target
    :meth:`Repriorisation.log_density` (the paper's chain);
``"repriorised"`` (``collapsed=True``)
    the hidden parameters only, target :meth:`Repriorisation.log_marginal`; the
    readout is drawn exactly from ``p(B | hidden, data)`` for every *saved* draw.

Every coordinate has a N(0, 1) prior in all three, so each target also provides its
"likelihood part" ``log target - log N(x; 0, I)`` (for pCN and elliptical slice); for
the repriorised targets it is computed directly as
``sum_j log N(y_j; 0, Khat + sigma^2 I)``, avoiding the cancellation of two large
``||x||^2`` terms.

Recorded per saved draw (memory independent of the number of weights):
``f_test`` (network outputs with the exact readout), ``f_test_mean``
(``E[f(x_test) | hidden]``, Rao-Blackwellised, in both parameterisations),
``projections`` (fixed random projections of the parameters in the original weight
space, identical directions in every mode), optionally ``f_train`` / ``f_train_mean``
and ``params/<path>``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from wide_bnn import gaussian
from wide_bnn.data import RegressionData
from wide_bnn.nets import Network
from wide_bnn.posterior import log_likelihood, log_posterior
from wide_bnn.reprior import Repriorisation
from wide_bnn.units import UnitModel, unit_model

__all__ = [
    "PARAMETERISATIONS",
    "PROJECTION_SEED",
    "Target",
    "build_target",
    "param_names",
    "projection",
]

PARAMETERISATIONS = ("repriorised", "standard")

#: Seed of the fixed random projection directions; independent of the sampling seed so
#: that runs with different seeds, samplers and parameterisations project on the same
#: directions.
PROJECTION_SEED = 20220604


class Target(NamedTuple):
    """A sampling target on flat positions and its recording function.

    Attributes
    ----------
    logdensity_fn : callable
        ``(dim,) -> ()`` log target, constants included; ``-inf`` (never NaN or
        ``+inf``) where it cannot be evaluated.
    loglik_fn : callable
        ``(dim,) -> ()`` ``logdensity_fn(x) - log N(x; 0, I)``; ``-inf`` likewise.
    dim : int
        Dimension of the flat position.
    dtype : numpy.dtype
        Floating dtype of positions (that of the data).
    init_position : callable
        ``init_position(key) -> (dim,)``: the position of ``phi ~ N(0, I)`` (every
        parameter from its prior; in the standard parameterisation the readout is then
        mapped by ``T``, i.e. drawn from its exact conditional given the hidden part,
        so that both parameterisations start from the same distribution).
    record : callable
        ``record(key, position, consts, cache=None) -> dict`` of arrays for one saved
        draw; ``cache`` is the readout conditional at ``position`` (what
        ``loglik_cache_fn`` or ``units.cache`` returned; it spares the factorisation),
        or ``None``.
    record_consts : pytree
        Arrays ``record`` needs (test inputs, projection indices); passed as jit
        arguments rather than embedded as constants.
    repriorisation : Repriorisation
        The map and conditional used by the target and the recording.
    unravel : callable
        ``(dim,) -> pytree`` of the sampled coordinates.
    loglik_cache_fn : callable or None
        ``(dim,) -> (loglik, cache)``: ``loglik_fn`` together with the factorisation it
        computed, for kernels that keep it in their state so that ``record`` needs no
        second one (collapsed target only; ``None`` otherwise).
    units : UnitModel or None
        The likelihood as a function of a sum over hidden units
        (:func:`wide_bnn.units.unit_model`), for the ``block_pcn`` sampler; ``None``
        unless the network is a one-hidden-layer MLP.
    """

    logdensity_fn: Callable
    loglik_fn: Callable
    dim: int
    dtype: Any
    init_position: Callable
    record: Callable
    record_consts: Any
    repriorisation: Repriorisation
    unravel: Callable
    loglik_cache_fn: Callable | None = None
    units: UnitModel | None = None


def _finite(value):
    # NaN or +inf must reject a proposal, not be accepted (elliptical slice would take
    # a NaN, since `NaN <= threshold` is False) nor poison adaptation.
    return jnp.where(jnp.isfinite(value), value, -jnp.inf)


def build_target(
    net: Network,
    data: RegressionData,
    *,
    parameterisation: str = "repriorised",
    collapsed: bool = True,
    x_test: jax.Array | None = None,
    record_train: bool = False,
    keep_params: bool = False,
    num_projections: int = 100,
) -> Target:
    """The target and recording function of one sampling mode.

    Parameters
    ----------
    net : Network
    data : RegressionData
    parameterisation : {"repriorised", "standard"}
    collapsed : bool
        Repriorised only: sample the hidden parameters with the readout integrated out.
    x_test : jax.Array, shape (m, ...), optional
        Inputs at which outputs are recorded (validated by the caller); ``None``
        records at the training inputs.
    record_train : bool
        Also record ``f_train`` and ``f_train_mean`` at the training inputs.
    keep_params : bool
        Also record every parameter (standard weight space) as ``params/<path>``.
    num_projections : int
        Number of random projections of the parameters.

    Returns
    -------
    Target
    """
    if parameterisation not in PARAMETERISATIONS:
        raise ValueError(
            f"parameterisation must be one of {PARAMETERISATIONS}, got {parameterisation!r}"
        )
    if collapsed and parameterisation == "standard":
        raise ValueError("collapsed=True needs parameterisation='repriorised'")
    rp = Repriorisation(net, data)
    dtype = data.dtype
    params_shapes = jax.eval_shape(net.init, jax.random.key(0), data.x)
    params_zeros = _zeros(params_shapes)
    num_params = sum(leaf.size for leaf in jax.tree_util.tree_leaves(params_zeros))
    sampled = params_zeros["hidden"] if collapsed else params_zeros
    flat, unravel_sampled = ravel_pytree(sampled)
    dim = int(flat.size)

    def unravel(position):
        if dim == 0:
            return sampled
        return unravel_sampled(position)

    def features_loglik(hidden):
        # The likelihood part of both repriorised targets, exactly (kernel_reg = sigma^2).
        return gaussian.log_marginal_gaussian(
            rp.features(hidden), data.y, rp.noise_var, route=rp.route
        )

    if parameterisation == "standard":

        def logdensity_fn(position):
            return _finite(log_posterior(net, data, unravel(position)))

        def loglik_fn(position):
            return _finite(log_likelihood(net, data, unravel(position)))

        def to_params(key, position, cache):
            del key, cache
            params = unravel(position)
            return params, rp.conditional(params["hidden"])

    elif not collapsed:

        def logdensity_fn(position):
            return _finite(rp.log_density(unravel(position)))

        def loglik_fn(position):
            return _finite(features_loglik(unravel(position)["hidden"]))

        def to_params(key, position, cache):
            del key
            phi = unravel(position)
            cond = rp.conditional(phi["hidden"]) if cache is None else cache
            # With the default kernel_reg the map T is the exact conditional's own
            # square root, so one factorisation gives the readout and the predictions.
            readout = net.readout_from_matrix(cond.transform(net.readout_matrix(phi["readout"])))
            return {"hidden": phi["hidden"], "readout": readout}, cond

    else:

        def logdensity_fn(position):
            return _finite(rp.log_marginal(unravel(position)))

        def loglik_fn(position):
            return _finite(features_loglik(unravel(position)))

        def loglik_cache_fn(position):
            # The exact conditional of the readout holds the factorisation of the
            # marginal: one Cholesky gives the log-likelihood now and the readout draw
            # and predictions when the state is recorded.
            psi = rp.features(unravel(position))
            cond = gaussian.readout_conditional(psi, data.y, rp.noise_var, route=rp.route)
            return _finite(cond.log_marginal(psi, data.y)), cond

        def to_params(key, position, cache):
            hidden = unravel(position)
            cond = rp.conditional(hidden) if cache is None else cache
            readout = net.readout_from_matrix(cond.sample(key))
            return {"hidden": hidden, "readout": readout}, cond

    _, unravel_params = ravel_pytree(params_zeros)

    def init_position(key):
        # phi ~ N(0, I), the prior of every coordinate; one flat draw rather than one
        # per leaf keeps the compiled random-number code small.
        if parameterisation == "standard":
            phi = unravel_params(jax.random.normal(key, (num_params,), dtype))
            return _ravel(rp.forward(phi), dtype)
        return jax.random.normal(key, (dim,), dtype)

    x_record = data.x if x_test is None else x_test
    consts = {"x_test": x_record, "projection": projection(num_params, num_projections, dtype)}
    names = param_names(params_shapes) if keep_params else ()

    def record(key, position, consts, cache=None):
        params, cond = to_params(key, position, cache)
        hidden = params["hidden"]
        readout = net.readout_matrix(params["readout"])
        psi_test = net.readout_features(hidden, consts["x_test"])
        out = {
            "f_test": psi_test @ readout,
            "f_test_mean": _nan_unless(cond.ok, cond.predict_mean(psi_test)),
        }
        if record_train:
            psi_train = rp.features(hidden)
            out["f_train"] = psi_train @ readout
            out["f_train_mean"] = _nan_unless(cond.ok, cond.predict_mean(psi_train))
        theta = ravel_pytree(params)[0] if num_params else jnp.zeros((0,), dtype)
        out["projections"] = project(consts["projection"], theta)
        if keep_params:
            leaves = jax.tree_util.tree_leaves(params)
            out.update({f"params/{name}": leaf for name, leaf in zip(names, leaves, strict=True)})
        return out

    units = unit_model(
        net,
        data,
        sampled,
        parameterisation=parameterisation,
        collapsed=collapsed,
        dual_cache=rp.route == "dual",
    )
    return Target(
        logdensity_fn,
        loglik_fn,
        dim,
        jnp.dtype(dtype),
        init_position,
        record,
        consts,
        rp,
        unravel,
        loglik_cache_fn if collapsed else None,
        units,
    )


# -- projections ------------------------------------------------------------------------------


def projection(num_params: int, num_projections: int, dtype) -> dict[str, np.ndarray]:
    """Fixed random unit directions in parameter space, from :data:`PROJECTION_SEED`.

    With ``num_params >= num_projections`` the directions are a signed random
    partition ("count sketch"): a random permutation deals the parameters into
    ``num_projections`` groups of (almost) equal size, each direction is ``+-1`` on its
    group and 0 elsewhere, normalised. They are orthonormal and need memory
    ``O(num_params)`` rather than ``O(num_params * num_projections)``, so even
    million-weight networks are cheap to project. With fewer parameters than
    projections the directions are dense normalised Gaussians.

    Built with NumPy on the host (no compilation), identical on every machine.

    Returns
    -------
    dict
        ``{"index": (P, m) int32, "weight": (P, m)}`` (sketch; index ``num_params``
        selects an appended zero) or ``{"dense": (P, num_params)}``.
    """
    rng = np.random.default_rng(PROJECTION_SEED)
    dtype = np.dtype(dtype)
    if num_params < num_projections:
        dense = rng.standard_normal((num_projections, num_params))
        norms = np.linalg.norm(dense, axis=1, keepdims=True)
        return {"dense": (dense / np.where(norms > 0, norms, 1.0)).astype(dtype)}
    per_group = -(-num_params // num_projections)
    padded = per_group * num_projections
    slots = np.full(padded, num_params, np.int32)
    slots[:num_params] = rng.permutation(num_params)
    slot_signs = np.zeros(padded)
    slot_signs[:num_params] = rng.choice([-1.0, 1.0], size=num_params)
    # Slot s goes to group s % P, so the (fewer than P) padding slots fall in distinct
    # groups and every group keeps at least one parameter.
    index = np.ascontiguousarray(slots.reshape(per_group, num_projections).T)
    signs = slot_signs.reshape(per_group, num_projections).T
    counts = np.sum(np.abs(signs), axis=1, keepdims=True)
    return {"index": index, "weight": (signs / np.sqrt(counts)).astype(dtype)}


def project(proj: dict[str, jax.Array], theta: jax.Array) -> jax.Array:
    """Apply :func:`projection` directions to a flat parameter vector, shape (P,)."""
    if "dense" in proj:
        return proj["dense"] @ theta
    extended = jnp.concatenate([theta, jnp.zeros((1,), theta.dtype)])
    return jnp.sum(proj["weight"] * extended[proj["index"]], axis=1)


# -- helpers ------------------------------------------------------------------------------------


def param_names(tree: Any) -> tuple[str, ...]:
    """``"hidden/0/w"``-style names of the leaves of a parameter tree, in leaf order."""
    paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    return tuple("/".join(_key_name(k) for k in path) for path, _ in paths)


def _key_name(key) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _zeros(shapes):
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _ravel(tree, dtype):
    if not jax.tree_util.tree_leaves(tree):
        return jnp.zeros((0,), dtype)
    return ravel_pytree(tree)[0]


def _nan_unless(ok, value):
    # Recording happens at accepted states, where the factorisation worked; if it ever
    # does not (standard parameterisation), make it visible rather than silently wrong.
    return jnp.where(ok, value, jnp.nan)

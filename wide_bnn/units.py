"""Hidden units as blocks: the additive structure behind the ``block_pcn`` sampler.

In a network with one hidden layer of width ``d``, hidden unit ``j`` owns a column
``w_j`` of the hidden weights and its bias ``b_j``, and the readout sees its training
feature column

    psi_j = out_w_std / sqrt(d) * act(w_std / sqrt(d_in) * x @ w_j + b_std * b_j)    (n,)

which depends on that unit alone. The likelihood therefore depends on the units only
through a **sum over units** of one term per unit:

* repriorised (collapsed or not): the kernel ``K = sum_j psi_j psi_j^T`` (n, n), and
  ``log p(y | hidden) = sum_k log N(y_k; 0, K + out_b_std^2 1 1^T + sigma^2 I)``;
* standard: the outputs ``F = sum_j psi_j v_j^T`` (n, k), ``v_j`` the unit's row of the
  readout weights (then part of the unit), and
  ``log p(y | theta) = log N(y; F + out_b_std 1 b^T, sigma^2 I)``.

Changing a block of units changes the sum by the difference of the block's terms, so a
Metropolis-within-Gibbs sweep that proposes new values for one block at a time costs
about one evaluation of the features and the sum, plus one small likelihood evaluation
(an ``n x n`` Cholesky factorisation in the repriorised case) per block.

A *unit* is the vector ``u_j = [w_j, b_j]`` (``[w_j, b_j, v_j]`` in the standard
parameterisation), a priori N(0, I). Coordinates outside the units, the *rest*: none for
the collapsed target; the whitened readout ``Z`` for the non-collapsed one, independent
N(0, I) under the target and absent from the likelihood; the readout bias in the standard
parameterisation, which enters it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from wide_bnn import gaussian
from wide_bnn.data import RegressionData
from wide_bnn.nets import Network
from wide_bnn.posterior import gaussian_log_likelihood

__all__ = ["UnitModel", "supports", "unit_model"]


class UnitModel(NamedTuple):
    """The likelihood of a sampling target written as a function of a sum over hidden units.

    Attributes
    ----------
    num_units : int
        Hidden units ``d``.
    unit_dim : int
        Coordinates per unit.
    rest_dim : int
        Coordinates of the target outside the units.
    split : callable
        ``split(position (dim,)) -> (units (unit_dim, num_units), rest (rest_dim,))``:
        one column per unit.
    merge : callable
        Inverse of ``split``: ``merge(units, rest) -> position (dim,)``.
    features : callable
        ``features(units (unit_dim, m)) -> (n, m)``: the training feature columns of any
        ``m`` units (scaled for the full width).
    term : callable
        ``term(features (n, m), units (unit_dim, m)) -> array``: the contribution of
        these units to the sum (``(n, n)`` repriorised, ``(n, k)`` standard).
    loglik : callable
        ``loglik(total, rest) -> (value, aux)``: the log-likelihood part of the target
        given the sum of all terms; ``value`` is ``-inf`` (never NaN) where it cannot be
        evaluated, ``aux`` a pytree (the factorisation) passed on to ``cache``.
    cache : callable
        ``cache(features (n, num_units), aux, rest)``: what ``Target.record`` accepts as
        its ``cache`` (the readout conditional), or ``None``.
    rest_in_likelihood : bool
        Whether ``loglik`` depends on ``rest``; if not, the rest is independent N(0, I)
        under the target and can be redrawn exactly.
    """

    num_units: int
    unit_dim: int
    rest_dim: int
    split: Callable
    merge: Callable
    features: Callable
    term: Callable
    loglik: Callable
    cache: Callable
    rest_in_likelihood: bool


def supports(net: Network) -> bool:
    """Whether ``net`` has the unit structure: an :func:`~wide_bnn.mlp` with one hidden layer."""
    return net.spec is not None and len(net.spec.hidden) == 1


def unit_model(
    net: Network,
    data: RegressionData,
    sampled: Any,
    *,
    parameterisation: str,
    collapsed: bool,
    dual_cache: bool = True,
) -> UnitModel | None:
    """The :class:`UnitModel` of a sampling target, or ``None`` if ``net`` has no units.

    Parameters
    ----------
    net : Network
    data : RegressionData
    sampled : pytree
        The sampled coordinates' structure (zeros): the hidden parameters (collapsed),
        or ``{"hidden": ..., "readout": ...}``; flat positions are its
        :func:`jax.flatten_util.ravel_pytree` vectors.
    parameterisation : {"repriorised", "standard"}
    collapsed : bool
    dual_cache : bool
        Non-collapsed target only: whether the target's readout map uses the dual route,
        so that the factorisation kept by the kernel is the map's own (otherwise
        ``cache`` returns ``None`` and the recording factorises again).

    Returns
    -------
    UnitModel or None
    """
    if not supports(net):
        return None
    standard = parameterisation == "standard"
    hidden = sampled if collapsed else sampled["hidden"]
    (layer,) = hidden
    in_dim, width = layer["w"].shape
    has_bias = "b" in layer
    n, k = data.y.shape
    dtype = data.dtype
    feature_scale = jnp.asarray(net.out_w_std / math.sqrt(width), dtype)
    readout_bias = jnp.asarray(net.out_b_std, dtype)
    noise_var = jnp.asarray(data.noise_std**2, dtype)
    unravel = ravel_pytree(sampled)[1]
    unravel_rest = None if collapsed else ravel_pytree(sampled["readout"])[1]

    def split(position):
        tree = unravel(position)
        layer = tree[0] if collapsed else tree["hidden"][0]
        rows = [layer["w"]]
        if has_bias:
            rows.append(layer["b"][None, :])
        if standard:
            rows.append(tree["readout"]["w"].T)
        units = jnp.concatenate(rows, axis=0)
        if collapsed:
            rest = jnp.zeros((0,), dtype)
        elif standard:
            rest = tree["readout"].get("b", jnp.zeros((0,), dtype))
        else:
            rest = _ravel(tree["readout"])
        return units, rest

    def layer_of(units):
        layer = {"w": units[:in_dim]}
        if has_bias:
            layer["b"] = units[in_dim]
        return layer

    def merge(units, rest):
        hidden = [layer_of(units)]
        if collapsed:
            return _ravel(hidden)
        if standard:
            readout = {"w": units[-k:].T}
            if net.has_readout_bias:
                readout["b"] = rest
        else:
            readout = unravel_rest(rest)
        return _ravel({"hidden": hidden, "readout": readout})

    def features(units):
        return net.hidden_features([layer_of(units)], data.x) * feature_scale

    if standard:

        def term(features, units):
            return features @ units[-k:].T

        def loglik(total, rest):
            outputs = total + readout_bias * rest[None, :] if net.has_readout_bias else total
            return gaussian_log_likelihood(outputs, data.y, data.noise_std), ()

        def cache(features, aux, rest):
            del features, aux, rest
            return None

    else:
        bias_kernel = jnp.full((n, n), jnp.square(readout_bias), dtype)

        def term(features, units):
            del units
            return features @ features.T

        def loglik(total, rest):
            del rest
            value, factor, ok = gaussian.kernel_log_marginal(total + bias_kernel, data.y, noise_var)
            return value, (factor, ok)

        def cache(features, aux, rest):
            del rest
            if not (collapsed or dual_cache):
                return None
            if net.has_readout_bias:
                ones = jnp.full((n, 1), readout_bias, dtype)
                features = jnp.concatenate([features, ones], axis=1)
            factor, ok = aux
            return gaussian.dual_conditional(features, data.y, noise_var, factor, ok)

    unit_dim = in_dim + int(has_bias) + (k if standard else 0)
    rest_dim = int(_ravel(sampled).size) - width * unit_dim
    return UnitModel(
        width,
        unit_dim,
        rest_dim,
        split,
        merge,
        features,
        term,
        loglik,
        cache,
        standard and rest_dim > 0,
    )


def _ravel(tree):
    return ravel_pytree(tree)[0]

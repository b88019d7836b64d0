"""NumPyro plug-in: a wide BNN as a model component, with a repriorised readout.

Use a network inside any NumPyro model, with a latent noise scale or latent prior
scales, and let NUTS sample it in the repriorised coordinates of METHOD.md::

    import wide_bnn.numpyro as wbn

    def model(x, y=None):
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        f = wbn.bnn("net", net, x, y=y, noise_std=sigma)          # (n, k)
        numpyro.sample("y", dist.Normal(f, sigma), obs=y)

    mcmc = MCMC(NUTS(wbn.reparam(model)), num_warmup=500, num_samples=500)

Three pieces:

:func:`bnn`
    Registers the hidden parameters as sample sites ``<name>_hidden_<path>`` and the
    readout ``B = [W; b]`` (p, k) as the site ``<name>_readout``, all with N(0, 1)
    priors (names contain no ``/``, so ArviZ can write them to netCDF), and returns
    the outputs ``Psi(h, x) @ B``. With ``y`` given it attaches the training features,
    the targets and the current noise variance to the readout site's ``infer`` dict.
:func:`reparam` / :class:`ReadoutReparam`
    Replace that readout site by whitened coordinates ``<name>_readout_white``
    ``Z`` (p, k) with ``B = M + S Z`` (``S S^T = sigma^2 (G + sigma^2 I)^-1``), computed
    from the *current* hidden parameters and noise scale. ``Z`` gets the pulled-back
    prior ``log N(M + S Z; 0, I) + log |det S|``, so the model's log joint is the
    original one after an exact change of variables, whatever the likelihood: only
    efficiency depends on the likelihood being ``Normal(f, noise_std)``, in which
    case ``Z`` is exactly N(0, I) a posteriori and the hidden parameters tend to their
    prior as the network widens.
:func:`bnn_collapsed` and :func:`readout_posterior`
    The collapsed form: the readout is integrated out inside the model (the observed
    site ``<name>_y`` carries the marginal likelihood ``prod_j N(y_j; 0, Psi Psi^T +
    sigma^2 I)``, with a hand-written gradient) and exact readout draws are made
    afterwards, one per posterior draw, by :func:`readout_posterior`. This mirrors
    how NumPyro's Gaussian-process examples marginalise the latent function and
    predict in a post-processing step. :func:`readout_posterior` also gives fresh
    exact readout draws and Rao-Blackwellised means ``E[f(x_test) | h, sigma]`` for
    models built with :func:`bnn`.

Everything is a pure JAX function of the site values, so it works with every
``MCMC`` chain method, ``Predictive``, ``az.from_numpyro`` and
``numpyro.infer.util.initialize_model`` (for BlackJAX). This module imports NumPyro;
``import wide_bnn`` does not.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.infer.reparam import Reparam

from wide_bnn import gaussian
from wide_bnn.gaussian import ReadoutConditional
from wide_bnn.linalg import NumericalWarning
from wide_bnn.nets import Network

__all__ = [
    "INFER_KEY",
    "MarginalGaussian",
    "ReadoutReparam",
    "WhitenedReadoutPrior",
    "bnn",
    "bnn_collapsed",
    "readout_config",
    "readout_posterior",
    "reparam",
    "site_names",
]

INFER_KEY = "wide_bnn"
"""Key of the ``infer`` dict entry through which sites pass their data to the reparam."""

_SAFE = re.compile(r"[^0-9A-Za-z_]")


# -- the model components -----------------------------------------------------------------


def bnn(
    name: str,
    net: Network,
    x: jax.Array,
    *,
    y: jax.Array | None = None,
    noise_std: Any = None,
    w_std: Any = None,
    b_std: Any = None,
    out_w_std: Any = None,
    out_b_std: Any = None,
    route: str = "auto",
) -> jax.Array:
    """Sample a network's parameters from their N(0, 1) priors and return its outputs at ``x``.

    Parameters
    ----------
    name : str
        Prefix of the sample sites (letters, digits and ``_``; no ``/``).
    net : Network
        Any :mod:`wide_bnn.nets` network.
    x : jax.Array, shape (n, ...)
        Inputs at which the outputs are returned: the training inputs when ``y`` is
        given, any inputs otherwise (e.g. test inputs under ``Predictive``).
    y : jax.Array of shape (n,) or (n, k), optional
        The targets observed at ``x`` by the model's Gaussian likelihood. Given, the
        readout site carries what :func:`reparam` needs to whiten it; ``None`` (the
        prediction call) leaves an ordinary readout site, which ``Predictive``
        fills with the posterior draws of ``<name>_readout``.
    noise_std : float or scalar array, optional
        Standard deviation of the likelihood's noise; may be a latent variable.
        Required with ``y``.
    w_std, b_std : float or scalar array, optional
        Replace the hidden layers' weight / bias scales (e.g. by latent variables
        for a hierarchical prior). Only for :func:`~wide_bnn.mlp` networks; the
        parameters stay N(0, 1) and the scale multiplies them in every hidden layer.
    out_w_std, out_b_std : float or scalar array, optional
        Replace the readout's weight / bias scales (any network with the matching
        readout term).
    route : {"auto", "primal", "dual"}
        Linear algebra route of the whitening (see :mod:`wide_bnn.gaussian`).

    Returns
    -------
    jax.Array, shape (n, k)
        ``Psi(h, x) @ B`` (always two-dimensional; use ``f[:, 0]`` for one output).

    Notes
    -----
    Sites: one per hidden leaf, ``<name>_hidden_<path>`` (see :func:`site_names`),
    and ``<name>_readout`` (p, k), ``p = d + 1`` with a readout bias (its last row).
    Under :func:`reparam` (and with ``y``) the readout becomes a deterministic site
    and the latent site is ``<name>_readout_white``.
    """
    shapes, scales = _check_component(name, net, x, route, w_std, b_std, out_w_std, out_b_std)
    if y is not None:
        targets, noise_var = _check_targets(net, x, y, noise_std)
    elif noise_std is not None:
        _check_noise_std(noise_std)
    # Validation first, so that bad input never leaves half a model in the trace.
    hidden = _sample_hidden(name, shapes, x.dtype)
    feature_fn = _feature_fn(net, hidden, scales)
    psi = feature_fn(x)
    shape = (psi.shape[1], net.out_dim)
    infer = {}
    if y is not None:
        info = _info("readout", name, psi, targets, noise_var, route, feature_fn)
        infer = {INFER_KEY: info}
    readout = numpyro.sample(f"{name}_readout", _standard_normal(shape), infer=infer)
    return psi @ jnp.asarray(readout).astype(x.dtype)


def bnn_collapsed(
    name: str,
    net: Network,
    x: jax.Array,
    y: jax.Array,
    *,
    noise_std: Any,
    w_std: Any = None,
    b_std: Any = None,
    out_w_std: Any = None,
    out_b_std: Any = None,
    route: str = "auto",
) -> None:
    """A network with its readout integrated out: hidden sites plus the marginal likelihood.

    Samples the hidden parameters as :func:`bnn` does and observes ``y`` at the site
    ``<name>_y`` with :class:`MarginalGaussian`, i.e. the likelihood
    ``prod_j N(y_j; 0, Psi Psi^T + noise_std^2 I)`` of the readout model
    ``y = Psi B + noise_std * eps``. Do **not** add a likelihood for ``y`` yourself.
    After MCMC, :func:`readout_posterior` draws the readout exactly and predicts.

    Parameters
    ----------
    name, net, w_std, b_std, out_w_std, out_b_std, route
        As in :func:`bnn`.
    x : jax.Array, shape (n, ...)
        Training inputs.
    y : jax.Array of shape (n,) or (n, k)
        Training targets (required: the site is always observed).
    noise_std : float or scalar array
        Gaussian noise standard deviation; may be latent.
    """
    if y is None:
        raise ValueError(
            "y is required by bnn_collapsed; predict with readout_posterior(..., x_test=...)"
        )
    shapes, scales = _check_component(name, net, x, route, w_std, b_std, out_w_std, out_b_std)
    targets, noise_var = _check_targets(net, x, y, noise_std)
    hidden = _sample_hidden(name, shapes, x.dtype)
    feature_fn = _feature_fn(net, hidden, scales)
    psi = feature_fn(x)
    info = _info("marginal", name, psi, targets, noise_var, route, feature_fn)
    numpyro.sample(
        f"{name}_y",
        MarginalGaussian(psi, noise_var, num_outputs=net.out_dim, route=route),
        obs=targets,
        infer={INFER_KEY: info},
    )


def site_names(name: str, net: Network, x: jax.Array) -> list[str]:
    """Names of the hidden sample sites of :func:`bnn` (in ``jax.tree_util`` leaf order).

    Parameters
    ----------
    name : str
        The component's prefix.
    net : Network
    x : jax.Array, shape (n, ...)
        Example inputs (only the shape and dtype are used).

    Returns
    -------
    list of str
        ``<name>_hidden_<path>``, e.g. ``net_hidden_0_w`` for an MLP's first weights.
    """
    _check_name(name)
    return [site for site, _ in _hidden_sites(name, _hidden_shapes(net, x))]


# -- the reparameterisation ------------------------------------------------------------------


class WhitenedReadoutPrior(dist.Distribution):
    """The readout's N(0, I) prior pulled back to whitened coordinates ``Z`` (p, k).

    With ``B = T(Z) = M + S Z`` the density is
    ``log N(T(Z); 0, I) + log |det dT/dZ|``, so sampling ``Z`` from it and mapping
    by ``T`` is sampling ``B`` from its prior; :meth:`sample` does exactly that.

    Parameters
    ----------
    conditional : ReadoutConditional
        The factorisation defining ``T`` (from :func:`wide_bnn.gaussian.readout_conditional`).
    """

    support = constraints.real
    pytree_data_fields = ("conditional",)

    def __init__(self, conditional: ReadoutConditional, *, validate_args=None):
        self.conditional = conditional
        super().__init__(
            batch_shape=(), event_shape=tuple(conditional.mean.shape), validate_args=validate_args
        )

    def log_prob(self, value: jax.Array) -> jax.Array:
        """``log N(T(Z); 0, I) + log |det dT/dZ|`` for ``Z`` (..., p, k); ``-inf`` on failure."""
        value = jnp.asarray(value)
        batch = value.shape[: value.ndim - 2]
        if batch:
            flat = value.reshape((-1, *self.event_shape))
            return jax.vmap(self._log_prob)(flat).reshape(batch)
        return self._log_prob(value)

    def _log_prob(self, value):
        cond = self.conditional
        readout = cond.transform(value.astype(cond.mean.dtype))
        log_prior = -0.5 * (jnp.sum(jnp.square(readout)) + readout.size * math.log(2 * math.pi))
        result = log_prior + cond.log_det()
        # A failed factorisation rejects the proposal instead of poisoning the chain.
        return jnp.where(cond.ok & jnp.isfinite(result), result, -jnp.inf)

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        """``T^-1(B)`` with ``B ~ N(0, I)``, shape ``sample_shape + (p, k)``."""
        cond = self.conditional
        noise = jax.random.normal(key, (*sample_shape, *self.event_shape), cond.mean.dtype)
        flat = noise.reshape((-1, *self.event_shape))
        return jax.vmap(cond.whiten)(flat).reshape(noise.shape)


class ReadoutReparam(Reparam):
    """Whiten a readout site: ``B = M + S Z`` with ``Z`` at the new site ``<site>_white``.

    ``M`` and ``S`` are those of the Bayesian linear regression of ``targets`` on
    ``features`` with ridge ``noise_var`` (METHOD.md section 3), so with a Gaussian
    likelihood of that variance ``Z`` is exactly N(0, I) a posteriori. Usually built
    by :func:`readout_config` from the data :func:`bnn` attaches to the site.

    Parameters
    ----------
    features : jax.Array, shape (n, p)
        Training features ``Psi(h)`` at the current hidden parameters.
    targets : jax.Array, shape (n, k)
    noise_var : float or scalar array (may be traced)
        ``noise_std**2`` at the current noise scale.
    route : {"auto", "primal", "dual"}
    info : dict, optional
        Passed on to the ``infer`` dict of the new site (for :func:`readout_posterior`).
    """

    def __init__(self, features, targets, noise_var, *, route: str = "auto", info=None):
        _check_route(route)
        self.features = features
        self.targets = targets
        self.noise_var = noise_var
        self.route = route
        self.info = info

    def __call__(self, name, fn, obs):
        """Sample ``<name>_white`` and return ``(None, T(Z))``: the site becomes deterministic."""
        if obs is not None:
            raise ValueError(f"ReadoutReparam applies to latent sites, but {name!r} is observed")
        cond = gaussian.readout_conditional(
            self.features, self.targets, self.noise_var, route=self.route
        )
        if tuple(fn.shape()) != tuple(cond.mean.shape):
            raise ValueError(
                f"site {name!r} has shape {fn.shape()} but the readout is {cond.mean.shape}"
            )
        infer = {} if self.info is None else {INFER_KEY: {**self.info, "kind": "white"}}
        white = numpyro.sample(f"{name}_white", WhitenedReadoutPrior(cond), infer=infer)
        readout = cond.transform(jnp.asarray(white).astype(cond.mean.dtype))
        return None, readout


def readout_config(msg: dict) -> ReadoutReparam | None:
    """Config callable for ``numpyro.handlers.reparam``: whiten the readouts of :func:`bnn`.

    Returns a :class:`ReadoutReparam` for latent sites whose ``infer`` dict holds a
    readout entry under :data:`INFER_KEY`, ``None`` for every other site.
    """
    info = msg.get("infer", {}).get(INFER_KEY)
    if msg["type"] != "sample" or msg.get("is_observed") or info is None:
        return None
    if info.get("kind") != "readout":
        return None
    return ReadoutReparam(
        info["features"], info["targets"], info["noise_var"], route=info["route"], info=info
    )


def reparam(model: Callable | None = None) -> Callable:
    """Apply :class:`ReadoutReparam` to every :func:`bnn` readout of ``model``.

    ``reparam(model)`` is ``numpyro.handlers.reparam(model, config=readout_config)``;
    it can also be used as a decorator or context manager, like the handler.
    """
    return handlers.reparam(model, config=readout_config)


# -- the collapsed form -----------------------------------------------------------------------


class MarginalGaussian(dist.Distribution):
    """``prod_j N(y_j; 0, Psi Psi^T + noise_var I)``: targets with the readout integrated out.

    Event shape (n, k). :meth:`log_prob` uses
    :func:`wide_bnn.gaussian.log_marginal_gaussian` (one Cholesky, a hand-written
    gradient); :meth:`sample` draws ``Psi B + sqrt(noise_var) E`` with ``B``, ``E``
    standard normal.

    Parameters
    ----------
    features : jax.Array, shape (n, p)
    noise_var : float or scalar array (may be traced)
    num_outputs : int, optional
        ``k`` (default 1 unless taken from the value at :meth:`log_prob`).
    route : {"auto", "primal", "dual"}
    """

    support = constraints.real
    pytree_data_fields = ("features", "noise_var")
    pytree_aux_fields = ("route",)

    def __init__(
        self, features, noise_var, *, num_outputs: int = 1, route: str = "auto", validate_args=None
    ):
        _check_route(route)
        self.features = jnp.asarray(features)
        self.noise_var = jnp.asarray(noise_var, self.features.dtype)
        self.route = route
        event_shape = (self.features.shape[0], int(num_outputs))
        super().__init__(batch_shape=(), event_shape=event_shape, validate_args=validate_args)

    def log_prob(self, value: jax.Array) -> jax.Array:
        """``sum_j log N(value_j; 0, Psi Psi^T + noise_var I)`` for ``value`` of shape (n, k)."""
        return gaussian.log_marginal_gaussian(
            self.features, jnp.asarray(value), self.noise_var, route=self.route
        )

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        """Targets ``Psi B + sqrt(noise_var) E``, shape ``sample_shape + (n, k)``."""
        key_b, key_e = jax.random.split(key)
        n, k = self.event_shape
        p = self.features.shape[1]
        dtype = self.features.dtype
        readout = jax.random.normal(key_b, (*sample_shape, p, k), dtype)
        noise = jax.random.normal(key_e, (*sample_shape, n, k), dtype)
        signal = jnp.einsum("np,...pk->...nk", self.features, readout)
        return signal + jnp.sqrt(self.noise_var) * noise


def readout_posterior(
    rng_key: jax.Array,
    model: Callable,
    samples: dict[str, jax.Array],
    *model_args,
    x_test: jax.Array | None = None,
    name: str | None = None,
    batch_ndims: int = 1,
    batch_size: int = 64,
    **model_kwargs,
) -> dict[str, jax.Array]:
    """Exact readout draws (and predictions) given posterior draws of everything else.

    For each draw, re-runs ``model(*model_args, **model_kwargs)`` with the draw
    substituted, reads the features, targets and noise variance a :func:`bnn`
    (with ``y``) or :func:`bnn_collapsed` component attached to its sites, and draws
    ``B ~ p(B | hidden, noise, data)`` exactly. This is the second half of collapsed
    sampling; for :func:`bnn` models (reparameterised or not) it gives fresh exact
    readouts and Rao-Blackwellised predictions.

    Parameters
    ----------
    rng_key : jax.Array
        PRNG key.
    model : callable
        The model that was sampled (with or without :func:`reparam`).
    samples : dict of str to jax.Array
        Posterior draws, e.g. ``mcmc.get_samples()`` (leading dims: ``batch_ndims``).
        Must contain every latent site of the model except the readout.
    *model_args, **model_kwargs
        The arguments the model was sampled with (training ``x`` and ``y``).
    x_test : jax.Array of shape (m, ...), optional
        Inputs at which to predict.
    name : str, optional
        The component's ``name``; needed only when the model has several.
    batch_ndims : int
        Number of leading batch dims of ``samples`` (1 for ``get_samples()``, 2 for
        ``get_samples(group_by_chain=True)``).
    batch_size : int
        Draws processed at once (vectorised); bounds the memory, which is about
        ``batch_size`` copies of the (n, p) features.

    Returns
    -------
    dict
        ``"readout"`` (..., p, k): exact draws of ``B`` (NaN where the factorisation
        failed); with ``x_test`` also ``"f_test"`` (..., m, k), ``Psi(x_test) @ B``,
        and ``"f_test_mean"`` (..., m, k), ``E[f(x_test) | hidden, noise, data]``.
        ``...`` are the batch dims of ``samples``.

    Warns
    -----
    NumericalWarning
        When some factorisations failed.
    """
    if not isinstance(samples, dict) or not samples:
        raise ValueError("samples must be a non-empty dict of posterior draws")
    if isinstance(batch_ndims, bool) or not isinstance(batch_ndims, int) or batch_ndims < 0:
        raise ValueError(f"batch_ndims must be a non-negative int, got {batch_ndims!r}")
    leaves = {key: jnp.asarray(value) for key, value in samples.items()}
    batch_shape = next(iter(leaves.values())).shape[:batch_ndims]
    for key, value in leaves.items():
        if value.shape[:batch_ndims] != batch_shape:
            raise ValueError(
                f"samples[{key!r}] has leading shape {value.shape[:batch_ndims]}, "
                f"expected {batch_shape} (batch_ndims={batch_ndims})"
            )
    num_draws = math.prod(batch_shape)
    flat = {
        key: value.reshape((num_draws, *value.shape[batch_ndims:])) for key, value in leaves.items()
    }
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")

    def one(args):
        key, draw = args
        key_model, key_readout = jax.random.split(key)
        seeded = handlers.seed(handlers.substitute(model, data=draw), key_model)
        trace = handlers.trace(seeded).get_trace(*model_args, **model_kwargs)
        info = _find_info(trace, name)
        cond = gaussian.readout_conditional(
            info["features"], info["targets"], info["noise_var"], route=info["route"]
        )
        readout = cond.sample(key_readout)
        out = {"readout": readout, "ok": cond.ok}
        if x_test is not None:
            psi_test = info["feature_fn"](jnp.asarray(x_test))
            out["f_test"] = psi_test @ readout
            out["f_test_mean"] = cond.predict_mean(psi_test)
        return out

    keys = jax.random.split(rng_key, num_draws)
    result = jax.lax.map(one, (keys, flat), batch_size=min(batch_size, num_draws))
    ok = result.pop("ok")
    failed = int(jnp.sum(~ok))
    if failed:
        warnings.warn(
            f"{failed} of {num_draws} readout factorisations failed; their draws are NaN "
            "(use float64 or a larger noise_std)",
            NumericalWarning,
            stacklevel=2,
        )
    out = {}
    for key, value in result.items():
        mask = ok.reshape((num_draws,) + (1,) * (value.ndim - 1))
        value = jnp.where(mask, value, jnp.nan)
        out[key] = value.reshape((*batch_shape, *value.shape[1:]))
    return out


# -- helpers --------------------------------------------------------------------------------


def _info(kind, name, psi, targets, noise_var, route, feature_fn):
    return {
        "kind": kind,
        "name": name,
        "features": psi,
        "targets": targets,
        "noise_var": noise_var,
        "route": route,
        "feature_fn": feature_fn,
    }


def _find_info(trace, name):
    found = {}
    for site in trace.values():
        info = (site.get("infer") or {}).get(INFER_KEY)
        if info is None or info.get("kind") not in ("readout", "white", "marginal"):
            continue
        if name is None or info["name"] == name:
            # A reparameterised readout leaves its data on the whitened site only.
            found.setdefault(info["name"], info)
    if not found:
        where = "any" if name is None else f"the {name!r}"
        raise ValueError(
            f"the model has no wide_bnn component ({where}) with training data: call "
            "bnn(..., y=y, noise_std=...) or bnn_collapsed with the training arguments"
        )
    if len(found) > 1:
        raise ValueError(f"the model has several wide_bnn components {sorted(found)}: pass name=")
    return next(iter(found.values()))


def _standard_normal(shape):
    return dist.Normal(0.0, 1.0).expand(tuple(shape)).to_event(len(shape))


def _hidden_shapes(net, x):
    if not isinstance(net, Network):
        raise ValueError(f"net must be a wide_bnn Network, got {type(net).__name__}")
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise ValueError(f"x must be an array, got {type(x).__name__}")
    if len(x.shape) < 2:
        raise ValueError(f"x must have shape (n, features...), got {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be a floating array, got dtype {x.dtype}")
    abstract_x = jax.ShapeDtypeStruct(tuple(x.shape), x.dtype)
    return jax.eval_shape(net.init_hidden, jax.random.key(0), abstract_x)


def _hidden_sites(name, shapes):
    sites = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        parts = [_SAFE.sub("_", _key_name(entry)) for entry in path]
        sites.append(("_".join([name, "hidden", *parts]), leaf))
    names = [site for site, _ in sites]
    if len(set(names)) != len(names):
        raise ValueError(f"the hidden parameters of this network give clashing site names {names}")
    return sites


def _key_name(entry) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _check_component(name, net, x, route, w_std, b_std, out_w_std, out_b_std):
    _check_name(name)
    _check_route(route)
    shapes = _hidden_shapes(net, x)
    scales = _check_scales(net, w_std, b_std, out_w_std, out_b_std)
    return shapes, scales


def _sample_hidden(name, shapes, dtype):
    leaves = []
    for site, leaf in _hidden_sites(name, shapes):
        value = numpyro.sample(site, _standard_normal(leaf.shape))
        # Keep the data's precision whatever NumPyro's default float is.
        leaves.append(jnp.asarray(value).astype(dtype))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shapes), leaves)


def _feature_fn(net, hidden, scales):
    w_ratio, b_ratio, out_w_std, out_b_std = scales
    if w_ratio is not None or b_ratio is not None:
        # NTK parameterisation: a layer's scale multiplies its N(0, 1) parameters, so a
        # latent scale is the fixed one times a ratio applied to the parameters.
        def rescale(path, leaf):
            kind = _key_name(path[-1]) if path else ""
            ratio = w_ratio if kind == "w" else b_ratio if kind == "b" else None
            return leaf if ratio is None else leaf * jnp.asarray(ratio, leaf.dtype)

        hidden = jax.tree_util.tree_map_with_path(rescale, hidden)

    def features(x):
        if out_w_std is None and out_b_std is None:
            return net.readout_features(hidden, x)
        phi = net.hidden_features(hidden, x)
        d = phi.shape[-1]
        w_scale = net.out_w_std if out_w_std is None else out_w_std
        psi = phi * (jnp.asarray(w_scale, phi.dtype) / math.sqrt(d))
        if net.has_readout_bias:
            b_scale = net.out_b_std if out_b_std is None else out_b_std
            column = jnp.broadcast_to(jnp.asarray(b_scale, phi.dtype), (*phi.shape[:-1], 1))
            psi = jnp.concatenate([psi, column], axis=-1)
        return psi

    return features


def _check_scales(net, w_std, b_std, out_w_std, out_b_std):
    for arg, value in (("w_std", w_std), ("b_std", b_std), ("out_w_std", out_w_std)):
        if value is not None:
            _check_positive_scalar(arg, value)
    if out_b_std is not None:
        _check_positive_scalar("out_b_std", out_b_std)
        if not net.has_readout_bias:
            raise ValueError("out_b_std is given but the network has no readout bias (out_b_std=0)")
    w_ratio = b_ratio = None
    if w_std is not None or b_std is not None:
        spec = net.spec
        if spec is None:
            raise ValueError(
                "w_std / b_std can be replaced only for mlp() networks; for other networks "
                "put the scale inside the feature map"
            )
        if w_std is not None:
            w_ratio = w_std / spec.w_std
        if b_std is not None:
            if spec.b_std == 0:
                raise ValueError("b_std is given but the network's hidden layers have no bias")
            b_ratio = b_std / spec.b_std
    return w_ratio, b_ratio, out_w_std, out_b_std


def _check_targets(net, x, y, noise_std):
    if noise_std is None:
        raise ValueError("noise_std is required when y is given (it defines the whitening)")
    _check_noise_std(noise_std)
    targets = jnp.asarray(y)
    if targets.ndim == 1:
        targets = targets[:, None]
    if targets.ndim != 2 or targets.shape != (x.shape[0], net.out_dim):
        raise ValueError(
            f"y must have shape (n,) or (n, k) = ({x.shape[0]}, {net.out_dim}), got {jnp.shape(y)}"
        )
    if not jnp.issubdtype(targets.dtype, jnp.floating):
        raise ValueError(f"y must be a floating array, got dtype {targets.dtype}")
    noise_var = jnp.square(jnp.asarray(noise_std, x.dtype))
    return targets.astype(x.dtype), noise_var


def _check_noise_std(noise_std):
    _check_positive_scalar("noise_std", noise_std)


def _check_positive_scalar(arg, value):
    if isinstance(value, bool) or jnp.shape(value) != ():
        raise ValueError(f"{arg} must be a positive scalar, got {value!r}")
    if isinstance(value, jax.core.Tracer):
        return  # a latent value: its prior's support is the user's responsibility
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{arg} must be a positive scalar, got {value!r}") from exc
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{arg} must be positive and finite, got {number}")


def _check_name(name):
    if not isinstance(name, str) or not name or _SAFE.search(name):
        raise ValueError(
            f"name must be a non-empty str of letters, digits and '_' (no '/': ArviZ's "
            f"netCDF writer rejects it), got {name!r}"
        )


def _check_route(route):
    if route not in gaussian.ROUTES:
        raise ValueError(f"route must be one of {gaussian.ROUTES}, got {route!r}")

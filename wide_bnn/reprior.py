"""Repriorisation: whiten the readout of a network so that its posterior is nearly N(0, I).

Given the hidden parameters ``h`` the readout ``B`` (p, k) of a network is a Bayesian
linear regression on the features ``Psi(h)`` (n, p). The map

    T(h, Z) = (h, B),    B = M(h) + S(h) Z,    S S^T = lam (G + lam I)^-1

(``G = Psi^T Psi``, ``M = (G + lam I)^-1 Psi^T Y``, ``lam = kernel_reg``, by default
``sigma^2``) turns the posterior into a density on ``phi = (h, Z)`` that tends to
N(0, I) as the network gets wider (METHOD.md sections 2-4). With ``lam = sigma^2``,

    log p~(h, Z) = log N(Z; 0, I) + log N(h; 0, I) + sum_j log N(y_j; 0, Psi Psi^T + sigma^2 I)

exactly, so ``Z`` can also be integrated out ("collapsed" sampling of ``h``, then an
exact draw of ``B | h``).

:class:`Repriorisation` binds a :class:`~wide_bnn.nets.Network` and its data to the
pure functions of :mod:`wide_bnn.gaussian`, which hold the algebra and the routes.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp

from wide_bnn import gaussian
from wide_bnn.data import RegressionData
from wide_bnn.gaussian import ReadoutConditional
from wide_bnn.linalg import CholeskyError
from wide_bnn.nets import Network
from wide_bnn.posterior import log_standard_normal

__all__ = ["ReadoutConditional", "Repriorisation"]

Params = dict[str, Any]


class Repriorisation:
    """The repriorisation map of a network on fixed data, its density and its collapsed form.

    Parameters
    ----------
    net : Network
        Any network of :mod:`wide_bnn.nets` (MLP, ResNet, custom feature map), with or
        without a readout bias, any number of outputs.
    data : RegressionData
        Training data; ``data.out_dim`` must equal ``net.out_dim``.
    kernel_reg : float, optional
        Ridge ``lam > 0`` of the map. ``None`` (default) means ``noise_std**2``: the
        only choice under which ``Z`` is exactly N(0, I) under the posterior (and the
        fast, collapsed evaluation of :meth:`log_density`). Other values still give
        an exact MCMC target (density and log-det are consistent).
    route : {"auto", "primal", "dual"}
        Linear algebra route: ``"primal"`` factors a (p, p) matrix (the reference
        implementation's map), ``"dual"`` an (n, n) one; ``"auto"`` picks ``"dual"``
        when ``n < p``. The resolved value is :attr:`route`. Densities, marginals,
        draws and predictions agree across routes; the coordinates ``Z`` differ by a
        rotation (see :mod:`wide_bnn.gaussian`).

    Attributes
    ----------
    net, data, kernel_reg, route
        As given (``kernel_reg`` resolved to a float, ``route`` to a concrete route).
    noise_var : float
        ``noise_std**2``.
    num_features : int
        ``p``, the readout fan-in (plus one with a readout bias).
    exact : bool
        Whether ``kernel_reg == noise_std**2`` (then ``Z`` is exactly N(0, I) and
        :meth:`log_density` uses the collapsed identity).

    Notes
    -----
    ``phi`` has the structure of ``params``: ``{"hidden": ..., "readout": {"w": (d, k),
    "b": (k,)}}`` with the readout entries holding the rows of ``Z`` (p, k) split as in
    ``net.readout_matrix``. All methods are pure and can be jitted, vmapped and
    differentiated. When the factorisation fails, eager calls of :meth:`forward` /
    :meth:`inverse` raise :class:`~wide_bnn.linalg.CholeskyError` and traced ones
    return NaN readouts (check ``conditional(hidden).ok``); densities return ``-inf``.

    Float64 is recommended for sampling with small ``noise_std`` (float32 log-density
    differences err by ~1e-3 at ``noise_std = 0.1``); float32 works and keeps its dtype.

    Examples
    --------
    >>> rp = Repriorisation(net, data)                              # doctest: +SKIP
    >>> phi = rp.inverse(params); params2 = rp.forward(phi)         # doctest: +SKIP
    >>> value = rp.log_density(phi)                                 # doctest: +SKIP
    """

    def __init__(
        self,
        net: Network,
        data: RegressionData,
        *,
        kernel_reg: float | None = None,
        route: str = "auto",
    ):
        if not isinstance(net, Network):
            raise ValueError(f"net must be a wide_bnn Network, got {type(net).__name__}")
        if not isinstance(data, RegressionData):
            raise ValueError(f"data must be a RegressionData, got {type(data).__name__}")
        if data.out_dim != net.out_dim:
            raise ValueError(
                f"data has {data.out_dim} output(s) (columns of y) but net.out_dim is {net.out_dim}"
            )
        if route not in gaussian.ROUTES:
            raise ValueError(f"route must be one of {gaussian.ROUTES}, got {route!r}")
        noise_var = float(data.noise_std) ** 2
        if kernel_reg is None:
            reg = noise_var
        else:
            ok = isinstance(kernel_reg, numbers.Real) and not isinstance(kernel_reg, bool)
            if not ok or not math.isfinite(kernel_reg) or kernel_reg <= 0:
                raise ValueError(f"kernel_reg must be a positive finite float, got {kernel_reg!r}")
            reg = float(kernel_reg)
        shapes = jax.eval_shape(net.init, jax.random.key(0), data.x)
        self.net = net
        self.data = data
        self.noise_var = noise_var
        self.kernel_reg = reg
        self.exact = reg == noise_var
        self.num_features = shapes["readout"]["w"].shape[0] + int(net.has_readout_bias)
        self.route = gaussian.resolve_route(route, data.num_points, self.num_features)
        self._shapes = shapes

    def __repr__(self) -> str:
        return (
            f"Repriorisation({self.net.name}, n={self.data.num_points}, "
            f"p={self.num_features}, k={self.data.out_dim}, kernel_reg={self.kernel_reg:g}, "
            f"route={self.route!r})"
        )

    # -- building blocks --------------------------------------------------------------------
    def features(self, hidden: Any) -> jax.Array:
        """Training features ``Psi(h)``, shape (n, p)."""
        self._check_hidden(hidden)
        return self.net.readout_features(hidden, self.data.x)

    def conditional(self, hidden: Any) -> ReadoutConditional:
        """The exact conditional posterior of the readout given ``hidden`` (one factorisation).

        Returns
        -------
        ReadoutConditional
            ``mean`` (p, k), ``sample(key)``, ``predict_mean(psi_test)``,
            ``predict_cov(psi_test)``, ``ok``; ``reg`` is ``noise_std**2``.
        """
        return gaussian.readout_conditional(
            self.features(hidden), self.data.y, self.noise_var, route=self.route
        )

    def _map(self, hidden: Any) -> ReadoutConditional:
        return gaussian.readout_conditional(
            self.features(hidden), self.data.y, self.kernel_reg, route=self.route
        )

    # -- the map T ---------------------------------------------------------------------------
    def forward(self, phi: Params) -> Params:
        """``T(phi)``: whitened coordinates to network parameters.

        Parameters
        ----------
        phi : dict
            ``{"hidden": ..., "readout": {"w": (d, k), "b": (k,)}}`` holding ``Z``.

        Returns
        -------
        dict
            ``params`` with the same structure.
        """
        self._check_tree("phi", phi)
        cond = self._map(phi["hidden"])
        _raise_if_failed(cond.ok)
        b = _nan_unless(cond.ok, cond.transform(self.net.readout_matrix(phi["readout"])))
        return {"hidden": phi["hidden"], "readout": self.net.readout_from_matrix(b)}

    def inverse(self, params: Params) -> Params:
        """``T^-1(params)``: network parameters to whitened coordinates ``phi``."""
        self._check_tree("params", params)
        cond = self._map(params["hidden"])
        _raise_if_failed(cond.ok)
        z = _nan_unless(cond.ok, cond.whiten(self.net.readout_matrix(params["readout"])))
        return {"hidden": params["hidden"], "readout": self.net.readout_from_matrix(z)}

    def log_det_jacobian(self, phi: Params) -> jax.Array:
        """``log |det dT/dphi|`` (scalar); depends on the hidden part only.

        Equals ``(k/2) [p log lam - log det(G + lam I_p)]
        = (k/2) [n log lam - log det(K + lam I_n)]``.
        """
        self._check_tree("phi", phi)
        return self._map(phi["hidden"]).log_det()

    # -- densities ---------------------------------------------------------------------------
    def log_density_and_ok(self, phi: Params) -> tuple[jax.Array, jax.Array]:
        """:meth:`log_density` and whether its factorisation succeeded (bool scalar)."""
        self._check_tree("phi", phi)
        z = self.net.readout_matrix(phi["readout"])
        kernel_reg = None if self.exact else self.kernel_reg
        value, ok = gaussian.reprior_log_density_and_ok(
            self.features(phi["hidden"]),
            self.data.y,
            z,
            self.noise_var,
            kernel_reg,
            route=self.route,
        )
        return value + _log_prior(phi["hidden"]), ok

    def log_density(self, phi: Params) -> jax.Array:
        """The repriorised log-density of ``phi`` (scalar), constants included.

        ``log_posterior(net, data, forward(phi)) + log_det_jacobian(phi)``; with the
        default ``kernel_reg`` computed as ``log N(phi; 0, I) + log marginal`` with a
        hand-written gradient. ``-inf`` (never NaN) when the features are not finite
        or a factorisation fails.
        """
        return self.log_density_and_ok(phi)[0]

    def log_marginal_and_ok(self, hidden: Any) -> tuple[jax.Array, jax.Array]:
        """:meth:`log_marginal` and whether its factorisation succeeded (bool scalar)."""
        value, ok = gaussian.log_marginal_gaussian_and_ok(
            self.features(hidden), self.data.y, self.noise_var, route=self.route
        )
        return value + _log_prior(hidden), ok

    def log_marginal(self, hidden: Any) -> jax.Array:
        """Collapsed log-target ``log N(h; 0, I) + sum_j log N(y_j; 0, Khat + sigma^2 I)``.

        The readout is integrated out exactly (always with ``sigma^2``, whatever
        ``kernel_reg``). Scalar, ``-inf`` on failure; reverse-mode differentiable.
        """
        return self.log_marginal_and_ok(hidden)[0]

    # -- the collapsed form's readout ---------------------------------------------------------
    def sample_readout(self, key: jax.Array, hidden: Any) -> Params:
        """An exact draw of the readout from ``p(B | hidden, data)``.

        Returns
        -------
        dict
            ``{"w": (d, k), "b": (k,)}`` (``"b"`` only with a readout bias).
        """
        return self.net.readout_from_matrix(self.conditional(hidden).sample(key))

    def predict_mean(self, hidden: Any, x_test: jax.Array) -> jax.Array:
        """Rao-Blackwellised ``E[f(x_test) | hidden, data]``, shape (m, k)."""
        return self.conditional(hidden).predict_mean(self._test_features(hidden, x_test))

    def predict_cov(self, hidden: Any, x_test: jax.Array) -> jax.Array:
        """``Cov[f(x_test) | hidden, data]`` of each output, shape (m, m)."""
        return self.conditional(hidden).predict_cov(self._test_features(hidden, x_test))

    # -- checks --------------------------------------------------------------------------------
    def _test_features(self, hidden, x_test):
        x_test = jnp.asarray(x_test)
        if x_test.shape[1:] != self.data.x.shape[1:] or x_test.ndim != self.data.x.ndim:
            raise ValueError(
                f"x_test must have shape (m, {', '.join(map(str, self.data.x.shape[1:]))}) "
                f"like the training inputs, got {x_test.shape}"
            )
        if x_test.dtype != self.data.dtype:
            raise ValueError(f"x_test has dtype {x_test.dtype} but the data are {self.data.dtype}")
        self._check_hidden(hidden)
        return self.net.readout_features(hidden, x_test)

    def _check_hidden(self, hidden):
        _check_matches("hidden", hidden, self._shapes["hidden"])

    def _check_tree(self, name, tree):
        if not isinstance(tree, dict) or set(tree) != {"hidden", "readout"}:
            raise ValueError(f"{name} must be a dict with keys 'hidden' and 'readout'")
        _check_matches(name, tree, self._shapes)


def _check_matches(name, tree, expected):
    got_def = jax.tree_util.tree_structure(tree)
    want_def = jax.tree_util.tree_structure(expected)
    if got_def != want_def:
        raise ValueError(f"{name} has the wrong structure: expected {want_def}, got {got_def}")
    for got, want in zip(
        jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(expected), strict=True
    ):
        if jnp.shape(got) != want.shape:
            raise ValueError(
                f"{name} has a leaf of shape {jnp.shape(got)} where {want.shape} is expected"
            )


def _raise_if_failed(ok):
    # Under jit the flag is a tracer: the caller owns it (ReadoutConditional.ok);
    # eagerly a failure must not pass silently.
    if isinstance(ok, jax.core.Tracer):
        return
    if not bool(ok):
        raise CholeskyError(
            "the readout factorisation failed (non-finite features or a matrix that is "
            "not positive definite); use float64 or a larger noise_std / kernel_reg"
        )


def _nan_unless(ok, value):
    # Traced failures cannot raise: make them loud (NaN) rather than silently wrong.
    return jnp.where(ok, value, jnp.nan)


def _log_prior(hidden):
    # No hidden layer (linear regression): add nothing, so no default-dtype zero
    # can upcast a float32 density.
    if not jax.tree_util.tree_leaves(hidden):
        return 0.0
    return log_standard_normal(hidden)

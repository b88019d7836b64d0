"""NNGP kernels of the library's networks and the GP posterior of their infinite-width limit.

For an MLP (:func:`wide_bnn.mlp`) in NTK parameterisation the prior over functions
tends, as every hidden width grows, to a Gaussian process whose kernel follows the
layer recursion (``K^l`` is the pre-activation covariance of layer ``l``)::

    K^1(x, x')  = w_std^2 * x.x' / d_in + b_std^2
    K^{l+1}     = w_std^2 * E[act(u) act(v)] + b_std^2,   (u, v) ~ N(0, [[K11, K12], [K12, K22]])
    K(x, x')    = out_w_std^2 * E[act(u) act(v)] + out_b_std^2   (readout, replaces the last line)

with ``K = out_w_std^2 * x.x' / d_in + out_b_std^2`` when there is no hidden layer.
The expectation (the *dual* of the activation) has a closed form for relu and the
piecewise-linear family, erf, exact gelu and the identity; any other activation is
integrated by 2-D Gauss-Hermite quadrature. Quadrature converges slowly when a
pre-activation variance is large (the integrand then varies on a scale much finer
than the Gaussian), so every quadrature kernel estimates its own error by redoing
the diagonal with twice the order and warns (``NumericalWarning``) above
:data:`QUADRATURE_RTOL`.

Every kernel entry only needs its own cross covariance and the two diagonal
trajectories, so large inputs are computed tile by tile: the diagonal
trajectories first (O(n)), then ``block_size x block_size`` tiles of the cross
recursion. A symmetric kernel computes only its upper tiles and mirrors them, so
it is exactly symmetric and costs half.

Networks without a closed-form recursion (ResNets, user feature maps) get a
Monte Carlo estimate, :func:`nngp_kernel_mc`, averaging the empirical kernel
``Psi Psi^T`` over prior draws of the hidden parameters.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve, solve_triangular

from wide_bnn.activations import Activation, get_activation
from wide_bnn.data import RegressionData, as_float_array
from wide_bnn.linalg import NumericalWarning, cholesky_with_jitter
from wide_bnn.nets import MLPSpec, Network

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_QUADRATURE_ORDER",
    "QUADRATURE_RTOL",
    "NNGPKernelEstimate",
    "NNGPPosterior",
    "mlp_nngp_kernel",
    "nngp_kernel",
    "nngp_kernel_mc",
    "nngp_log_marginal_likelihood",
    "nngp_predict",
]

DEFAULT_BLOCK_SIZE = 256
"""Side of the square tiles the kernel is computed in (rows x columns per tile)."""

DEFAULT_QUADRATURE_ORDER = 48
"""Gauss-Hermite nodes per dimension for activations without a closed-form dual."""

QUADRATURE_RTOL = 1e-4
"""Estimated relative quadrature error above which the kernel warns (NumericalWarning)."""

_MAX_QUADRATURE_ORDER = 400


class NNGPPosterior(NamedTuple):
    """GP posterior of the infinite-width network at test inputs; unpacks as ``mean, cov``.

    Attributes
    ----------
    mean : jax.Array, shape (m, k)
        Posterior mean of the noise-free outputs ``f(x_test)``.
    cov : jax.Array, shape (m, m) or (m,)
        Posterior covariance shared by all ``k`` outputs (``full_cov=True``), or
        only its diagonal, the marginal variances (``full_cov=False``).
    """

    mean: jax.Array
    cov: jax.Array


class NNGPKernelEstimate(NamedTuple):
    """Monte Carlo NNGP kernel; unpacks as ``mean, standard_error``.

    Attributes
    ----------
    mean : jax.Array, shape (n1, n2)
        Average of the empirical kernels ``Psi(x1) Psi(x2)^T`` over prior draws.
    standard_error : jax.Array, shape (n1, n2)
        Elementwise Monte Carlo standard error of ``mean``.
    """

    mean: jax.Array
    standard_error: jax.Array


# -- numerics -------------------------------------------------------------------------


@jax.custom_jvp
def _safe_sqrt(x: jax.Array) -> jax.Array:
    """``sqrt(max(x, 0))`` with derivative 0 (not inf) at and below 0."""
    return jnp.sqrt(jnp.maximum(x, 0))


@_safe_sqrt.defjvp
def _safe_sqrt_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    y = _safe_sqrt(x)
    positive = x > 0
    # The double `where` keeps the unused branch finite, so its zero cotangent cannot
    # turn into 0 * inf = NaN.
    dy = jnp.where(positive, dx / (2 * jnp.where(positive, y, 1)), 0)
    return y, dy


@functools.lru_cache(maxsize=32)
def _hermite_rule(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss-Hermite nodes and weights normalised to sum to one (float64)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(order)
    return nodes, weights / weights.sum()


# -- dual activations: E[act(u) act(v)] for (u, v) ~ N(0, [[k11, k12], [k12, k22]]) ---------


def _piecewise_linear_dual(a: float, b: float, k11, k12, k22):
    # act = a*min(x,0) + b*max(x,0); arc-cosine kernel of degree 1 generalised to two slopes.
    prod = k11 * k22
    s = _safe_sqrt(prod - k12 * k12)
    defined = prod > 0
    # A zero-variance input has k12 = 0, so the angle is irrelevant there; pick one whose
    # arctan2 derivative is finite (arctan2 at (0, 0) has a NaN gradient).
    theta = jnp.arctan2(jnp.where(defined, s, 0), jnp.where(defined, k12, 1))
    c1 = (a - b) ** 2 / (2 * math.pi)
    c0 = (a * a + b * b) / 2
    return c1 * s + (c0 - c1 * theta) * k12


def _erf_dual(k11, k12, k22):
    denominator = jnp.sqrt((1 + 2 * k11) * (1 + 2 * k22))
    # |2 k12| < denominator holds with a wide margin; the clip only guards rounding.
    return (2 / math.pi) * jnp.arcsin(jnp.clip(2 * k12 / denominator, -1, 1))


def _gelu_dual(k11, k12, k22):
    prod = (1 + k11) * (1 + k22)
    # d2 >= 1 + k11 + k22 > 0 by Cauchy-Schwarz: no square root of zero here.
    d2 = prod - k12 * k12
    d = jnp.sqrt(d2)
    theta = jnp.arctan2(k12, d)
    return ((k12 * k12 + k11 * k22 * d2) / (prod * d) + k12 * theta) / (2 * math.pi) + k12 / 4


def _quadrature_dual(fn: Callable, order: int, k11, k12, k22):
    # u = a z1, v = b z1 + c z2 with z1, z2 iid N(0, 1); inner sum over z2 vectorised,
    # outer sum over z1 scanned so memory stays at (..., order).
    nodes, weights = _hermite_rule(order)
    dtype = k12.dtype
    a = _safe_sqrt(k11)
    has_variance = a > 0
    b = jnp.where(has_variance, k12 / jnp.where(has_variance, a, 1), 0)
    c = _safe_sqrt(k22 - b * b)
    inner_nodes = jnp.asarray(nodes, dtype).reshape((1,) * k12.ndim + (order,))
    inner_weights = jnp.asarray(weights, dtype).reshape((1,) * k12.ndim + (order,))
    b_, c_ = b[..., None], c[..., None]

    def step(total, node_weight):
        node, weight = node_weight
        inner = jnp.sum(inner_weights * fn(b_ * node + c_ * inner_nodes), axis=-1)
        return total + weight * fn(a * node) * inner, None

    outer = (jnp.asarray(nodes, dtype), jnp.asarray(weights, dtype))
    total, _ = jax.lax.scan(step, jnp.zeros_like(k12), outer)
    return total


def _has_closed_form(act: Activation) -> bool:
    return act.is_piecewise_linear or act.name in ("erf", "gelu", "identity")


def _dual(act: Activation, order: int, k11, k12, k22):
    """``E[act(u) act(v)]`` elementwise; arrays broadcast against each other."""
    if act.is_piecewise_linear:
        return _piecewise_linear_dual(act.negative_slope, act.positive_slope, k11, k12, k22)
    if act.name == "erf":
        return _erf_dual(k11, k12, k22)
    if act.name == "gelu":
        return _gelu_dual(k11, k12, k22)
    if act.name == "identity":
        return k12
    return _quadrature_dual(act.fn, order, k11, k12, k22)


def _quadrature_second_moment(fn: Callable, order: int, k):
    nodes, weights = _hermite_rule(order)
    shape = (1,) * k.ndim + (order,)
    values = fn(_safe_sqrt(k)[..., None] * jnp.asarray(nodes, k.dtype).reshape(shape))
    return jnp.sum(jnp.asarray(weights, k.dtype).reshape(shape) * values * values, axis=-1)


def _dual_diagonal(act: Activation, order: int, k):
    """``E[act(u)^2]`` for ``u ~ N(0, k)``; avoids the square root of ``k11 k22 - k12^2 = 0``."""
    if act.is_piecewise_linear:
        return (act.negative_slope**2 + act.positive_slope**2) / 2 * k
    if act.name == "erf":
        return (2 / math.pi) * jnp.arcsin(2 * k / (1 + 2 * k))
    if act.name == "gelu":
        return _gelu_dual(k, k, k)
    if act.name == "identity":
        return k
    # The 2-D rule at k12 = k11 = k22 reduces to this 1-D rule, so diagonal and
    # off-diagonal entries stay consistent.
    return _quadrature_second_moment(act.fn, order, k)


# -- the layer recursion ------------------------------------------------------------------


class _Recursion(NamedTuple):
    # Static description of an MLP kernel, a jit static argument. The activation is
    # hashed by the identity of its function (Activation itself ignores `fn` in ==, so
    # two user callables would otherwise share a compiled kernel).
    depth: int
    act_name: str
    act_fn: Callable | None
    negative_slope: float
    positive_slope: float
    order: int

    @property
    def activation(self) -> Activation:
        fn = _not_called if self.act_fn is None else self.act_fn
        return Activation(self.act_name, fn, self.negative_slope, self.positive_slope)


def _not_called(x):
    """Stand-in function of a closed-form activation: its dual never evaluates it."""
    raise AssertionError("closed-form duals do not evaluate the activation")


def _layer_scales(rec: _Recursion, scales):
    """Per-layer (weight variance, bias variance): first layer, hidden layers, readout."""
    w2, b2, ow2, ob2 = (s * s for s in scales)
    return [(w2, b2)] * rec.depth + [(ow2, ob2)]


def _diagonal_levels(rec: _Recursion, x, scales):
    """Diagonal trajectories and an estimate of the quadrature error.

    Returns
    -------
    levels : (depth, n)
        Pre-activation variances ``K^l(x, x)`` of the hidden layers.
    out : (n,)
        The kernel's diagonal ``K(x, x)``.
    quadrature_error : ()
        Largest relative change of ``E[act(u)^2]`` when the quadrature order is
        doubled (0 for closed forms). On the diagonal the 2-D rule is at its least
        accurate (correlation 1), so this bounds the error of the whole kernel.
    """
    act = rec.activation
    layers = _layer_scales(rec, scales)
    w2, b2 = layers[0]
    k = w2 * (jnp.sum(x * x, axis=-1) / x.shape[-1]) + b2
    levels = []
    error = jnp.zeros((), x.dtype)
    for w2, b2 in layers[1:]:
        levels.append(k)
        second_moment = _dual_diagonal(act, rec.order, k)
        if not _has_closed_form(act):
            finer = _quadrature_second_moment(act.fn, 2 * rec.order, k)
            tiny = jnp.finfo(x.dtype).tiny
            error = jnp.maximum(error, jnp.max(jnp.abs(second_moment - finer) / (finer + tiny)))
        k = w2 * second_moment + b2
    stacked = jnp.stack(levels) if levels else jnp.zeros((0, x.shape[0]), x.dtype)
    return stacked, k, jax.lax.stop_gradient(error)


def _cross_tile(rec: _Recursion, scales, x1, x2, levels1, levels2):
    """Kernel entries ``K(x1_i, x2_j)``, shape ``(b1, b2)``, given both diagonal trajectories."""
    act = rec.activation
    layers = _layer_scales(rec, scales)
    w2, b2 = layers[0]
    k = w2 * ((x1 @ x2.T) / x1.shape[-1]) + b2
    for level, (w2, b2) in enumerate(layers[1:]):
        dual = _dual(act, rec.order, levels1[level][:, None], k, levels2[level][None, :])
        k = w2 * dual + b2
    return k


def _pad_rows(array, multiple: int, axis: int = 0):
    # Pad with copies of the first row, not zeros: padded entries are then ordinary
    # kernel values whose (discarded) derivatives are finite, so 0 * grad stays 0.
    n = array.shape[axis]
    extra = -n % multiple
    if extra == 0:
        return array
    first = jax.lax.slice_in_dim(array, 0, 1, axis=axis)
    reps = [1] * array.ndim
    reps[axis] = extra
    return jnp.concatenate([array, jnp.tile(first, reps)], axis=axis)


def _tiles(rec, scales, x1, x2, levels1, levels2, block: int, rows, cols):
    """Compute the tiles ``(rows[p], cols[p])``; returns ``(num_pairs, block, block)``."""
    x1b = _pad_rows(x1, block).reshape(-1, block, x1.shape[-1])
    x2b = _pad_rows(x2, block).reshape(-1, block, x2.shape[-1])
    depth = levels1.shape[0]
    l1b = _pad_rows(levels1, block, axis=1).reshape(depth, x1b.shape[0], block)
    l2b = _pad_rows(levels2, block, axis=1).reshape(depth, x2b.shape[0], block)

    def one_tile(pair):
        i, j = pair
        return _cross_tile(rec, scales, x1b[i], x2b[j], l1b[:, i], l2b[:, j])

    return jax.lax.map(one_tile, (jnp.asarray(rows), jnp.asarray(cols)))


def _assemble(tiles, index: np.ndarray, block: int, n1: int, n2: int):
    """Place tile ``index[I, J]`` at block position ``(I, J)`` and crop to ``(n1, n2)``."""
    nb1, nb2 = index.shape
    blocks = tiles[jnp.asarray(index)]  # (nb1, nb2, block, block)
    full = blocks.transpose(0, 2, 1, 3).reshape(nb1 * block, nb2 * block)
    return full[:n1, :n2]


def _mirror_upper(matrix):
    # Exact symmetry: keep the upper triangle (computed) and reflect it.
    n = matrix.shape[0]
    rows = jax.lax.broadcasted_iota(jnp.int32, (n, n), 0)
    cols = jax.lax.broadcasted_iota(jnp.int32, (n, n), 1)
    return jnp.where(rows <= cols, matrix, matrix.T)


@functools.partial(jax.jit, static_argnames=("rec", "block_size", "symmetric", "diag"))
def _kernel(rec: _Recursion, scales, x1, x2, *, block_size: int, symmetric: bool, diag: bool):
    """The kernel and the estimated relative quadrature error (see `_diagonal_levels`)."""
    levels1, out1, error = _diagonal_levels(rec, x1, scales)
    if diag:
        return out1, error
    if symmetric:
        x2, levels2 = x1, levels1
    else:
        levels2, _, error2 = _diagonal_levels(rec, x2, scales)
        error = jnp.maximum(error, error2)
    n1, n2 = x1.shape[0], x2.shape[0]
    if max(n1, n2) <= block_size:  # one tile: no padding, no map
        k = _cross_tile(rec, scales, x1, x2, levels1, levels2)
        return (_mirror_upper(k) if symmetric else k), error
    block = block_size
    nb1, nb2 = -(-n1 // block), -(-n2 // block)
    if symmetric:
        rows, cols = np.triu_indices(nb1)
        index = np.zeros((nb1, nb1), dtype=np.int32)
        index[rows, cols] = np.arange(rows.size)
        index[cols, rows] = index[rows, cols]  # lower blocks are overwritten by the mirror
    else:
        rows, cols = np.divmod(np.arange(nb1 * nb2), nb2)
        index = np.arange(nb1 * nb2, dtype=np.int32).reshape(nb1, nb2)
    tiles = _tiles(rec, scales, x1, x2, levels1, levels2, block, rows, cols)
    k = _assemble(tiles, index, block, n1, n2)
    return (_mirror_upper(k) if symmetric else k), error


# -- validation ---------------------------------------------------------------------------


def _is_traced(value) -> bool:
    return isinstance(value, jax.core.Tracer)


def _check_inputs(name: str, x, *, feature_ndim: int | None = 1) -> jax.Array:
    """Floating, finite (when concrete) array of shape ``(n, ...)``."""
    if _is_traced(x):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"{name} must be a floating array, got dtype {x.dtype}")
        array = x
    else:
        array = as_float_array(name, x, min_ndim=1)
    if feature_ndim is not None and array.ndim != 1 + feature_ndim:
        raise ValueError(
            f"{name} must have shape (n, d_in) for an MLP kernel, got shape {array.shape}"
        )
    if array.ndim < 2:
        raise ValueError(f"{name} must have shape (n, features...), got shape {array.shape}")
    if array.shape[0] == 0 or any(s == 0 for s in array.shape[1:]):
        raise ValueError(f"{name} is empty (shape {array.shape})")
    return array


def _check_pair(x1, x2, *, feature_ndim: int | None = 1):
    x1 = _check_inputs("x1", x1, feature_ndim=feature_ndim)
    if x2 is None:
        return x1, None
    x2 = _check_inputs("x2", x2, feature_ndim=feature_ndim)
    if x1.shape[1:] != x2.shape[1:]:
        raise ValueError(
            f"x1 and x2 must have the same feature shape, got {x1.shape[1:]} and {x2.shape[1:]}"
        )
    if x1.dtype != x2.dtype:
        raise ValueError(f"x1 has dtype {x1.dtype} but x2 has dtype {x2.dtype}; cast one of them")
    return x1, x2


def _check_int(name: str, value, minimum: int, maximum: int | None = None) -> int:
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not ok or value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


def _check_scale(name: str, value, *, allow_zero: bool):
    if _is_traced(value):
        return value
    try:
        host = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a finite float, got {value!r}") from exc
    bound = ">= 0" if allow_zero else "> 0"
    if host.ndim != 0 or not np.isfinite(host) or host < 0 or (host == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite scalar {bound}, got {value!r}")
    return value


def _mlp_spec(net) -> MLPSpec:
    spec = getattr(net, "spec", None)
    if not isinstance(net, Network):
        raise ValueError(f"net must be a wide_bnn Network, got {type(net).__name__}")
    if not isinstance(spec, MLPSpec):
        raise ValueError(
            f"the closed-form NNGP kernel needs an MLP (wb.mlp); {net.name!r} has no MLPSpec. "
            "Use nngp_kernel_mc(net, x1, x2, num_samples=..., key=...) for a Monte Carlo "
            "estimate of its kernel"
        )
    return spec


# -- public kernels --------------------------------------------------------------------------


def mlp_nngp_kernel(
    x1: jax.Array,
    x2: jax.Array | None = None,
    *,
    depth: int,
    activation: str | Callable | Activation,
    w_std: Any,
    b_std: Any,
    out_w_std: Any,
    out_b_std: Any,
    diag: bool = False,
    block_size: int = DEFAULT_BLOCK_SIZE,
    quadrature_order: int = DEFAULT_QUADRATURE_ORDER,
    negative_slope: float = 0.01,
) -> jax.Array:
    """NNGP kernel of an MLP given by its hyper-parameters (differentiable in all of them).

    The functional form of :func:`nngp_kernel`: the scales may be JAX scalars, so
    ``jax.grad`` with respect to ``w_std``, ``b_std``, ``out_w_std``, ``out_b_std`` or
    the inputs works (e.g. to fit hyper-parameters by marginal likelihood).

    Parameters
    ----------
    x1 : jax.Array, shape (n1, d_in)
        Inputs (floating; the result keeps their dtype).
    x2 : jax.Array, shape (n2, d_in), optional
        Second inputs; ``None`` means ``x1`` and gives an exactly symmetric result.
    depth : int
        Number of hidden layers (``0``: Bayesian linear regression).
    activation : str, callable or Activation
        As in :func:`wide_bnn.mlp`.
    w_std, b_std, out_w_std, out_b_std : float or scalar array
        Hidden and readout scales (NTK parameterisation, see module docstring).
    diag : bool
        Return only ``K(x1_i, x1_i)``, shape ``(n1,)`` (``x2`` must be ``None``).
    block_size : int
        Side of the square tiles; memory is ``O(n1 n2 + block_size^2 * order)``.
    quadrature_order : int
        Gauss-Hermite nodes per dimension for activations without a closed form
        (cost grows like ``order^2`` per kernel entry and layer).
    negative_slope : float
        Slope of ``"leaky_relu"`` when ``activation`` is given by name.

    Returns
    -------
    jax.Array, shape (n1, n2), or (n1,) with ``diag=True``
    """
    depth = _check_int("depth", depth, 0)
    act = get_activation(activation, negative_slope=negative_slope)
    return _nngp(
        act, depth, (w_std, b_std, out_w_std, out_b_std), x1, x2, diag, block_size, quadrature_order
    )


def nngp_kernel(
    net: Network,
    x1: jax.Array,
    x2: jax.Array | None = None,
    *,
    diag: bool = False,
    block_size: int = DEFAULT_BLOCK_SIZE,
    quadrature_order: int = DEFAULT_QUADRATURE_ORDER,
) -> jax.Array:
    """Infinite-width (NNGP) kernel of an MLP built by :func:`wide_bnn.mlp`.

    Exact layer recursion with closed-form duals for relu, leaky_relu, abs, erf,
    gelu and identity; Gauss-Hermite quadrature for tanh and user activations.
    Widths do not matter (only depth). Gradients with respect to the inputs are
    finite, including at ``x1 == x2``.

    Parameters
    ----------
    net : Network
        Built by :func:`wide_bnn.mlp` (it carries ``net.spec``).
    x1 : jax.Array, shape (n1, d_in)
        Inputs.
    x2 : jax.Array, shape (n2, d_in), optional
        Second inputs; ``None`` means ``x1`` (exactly symmetric result, half the cost).
    diag : bool
        Return only the variances ``K(x1_i, x1_i)``, shape ``(n1,)``.
    block_size : int
        Side of the square tiles the kernel is computed in; bounds the working
        memory so that n = 10,000 fits (the result itself is ``n1 x n2``).
    quadrature_order : int
        Gauss-Hermite nodes per dimension for activations without a closed form.

    Returns
    -------
    jax.Array, shape (n1, n2), or (n1,) with ``diag=True``
        In the dtype of ``x1``.

    Raises
    ------
    ValueError
        For a network without ``spec`` (use :func:`nngp_kernel_mc`), or bad inputs.
    """
    spec = _mlp_spec(net)
    scales = (spec.w_std, spec.b_std, net.out_w_std, net.out_b_std)
    return _nngp(
        spec.activation, len(spec.hidden), scales, x1, x2, diag, block_size, quadrature_order
    )


def _nngp(act, depth, scales, x1, x2, diag, block_size, quadrature_order):
    block_size = _check_int("block_size", block_size, 1)
    order = _check_int("quadrature_order", quadrature_order, 2, _MAX_QUADRATURE_ORDER)
    if not isinstance(diag, bool):
        raise ValueError(f"diag must be a bool, got {diag!r}")
    x1, x2 = _check_pair(x1, x2)
    if diag and x2 is not None:
        raise ValueError("diag=True computes K(x1_i, x1_i); pass x2=None")
    names = ("w_std", "b_std", "out_w_std", "out_b_std")
    for name, value in zip(names, scales, strict=True):
        _check_scale(name, value, allow_zero=name.startswith(("b", "out_b")))
    dtype = x1.dtype
    scales = tuple(jnp.asarray(s, dtype) for s in scales)
    # Closed forms never call the function: leaving it out of the static key avoids a
    # recompilation for every freshly built lambda (e.g. each wb.mlp(activation="gelu")).
    fn = None if _has_closed_form(act) else act.fn
    rec = _Recursion(
        depth, act.name, fn, float(act.negative_slope), float(act.positive_slope), order
    )
    symmetric = x2 is None
    kernel, error = _kernel(
        rec,
        scales,
        x1,
        x1 if symmetric else x2,
        block_size=block_size,
        symmetric=symmetric,
        diag=diag,
    )
    # Under a trace (jit, grad) the estimate is abstract and the check is skipped.
    if not _is_traced(error) and float(error) > QUADRATURE_RTOL:
        warnings.warn(
            f"Gauss-Hermite quadrature for activation {act.name!r} with quadrature_order={order} "
            f"has an estimated relative error of {float(error):.2g} on this kernel (large "
            "pre-activation variances need more nodes); pass a larger quadrature_order",
            NumericalWarning,
            stacklevel=3,
        )
    return kernel


def nngp_kernel_mc(
    net: Network,
    x1: jax.Array,
    x2: jax.Array | None = None,
    *,
    num_samples: int,
    key: jax.Array,
) -> NNGPKernelEstimate:
    """Monte Carlo NNGP kernel of any network: the prior mean of ``Psi Psi^T``.

    Draws ``hidden = net.init(key_s, x1)["hidden"]`` for ``num_samples`` keys and
    averages the empirical kernel ``Psi(x1) Psi(x2)^T`` with
    ``Psi = net.readout_features(hidden, x)``. At finite width this is the exact
    prior kernel of the network, which tends to the NNGP kernel as widths grow
    (for one-hidden-layer networks they coincide at every width).

    Parameters
    ----------
    net : Network
        Any network (MLP, ResNet, user feature map).
    x1 : jax.Array, shape (n1, ...)
        Inputs.
    x2 : jax.Array, shape (n2, ...), optional
        Second inputs (same trailing shape); ``None`` means ``x1``.
    num_samples : int
        Number of prior draws (>= 2, for the standard error).
    key : jax.Array
        PRNG key.

    Returns
    -------
    NNGPKernelEstimate
        ``mean`` and elementwise ``standard_error`` (sample std / sqrt(num_samples)),
        both ``(n1, n2)``.
    """
    if not isinstance(net, Network):
        raise ValueError(f"net must be a wide_bnn Network, got {type(net).__name__}")
    num_samples = _check_int("num_samples", num_samples, 2)
    x1, x2 = _check_pair(x1, x2, feature_ndim=None)
    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    try:
        hash(net)
    except TypeError:  # unhashable user callables: compile a closure for this call only
        return jax.jit(functools.partial(_mc_kernel, net, num_samples, symmetric))(key, x1, x2)
    return _mc_kernel_cached(net, num_samples, symmetric, key, x1, x2)


def _mc_kernel(net, num_samples: int, symmetric: bool, key, x1, x2) -> NNGPKernelEstimate:
    def step(carry, key_count):
        mean, m2 = carry
        key_s, count = key_count
        hidden = net.init(key_s, x1)["hidden"]
        psi1 = net.readout_features(hidden, x1)
        psi2 = psi1 if symmetric else net.readout_features(hidden, x2)
        sample = psi1 @ psi2.T
        # Welford's update: no cancellation in float32, unlike a sum of squares.
        delta = sample - mean
        mean = mean + delta / count
        return (mean, m2 + delta * (sample - mean)), None

    keys = jax.random.split(key, num_samples)
    zeros = jnp.zeros((x1.shape[0], x2.shape[0]), x1.dtype)
    counts = jnp.arange(1, num_samples + 1, dtype=x1.dtype)
    (mean, m2), _ = jax.lax.scan(step, (zeros, zeros), (keys, counts))
    return NNGPKernelEstimate(mean, jnp.sqrt(m2 / ((num_samples - 1) * num_samples)))


# A Network hashes by the identity of its functions, so the cache is per network object.
_mc_kernel_cached = jax.jit(_mc_kernel, static_argnums=(0, 1, 2))


# -- GP posterior ----------------------------------------------------------------------------


def _check_data(data) -> RegressionData:
    if not isinstance(data, RegressionData):
        raise ValueError(f"data must be a wide_bnn RegressionData, got {type(data).__name__}")
    if data.x.ndim != 2:
        raise ValueError(
            f"the NNGP kernel needs MLP inputs data.x of shape (n, d_in), got {data.x.shape}"
        )
    return data


@jax.jit
def _add_noise(kernel, noise_var):
    eye = jnp.eye(kernel.shape[0], dtype=kernel.dtype)
    return kernel + noise_var.astype(kernel.dtype) * eye


def _factor(net: Network, data: RegressionData):
    kernel = nngp_kernel(net, data.x)
    noisy = _add_noise(kernel, jnp.asarray(data.noise_std**2))
    factor, _ = cholesky_with_jitter(noisy, what="NNGP kernel + noise_std^2 I")
    return factor


@functools.partial(jax.jit, static_argnames="full_cov")
def _posterior(factor, y, cross, test, *, full_cov: bool) -> NNGPPosterior:
    mean = cross @ cho_solve((factor, True), y)
    half = solve_triangular(factor, cross.T, lower=True)  # (n, m)
    if full_cov:
        cov = test - half.T @ half
        return NNGPPosterior(mean, 0.5 * (cov + cov.T))
    # Only rounding can make a posterior variance negative.
    return NNGPPosterior(mean, jnp.maximum(test - jnp.sum(half * half, axis=0), 0))


@jax.jit
def _log_marginal(factor, y):
    white = solve_triangular(factor, y, lower=True)  # (n, k)
    n, k = y.shape
    log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(factor)))
    return -0.5 * jnp.sum(white * white) - 0.5 * k * log_det - 0.5 * n * k * math.log(2 * math.pi)


def nngp_predict(
    net: Network, data: RegressionData, x_test: jax.Array, *, full_cov: bool = False
) -> NNGPPosterior:
    """GP posterior of the infinite-width network at ``x_test``.

    With ``K`` the NNGP kernel of :func:`nngp_kernel` and noise ``sigma = data.noise_std``::

        mean = K(x*, X) (K(X, X) + sigma^2 I)^-1 Y
        cov  = K(x*, x*) - K(x*, X) (K(X, X) + sigma^2 I)^-1 K(X, x*)

    for the noise-free outputs ``f(x_test)``; every output column has the same
    covariance. The Cholesky factor follows the eager policy of
    :func:`wide_bnn.linalg.cholesky_with_jitter` (warns if jitter was needed,
    raises :class:`wide_bnn.linalg.CholeskyError` if it fails).

    Parameters
    ----------
    net : Network
        An MLP from :func:`wide_bnn.mlp`.
    data : RegressionData
        Training data; ``data.y`` is ``(n, k)``.
    x_test : jax.Array, shape (m, d_in)
        Test inputs, in the dtype of ``data.x``.
    full_cov : bool
        Return the ``(m, m)`` covariance instead of the ``(m,)`` variances.

    Returns
    -------
    NNGPPosterior
        ``mean (m, k)`` and ``cov`` ``(m, m)`` or ``(m,)``; unpacks as ``mean, cov``.
    """
    _mlp_spec(net)
    data = _check_data(data)
    x_test = as_float_array("x_test", x_test, min_ndim=1)
    if x_test.ndim != 2 or x_test.shape[1] != data.x.shape[1]:
        raise ValueError(
            f"x_test must have shape (m, {data.x.shape[1]}) to match data.x, got {x_test.shape}"
        )
    if x_test.dtype != data.dtype:
        raise ValueError(
            f"x_test has dtype {x_test.dtype} but data has dtype {data.dtype}; cast x_test"
        )
    if not isinstance(full_cov, bool):
        raise ValueError(f"full_cov must be a bool, got {full_cov!r}")
    factor = _factor(net, data)
    cross = nngp_kernel(net, x_test, data.x)  # (m, n)
    test = nngp_kernel(net, x_test, diag=not full_cov)
    return _posterior(factor, data.y, cross, test, full_cov=full_cov)


def nngp_log_marginal_likelihood(net: Network, data: RegressionData) -> jax.Array:
    """``sum_k log N(y_k; 0, K + sigma^2 I)``: the evidence of the infinite-width network.

    Parameters
    ----------
    net : Network
        An MLP from :func:`wide_bnn.mlp`.
    data : RegressionData
        Training data with ``k`` output columns.

    Returns
    -------
    jax.Array, shape ()
        Summed over the ``k`` independent outputs, constants included.
    """
    _mlp_spec(net)
    data = _check_data(data)
    return _log_marginal(_factor(net, data), data.y)

"""Cholesky factorisations with an explicit, never silent, failure policy.

Two policies, one per context:

* Inside a sampler (traced, jitted, vmapped): :func:`cholesky` returns the
  factor and a flag. The caller turns a failed factorisation into a log-density
  of ``-inf`` (the proposal is rejected, so the chain stays exact) and records
  the event; adding jitter there would silently change the target.
* Eager, one-off computations (NNGP posterior, closed-form readout posterior
  of a fixed network): :func:`cholesky_with_jitter` escalates a diagonal jitter
  ``10**(i - 1) * eps**0.75`` relative to the mean diagonal, warns with the
  amount used, and raises :class:`CholeskyError` when every level fails.

Under ``jax.vmap`` (the chains of a run) the factorisation and the triangular solves
here make one LAPACK call per matrix, in a loop, instead of one batched call, unless the
batch is small. On CPU, jaxlib 0.10 splits a batched LAPACK call of enough work over
XLA's thread pool and blocks a pool thread until the pieces are done; two such calls at
once exhaust a pool of one thread per core, and the program then hangs without using CPU
(seen on 2 cores for a 129 x 129 factorisation batched over 4 chains). A call on one
matrix, or a small batched call, runs inline. Reverse-mode
derivatives are written out (:func:`jax.custom_vjp`), so they loop in the same way;
forward mode (``jax.jvp``) is not supported through these functions.

Inside :func:`batched_calls` the vmapped calls are batched again: a loop over chains
that are split over devices would make XLA's partitioner gather every chain on every
device.
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "CholeskyError",
    "NumericalWarning",
    "batched_calls",
    "cho_solve",
    "cholesky",
    "cholesky_with_jitter",
    "solve_lower",
    "solve_lower_transposed",
]


class CholeskyError(ValueError):
    """A matrix that should be positive definite could not be factorised."""


class NumericalWarning(UserWarning):
    """A numerical safeguard (jitter, precision) changed or may affect a result."""


def cholesky(matrix: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Lower Cholesky factor and whether it is usable; jit- and vmap-safe.

    Parameters
    ----------
    matrix : jax.Array, shape (m, m)
        Symmetric positive definite (up to rounding). One matrix: batch with ``jax.vmap``.

    Returns
    -------
    factor : jax.Array, shape (m, m)
        Lower triangular ``L`` with ``L @ L.T == matrix``; the identity where the
        factorisation failed, so downstream arithmetic stays finite (callers must
        use ``ok``).
    ok : jax.Array of bool, shape ()
        False where the factorisation produced non-finite values.
    """
    _check_matrix(matrix)
    factor = _cholesky(matrix)
    ok = jnp.all(jnp.isfinite(factor))
    return jnp.where(ok, factor, jnp.eye(matrix.shape[0], dtype=matrix.dtype)), ok


def solve_lower(factor: jax.Array, b: jax.Array) -> jax.Array:
    """``X = L^-1 B`` for lower triangular ``L``; one LAPACK call per matrix under vmap.

    Parameters
    ----------
    factor : jax.Array, shape (m, m)
        Lower triangular ``L`` (the upper triangle is ignored).
    b : jax.Array, shape (m, r)

    Returns
    -------
    jax.Array, shape (m, r)
    """
    _check_matrix(factor, b)
    return _solve_lower(factor, b)


def solve_lower_transposed(factor: jax.Array, b: jax.Array) -> jax.Array:
    """``X = L^-T B`` for lower triangular ``L``; see :func:`solve_lower`."""
    _check_matrix(factor, b)
    return _solve_lower_t(factor, b)


def cho_solve(factor: jax.Array, b: jax.Array) -> jax.Array:
    """``(L L^T)^-1 B`` from the lower Cholesky factor ``L``, shape (m, r)."""
    _check_matrix(factor, b)
    return _solve_lower_t(factor, _solve_lower(factor, b))


def _check_matrix(matrix, rhs=None):
    # The loops and derivatives below are written for one matrix (vmap adds batches).
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"expected one square matrix, got shape {matrix.shape}")
    if rhs is not None and (rhs.ndim != 2 or rhs.shape[0] != matrix.shape[0]):
        raise ValueError(f"right-hand side must have shape ({matrix.shape[0]}, r), got {rhs.shape}")


# -- one LAPACK call per matrix, with written-out reverse-mode derivatives ---------------------


_BATCHED = contextvars.ContextVar("wide_bnn_batched_lapack", default=False)


@contextlib.contextmanager
def batched_calls():
    """Within this context, functions traced under ``jax.vmap`` batch their LAPACK calls.

    For chains split over devices, where a loop over the chain axis would be replicated
    on every device. Read when a function is traced, not when it runs.
    """
    token = _BATCHED.set(True)
    try:
        yield
    finally:
        _BATCHED.reset(token)


#: jaxlib 0.10 runs a batched LAPACK call inline when batch x flops per matrix is below
#: 200,000 (its ``kMinWorkPerTask``); below half of that the batched call is kept, since
#: a loop only adds overhead there.
_INLINE_FLOPS = 100_000


def _one_matrix_per_call(flops):
    """Decorate ``fn(matrix, ...)``: under vmap a loop of one-matrix calls when large.

    ``flops(*shapes)`` estimates the work of one call from the unbatched shapes. Small
    batches, whose batched call jaxlib runs inline anyway, stay batched.
    """

    def decorate(fn):
        wrapped = jax.custom_batching.custom_vmap(fn)

        @wrapped.def_vmap
        def rule(axis_size, in_batched, *args):
            shapes = [a.shape[1:] if b else a.shape for a, b in zip(args, in_batched, strict=True)]
            if _BATCHED.get() or axis_size * flops(*shapes) < _INLINE_FLOPS:
                axes = [0 if batched else None for batched in in_batched]
                return jax.vmap(fn, in_axes=axes)(*args), True

            def one(mapped):
                # Unbatched arguments are closed over; nested vmaps loop again.
                it = iter(mapped)
                return wrapped(
                    *(next(it) if b else a for a, b in zip(args, in_batched, strict=True))
                )

            mapped = [a for a, batched in zip(args, in_batched, strict=True) if batched]
            return jax.lax.map(one, mapped), True

        return wrapped

    return decorate


def _potrf_flops(shape):
    return shape[0] ** 3 / 3


def _trsm_flops(factor_shape, b_shape):
    return factor_shape[0] ** 2 * b_shape[1]


@_one_matrix_per_call(_potrf_flops)
def _potrf(matrix):
    return jnp.linalg.cholesky(matrix)


@_one_matrix_per_call(_trsm_flops)
def _trsm_lower(factor, b):
    return jax.scipy.linalg.solve_triangular(factor, b, lower=True)


@_one_matrix_per_call(_trsm_flops)
def _trsm_lower_t(factor, b):
    return jax.scipy.linalg.solve_triangular(factor, b, lower=True, trans=1)


def _tril_half_diagonal(x):
    return jnp.tril(x) - 0.5 * jnp.diag(jnp.diagonal(x))


@jax.custom_vjp
def _cholesky(matrix):
    return _potrf(matrix)


def _cholesky_fwd(matrix):
    factor = _potrf(matrix)
    return factor, factor


def _cholesky_bwd(factor, g_factor):
    # With A = L L^T: A_bar = sym(L^-T Phi(L^T L_bar) L^-1), Phi = lower triangle with the
    # diagonal halved; sym because jnp.linalg.cholesky reads the symmetrised input.
    inner = _tril_half_diagonal(factor.T @ g_factor)
    left = _trsm_lower_t(factor, inner)  # L^-T Phi
    full = _trsm_lower_t(factor, left.T).T  # L^-T Phi L^-1
    grad = 0.5 * (full + full.T)
    # A failed factorisation (NaN factor) gets a zero, not a NaN, cotangent.
    return (jnp.where(jnp.all(jnp.isfinite(factor)), grad, 0.0),)


_cholesky.defvjp(_cholesky_fwd, _cholesky_bwd)


def _differentiable_solve(solve, adjoint_solve, transposed):
    """``X = op(L)^-1 B`` (``op(L) = L`` or ``L^T``) with its reverse-mode derivative.

    ``B_bar = op(L)^-T X_bar`` (the other solve), and ``dX = -op(L)^-1 op(dL) X`` gives
    ``L_bar`` as the lower triangle of ``-B_bar X^T`` (transposed for ``op(L) = L^T``).
    """

    @jax.custom_vjp
    def fn(factor, b):
        return solve(factor, b)

    def fwd(factor, b):
        x = solve(factor, b)
        return x, (factor, x)

    def bwd(residuals, g_x):
        factor, x = residuals
        g_b = adjoint_solve(factor, g_x)
        outer = x @ g_b.T if transposed else g_b @ x.T
        return -jnp.tril(outer), g_b

    fn.defvjp(fwd, bwd)
    return fn


_solve_lower = _differentiable_solve(_trsm_lower, _trsm_lower_t, transposed=False)
_solve_lower_t = _differentiable_solve(_trsm_lower_t, _trsm_lower, transposed=True)


def cholesky_with_jitter(
    matrix, *, max_tries: int = 6, what: str = "matrix"
) -> tuple[jax.Array, float]:
    """Cholesky factor with escalating diagonal jitter; for eager use only.

    Parameters
    ----------
    matrix : array_like, shape (m, m)
        Symmetric, positive definite up to rounding.
    max_tries : int
        Number of jitter levels after the plain attempt; level ``i`` adds
        ``mean(diag) * 10**(i - 1) * eps**0.75`` (``eps`` of the dtype), so the
        last level (default) is about ``2e-8`` relative in float64 and ``7e-2`` in
        float32: wide enough to rescue rounding, small enough to notice.
    what : str
        Name used in the warning and error messages.

    Returns
    -------
    factor : jax.Array, shape (m, m)
    jitter : float
        The diagonal jitter that was added (0.0 when none was needed).

    Raises
    ------
    CholeskyError
        When no level gives a finite factor (e.g. NaN entries or an indefinite matrix).

    Warns
    -----
    NumericalWarning
        When jitter was needed, with its size.
    """
    matrix = jnp.asarray(matrix)
    factor = jnp.linalg.cholesky(matrix)
    if bool(jnp.all(jnp.isfinite(factor))):
        return factor, 0.0
    eps = float(jnp.finfo(matrix.dtype).eps)
    scale = float(jnp.mean(jnp.abs(jnp.diagonal(matrix))))
    if not np.isfinite(scale):
        raise CholeskyError(f"{what} has non-finite entries")
    scale = scale if scale > 0 else 1.0
    eye = jnp.eye(matrix.shape[-1], dtype=matrix.dtype)
    for i in range(max_tries):
        jitter = scale * 10.0 ** (i - 1) * eps**0.75
        factor = jnp.linalg.cholesky(matrix + jitter * eye)
        if bool(jnp.all(jnp.isfinite(factor))):
            warnings.warn(
                f"Cholesky of {what} needed diagonal jitter {jitter:.3g} "
                f"({jitter / scale:.2g} of its mean diagonal); use float64 or a larger "
                "noise_std to avoid it",
                NumericalWarning,
                stacklevel=2,
            )
            return factor, float(jitter)
    raise CholeskyError(
        f"Cholesky of {what} failed even with jitter {jitter:.3g}; the matrix is not "
        "positive definite (check for NaN inputs, or use float64)"
    )

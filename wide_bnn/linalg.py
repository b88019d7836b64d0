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
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CholeskyError", "NumericalWarning", "cholesky", "cholesky_with_jitter"]


class CholeskyError(ValueError):
    """A matrix that should be positive definite could not be factorised."""


class NumericalWarning(UserWarning):
    """A numerical safeguard (jitter, precision) changed or may affect a result."""


def cholesky(matrix: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Lower Cholesky factor and whether it is usable; jit- and vmap-safe.

    Parameters
    ----------
    matrix : jax.Array, shape (..., m, m)
        Symmetric positive definite (up to rounding).

    Returns
    -------
    factor : jax.Array, shape (..., m, m)
        Lower triangular ``L`` with ``L @ L.T == matrix``; entries are replaced by
        the identity where the factorisation failed, so downstream arithmetic
        stays finite (callers must use ``ok``).
    ok : jax.Array of bool, shape (...)
        False where the factorisation produced non-finite values.
    """
    factor = jnp.linalg.cholesky(matrix)
    ok = jnp.all(jnp.isfinite(factor), axis=(-2, -1))
    eye = jnp.eye(matrix.shape[-1], dtype=matrix.dtype)
    factor = jnp.where(ok[..., None, None], factor, eye)
    return factor, ok


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

"""Validated regression data: inputs, targets and a Gaussian noise scale."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["RegressionData", "as_float_array"]


def as_float_array(name: str, value: Any, *, dtype=None, min_ndim: int = 1) -> jax.Array:
    """Convert ``value`` to a finite floating JAX array or raise ``ValueError`` naming it.

    Parameters
    ----------
    name : str
        Argument name used in error messages.
    value : array_like
        The array to check.
    dtype : dtype, optional
        Required floating dtype; ``None`` accepts the array's own floating dtype.
    min_ndim : int
        Minimum number of dimensions.

    Returns
    -------
    jax.Array
        The same values, as a JAX array of a floating dtype.
    """
    try:
        host = np.asarray(value)
    except Exception as exc:  # ragged lists, objects, ...
        raise ValueError(f"{name} must be a numeric array, got {type(value).__name__}") from exc
    if host.dtype == object or not (
        np.issubdtype(host.dtype, np.floating) or np.issubdtype(host.dtype, np.integer)
    ):
        raise ValueError(f"{name} must be a floating array, got dtype {host.dtype}")
    if not np.issubdtype(host.dtype, np.floating):
        raise ValueError(
            f"{name} has integer dtype {host.dtype}; convert it explicitly, "
            f"e.g. {name}.astype('float64') (with jax x64 enabled) or 'float32'"
        )
    if host.ndim < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimension(s), got shape {host.shape}"
        )
    if host.size == 0:
        raise ValueError(f"{name} is empty (shape {host.shape})")
    if not np.all(np.isfinite(host)):
        bad = int(np.size(host) - np.count_nonzero(np.isfinite(host)))
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")
    array = jnp.asarray(value)
    if dtype is not None and array.dtype != jnp.dtype(dtype):
        raise ValueError(f"{name} has dtype {array.dtype} but {jnp.dtype(dtype)} is required")
    return array


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True, init=False)
class RegressionData:
    """Training data for Gaussian-likelihood regression, validated once.

    Parameters
    ----------
    x : array_like, shape (n, ...)
        Inputs: ``(n, d_in)`` for MLPs, ``(n, height, width, channels)`` for CNNs.
    y : array_like, shape (n,) or (n, k)
        Targets. Stored as ``(n, k)``; ``y_is_vector`` remembers a 1-D input.
    noise_std : float
        Standard deviation ``sigma > 0`` of the i.i.d. Gaussian observation noise.
    dtype : dtype, optional
        Cast ``x`` and ``y`` to this floating dtype. By default both must already
        share one floating dtype (mixed dtypes raise, so that precision is never
        chosen silently).

    Raises
    ------
    ValueError
        Naming the argument, for non-finite values, empty or mismatched arrays,
        integer or mixed dtypes, a non-positive or non-scalar ``noise_std``.

    Notes
    -----
    Instances are pytrees (leaves ``x``, ``y``, ``noise_std``) so they can be
    passed through ``jax.jit``; validation runs only when built from concrete
    values.
    """

    x: jax.Array
    y: jax.Array
    noise_std: Any
    y_is_vector: bool

    def __init__(self, x, y, noise_std, *, dtype=None):
        if dtype is not None:
            dtype = jnp.dtype(dtype)
            if not jnp.issubdtype(dtype, jnp.floating):
                raise ValueError(f"dtype must be a floating dtype, got {dtype}")
            if dtype.itemsize == 8 and not jax.config.read("jax_enable_x64"):
                raise ValueError(
                    "dtype=float64 needs 64-bit JAX: call "
                    "jax.config.update('jax_enable_x64', True) before creating arrays"
                )
            x = np.asarray(x).astype(dtype) if _is_integer(x) else x
            y = np.asarray(y).astype(dtype) if _is_integer(y) else y
            x = as_float_array("x", x).astype(dtype)
            y = as_float_array("y", y).astype(dtype)
        else:
            x = as_float_array("x", x)
            y = as_float_array("y", y)
            if x.dtype != y.dtype:
                raise ValueError(
                    f"x has dtype {x.dtype} but y has dtype {y.dtype}; pass dtype=... to "
                    "RegressionData to choose one"
                )
        if x.ndim < 2:
            raise ValueError(
                f"x must have shape (n, features...), got shape {x.shape}; "
                "for one feature use x[:, None]"
            )
        if y.ndim not in (1, 2):
            raise ValueError(f"y must have shape (n,) or (n, k), got shape {y.shape}")
        if y.shape[0] != x.shape[0]:
            raise ValueError(
                f"x and y have different numbers of points: {x.shape[0]} vs {y.shape[0]}"
            )
        noise = _check_noise_std(noise_std)
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y[:, None] if y.ndim == 1 else y)
        object.__setattr__(self, "noise_std", noise)
        object.__setattr__(self, "y_is_vector", y.ndim == 1)

    @property
    def num_points(self) -> int:
        """Number of training points ``n``."""
        return self.x.shape[0]

    @property
    def out_dim(self) -> int:
        """Number of outputs ``k`` (columns of ``y``)."""
        return self.y.shape[1]

    @property
    def dtype(self):
        """The one floating dtype of ``x`` and ``y``."""
        return self.x.dtype

    def tree_flatten(self):
        return (self.x, self.y, self.noise_std), self.y_is_vector

    @classmethod
    def tree_unflatten(cls, y_is_vector, leaves):
        # Bypass validation: leaves may be tracers inside jit / vmap.
        obj = object.__new__(cls)
        x, y, noise_std = leaves
        object.__setattr__(obj, "x", x)
        object.__setattr__(obj, "y", y)
        object.__setattr__(obj, "noise_std", noise_std)
        object.__setattr__(obj, "y_is_vector", y_is_vector)
        return obj

    def __repr__(self) -> str:
        return (
            f"RegressionData(n={self.num_points}, x_shape={tuple(self.x.shape[1:])}, "
            f"out_dim={self.out_dim}, noise_std={self.noise_std}, dtype={self.dtype})"
        )


def _is_integer(value) -> bool:
    try:
        return np.issubdtype(np.asarray(value).dtype, np.integer)
    except Exception:
        return False


def _check_noise_std(noise_std) -> float:
    if isinstance(noise_std, bool):
        raise ValueError(f"noise_std must be a positive float, got {noise_std!r}")
    try:
        host = np.asarray(noise_std, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"noise_std must be a positive float, got {noise_std!r}") from exc
    if host.ndim != 0:
        raise ValueError(f"noise_std must be a scalar, got shape {host.shape}")
    value = float(host)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"noise_std must be positive and finite, got {value}")
    return value

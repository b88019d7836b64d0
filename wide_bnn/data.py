"""Validated regression data: inputs, targets and a Gaussian noise scale."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["RegressionData", "as_float_array"]

_SUPPORTED_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


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
    checked_host_array(name, value, min_ndim=min_ndim)
    array = jnp.asarray(value)
    if dtype is not None and array.dtype != jnp.dtype(dtype):
        raise ValueError(f"{name} has dtype {array.dtype} but {jnp.dtype(dtype)} is required")
    return array


def checked_host_array(name: str, value: Any, *, min_ndim: int = 1) -> np.ndarray:
    """``value`` as a NumPy array after every check of :func:`as_float_array`.

    Checks run on the host, so that bad input fails before any device work (JAX
    compiles even small conversions the first time it sees a shape).
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
    if host.dtype not in _SUPPORTED_FLOATS:
        # float16/bfloat16 would run the whole chain (Cholesky, accept ratios) at ~3
        # significant digits: not an answer anyone wants silently.
        raise ValueError(
            f"{name} has dtype {host.dtype}; only float32 and float64 are supported, "
            f"convert it with {name}.astype('float64') (with jax x64 enabled) or 'float32'"
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
    return host


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
            if dtype not in _SUPPORTED_FLOATS:
                raise ValueError(f"dtype must be float32 or float64, got {dtype}")
            if dtype.itemsize == 8 and not jax.config.read("jax_enable_x64"):
                raise ValueError(
                    "dtype=float64 needs 64-bit JAX: call "
                    "jax.config.update('jax_enable_x64', True) before creating arrays"
                )
            # An explicit dtype is the user's choice of precision: cast what converts,
            # then check (a float64 value beyond the float32 range becomes inf).
            x = checked_host_array("x", _cast(x, dtype)).astype(dtype, copy=False)
            y = checked_host_array("y", _cast(y, dtype)).astype(dtype, copy=False)
            host_x, host_y = x, y
        else:
            host_x, host_y = checked_host_array("x", x), checked_host_array("y", y)
            # Compared as JAX will store them (float64 is float32 while x64 is off).
            if _canonical(host_x.dtype) != _canonical(host_y.dtype):
                raise ValueError(
                    f"x has dtype {host_x.dtype} but y has dtype {host_y.dtype}; pass "
                    "dtype=... to RegressionData to choose one"
                )
        _check_shapes(host_x.shape, host_y.shape)
        noise = _check_noise_std(noise_std)
        # Device arrays only now that everything is known to be valid (an input that is
        # already a JAX array is kept as it is).
        x, y = jnp.asarray(x), jnp.asarray(y)
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


def _check_shapes(x_shape: tuple[int, ...], y_shape: tuple[int, ...]) -> None:
    if len(x_shape) < 2:
        raise ValueError(
            f"x must have shape (n, features...), got shape {x_shape}; "
            "for one feature use x[:, None]"
        )
    if len(y_shape) not in (1, 2):
        raise ValueError(f"y must have shape (n,) or (n, k), got shape {y_shape}")
    if y_shape[0] != x_shape[0]:
        raise ValueError(f"x and y have different numbers of points: {x_shape[0]} vs {y_shape[0]}")


def _canonical(dtype) -> np.dtype:
    return np.dtype(jax.dtypes.canonicalize_dtype(dtype))


def _cast(value, dtype):
    return np.asarray(value).astype(dtype) if _needs_cast(value) else value


def _needs_cast(value) -> bool:
    # Integers and half precision floats; anything else is validated as given.
    try:
        kind = np.asarray(value).dtype
    except Exception:
        return False
    half = np.issubdtype(kind, np.floating) and kind not in _SUPPORTED_FLOATS
    return bool(np.issubdtype(kind, np.integer) or half)


def _check_noise_std(noise_std) -> float:
    # Strings would parse ("0.1" -> 0.1) and bools are ints: both hide a mistake.
    if isinstance(noise_std, bool | str | bytes):
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

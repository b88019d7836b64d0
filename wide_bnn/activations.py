"""Elementwise activations, named so that the NNGP module can find their dual.

An activation is resolved once, when a network is built, into an
:class:`Activation`: a name (used by :mod:`wide_bnn.nngp` to pick a closed-form
dual kernel) and the function itself. User callables are accepted; their name
is ``"custom"`` and their NNGP kernel is computed by quadrature.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import erf

__all__ = ["ACTIVATIONS", "Activation", "get_activation"]


def _leaky(negative_slope: float, positive_slope: float = 1.0) -> Callable:
    # a*min(x, 0) + b*max(x, 0): covers relu (0, 1), leaky relu and abs (-1, 1).
    def fn(x):
        return negative_slope * jnp.minimum(x, 0) + positive_slope * jnp.maximum(x, 0)

    return fn


@dataclasses.dataclass(frozen=True)
class Activation:
    """An elementwise nonlinearity with the name its NNGP dual is known by.

    Attributes
    ----------
    name : str
        One of :data:`ACTIVATIONS`, or ``"custom"`` for a user function.
    fn : callable
        The elementwise map, ``(...,) -> (...,)``.
    negative_slope, positive_slope : float
        Slopes ``a, b`` of the piecewise-linear family ``a*min(x,0) + b*max(x,0)``
        (relu, leaky_relu, abs); unused otherwise.
    """

    name: str
    fn: Callable = dataclasses.field(compare=False)
    negative_slope: float = 0.0
    positive_slope: float = 1.0

    def __call__(self, x):
        return self.fn(x)

    @property
    def is_piecewise_linear(self) -> bool:
        """True for the relu / leaky_relu / abs family (closed-form arc-cosine dual)."""
        return self.name in ("relu", "leaky_relu", "abs")


ACTIVATIONS: tuple[str, ...] = ("relu", "leaky_relu", "abs", "gelu", "erf", "tanh", "identity")
"""Names accepted by :func:`get_activation` (and by ``wb.mlp(activation=...)``)."""


def get_activation(
    activation: str | Callable | Activation, *, negative_slope: float = 0.01
) -> Activation:
    """Resolve a name or a callable into an :class:`Activation`.

    Parameters
    ----------
    activation : str, callable or Activation
        A name from :data:`ACTIVATIONS` or an elementwise function of one array.
    negative_slope : float
        Slope for ``x < 0`` of ``"leaky_relu"`` (ignored by other names).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones) or a non-callable.
    """
    if isinstance(activation, Activation):
        return activation
    if callable(activation):
        return Activation("custom", activation)
    if not isinstance(activation, str):
        raise ValueError(
            f"activation must be a name from {ACTIVATIONS} or a callable, got {activation!r}"
        )
    name = activation.lower()
    if name == "relu":
        return Activation("relu", jax.nn.relu, 0.0, 1.0)
    if name == "leaky_relu":
        return Activation("leaky_relu", _leaky(negative_slope), float(negative_slope), 1.0)
    if name == "abs":
        return Activation("abs", jnp.abs, -1.0, 1.0)
    if name == "gelu":
        return Activation("gelu", lambda x: jax.nn.gelu(x, approximate=False))
    if name == "erf":
        return Activation("erf", erf)
    if name == "tanh":
        return Activation("tanh", jnp.tanh)
    if name == "identity":
        return Activation("identity", lambda x: x)
    raise ValueError(f"unknown activation {activation!r}; valid names are {', '.join(ACTIVATIONS)}")

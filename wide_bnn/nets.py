"""Networks in NTK parameterisation: a hidden feature map followed by a linear readout.

Every parameter has prior N(0, 1); the scales live in the layers. A network is
split into *hidden* parameters ``h`` (everything before the readout) and the
*readout* ``B = [W_out; b_out]`` of shape ``(p, k)`` with ``p = d + 1`` (or
``d`` without a readout bias). The readout sees the scaled features

    Psi(h, x) = [out_w_std * phi(x; h) / sqrt(d), out_b_std * 1]      (n, p)

and the output is ``f(x) = Psi(h, x) @ B``. Repriorisation, the NNGP Monte
Carlo kernel and the samplers only use this split, so any user feature map
(:func:`network`), CNN or ResNet (:func:`resnet`) works with all of them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from wide_bnn.activations import Activation, get_activation

__all__ = ["MLPSpec", "Network", "mlp", "network", "resnet"]

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class MLPSpec:
    """Hyper-parameters of a fully connected network (used by the NNGP kernel).

    Attributes
    ----------
    hidden : tuple of int
        Widths of the hidden layers; ``()`` is linear regression on the inputs.
    activation : Activation
        Elementwise nonlinearity of every hidden layer.
    w_std, b_std : float
        Weight and bias scales of the hidden layers (``b_std = 0``: no bias).
    """

    hidden: tuple[int, ...]
    activation: Activation
    w_std: float
    b_std: float


@dataclasses.dataclass(frozen=True)
class Network:
    """A hidden feature map plus the library's linear readout.

    Build one with :func:`mlp`, :func:`resnet` or :func:`network`.

    Attributes
    ----------
    init_hidden : callable
        ``init_hidden(key, x) -> hidden`` draws the hidden parameters (a pytree
        of N(0, 1) arrays).
    hidden_features : callable
        ``hidden_features(hidden, x) -> (..., d)`` the readout's raw input.
    out_dim : int
        Number of outputs ``k``.
    out_w_std, out_b_std : float
        Readout scales (``out_b_std = 0``: no readout bias).
    spec : MLPSpec or None
        Set for :func:`mlp` networks; enables the closed-form NNGP kernel.
    name : str
        Short description used in reports.
    """

    init_hidden: Callable = dataclasses.field(repr=False)
    hidden_features: Callable = dataclasses.field(repr=False)
    out_dim: int = 1
    out_w_std: float = 1.0
    out_b_std: float = 0.1
    spec: MLPSpec | None = None
    name: str = "network"

    def __post_init__(self):
        _check_positive_int("out_dim", self.out_dim)
        _check_scale("out_w_std", self.out_w_std, allow_zero=False)
        _check_scale("out_b_std", self.out_b_std, allow_zero=True)

    @property
    def has_readout_bias(self) -> bool:
        """Whether the readout has a bias row (``out_b_std > 0``)."""
        return self.out_b_std > 0

    # -- parameters ---------------------------------------------------------
    def init(self, key: jax.Array, x: jax.Array) -> Params:
        """Draw all parameters from the N(0, 1) prior.

        Parameters
        ----------
        key : jax.Array
            PRNG key.
        x : jax.Array, shape (n, ...)
            Example inputs; fix the input shape and the dtype of the parameters.

        Returns
        -------
        dict
            ``{"hidden": ..., "readout": {"w": (d, k), "b": (k,)}}``.
        """
        key_hidden, key_w, key_b = jax.random.split(key, 3)
        hidden = self.init_hidden(key_hidden, x)
        d = self.feature_dim(hidden, x)
        readout = {"w": jax.random.normal(key_w, (d, self.out_dim), x.dtype)}
        if self.has_readout_bias:
            readout["b"] = jax.random.normal(key_b, (self.out_dim,), x.dtype)
        return {"hidden": hidden, "readout": readout}

    def feature_dim(self, hidden: Any, x: jax.Array) -> int:
        """Readout fan-in ``d`` for these hidden parameters and input shape."""
        return int(jax.eval_shape(self.hidden_features, hidden, x).shape[-1])

    # -- maps ----------------------------------------------------------------
    def features(self, params: Params, x: jax.Array) -> jax.Array:
        """The readout's input ``phi(x; h)``, shape ``(..., d)``."""
        return self.hidden_features(params["hidden"], x)

    def readout_features(self, hidden: Any, x: jax.Array) -> jax.Array:
        """Scaled features ``Psi(h, x)`` such that ``f = Psi @ readout_matrix``.

        Returns
        -------
        jax.Array, shape (..., p)
            ``p = d + 1`` with a readout bias, else ``d``.
        """
        phi = self.hidden_features(hidden, x)
        d = phi.shape[-1]
        psi = phi * jnp.asarray(self.out_w_std / math.sqrt(d), phi.dtype)
        if self.has_readout_bias:
            ones = jnp.full((*phi.shape[:-1], 1), self.out_b_std, phi.dtype)
            psi = jnp.concatenate([psi, ones], axis=-1)
        return psi

    def readout_matrix(self, readout: Params) -> jax.Array:
        """Stack the readout into ``B = [w; b]``, shape ``(p, k)``."""
        if self.has_readout_bias:
            return jnp.concatenate([readout["w"], readout["b"][None, :]], axis=0)
        return readout["w"]

    def readout_from_matrix(self, matrix: jax.Array) -> Params:
        """Inverse of :meth:`readout_matrix`: ``(p, k) -> {"w": (d, k), "b": (k,)}``."""
        if self.has_readout_bias:
            return {"w": matrix[:-1], "b": matrix[-1]}
        return {"w": matrix}

    def apply(self, params: Params, x: jax.Array) -> jax.Array:
        """Network outputs, shape ``(..., k)``."""
        psi = self.readout_features(params["hidden"], x)
        return psi @ self.readout_matrix(params["readout"])  # bias folded into psi


# -- fully connected ---------------------------------------------------------


def mlp(
    hidden: Sequence[int] = (512,),
    out_dim: int = 1,
    activation: str | Callable | Activation = "gelu",
    *,
    w_std: float = 2**0.5,
    b_std: float = 0.1,
    out_w_std: float = 1.0,
    out_b_std: float = 0.1,
    negative_slope: float = 0.01,
) -> Network:
    """A fully connected network in NTK parameterisation.

    Hidden layer ``l`` computes ``act(w_std / sqrt(fan_in) * h @ w + b_std * b)``
    with ``w: (fan_in, width)``, ``b: (width,)``; the readout computes
    ``out_w_std / sqrt(d) * h @ w + out_b_std * b``.

    Parameters
    ----------
    hidden : sequence of int
        Hidden widths; ``()`` gives Bayesian linear regression on the inputs.
    out_dim : int
        Number of outputs ``k``.
    activation : str or callable
        A name from :data:`wide_bnn.activations.ACTIVATIONS` or a function.
    w_std, b_std, out_w_std, out_b_std : float
        Layer scales; a zero bias scale removes that bias parameter.
    negative_slope : float
        Slope of ``"leaky_relu"`` for negative inputs.

    Returns
    -------
    Network
        With ``spec`` set, so :func:`wide_bnn.nngp_kernel` has a closed form.

    Examples
    --------
    >>> net = mlp(hidden=(512,), activation="relu")
    >>> params = net.init(jax.random.key(0), x)          # doctest: +SKIP
    """
    widths = tuple(hidden)
    for i, width in enumerate(widths):
        _check_positive_int(f"hidden[{i}]", width)
    act = get_activation(activation, negative_slope=negative_slope)
    _check_scale("w_std", w_std, allow_zero=False)
    _check_scale("b_std", b_std, allow_zero=True)
    spec = MLPSpec(widths, act, float(w_std), float(b_std))

    def init_hidden(key, x):
        _check_mlp_input(x)
        layers = []
        fan_in = x.shape[-1]
        for key_l, width in zip(jax.random.split(key, len(widths)), widths, strict=True):
            key_w, key_b = jax.random.split(key_l)
            layer = {"w": jax.random.normal(key_w, (fan_in, width), x.dtype)}
            if b_std > 0:
                layer["b"] = jax.random.normal(key_b, (width,), x.dtype)
            layers.append(layer)
            fan_in = width
        return layers

    def hidden_features(layers, x):
        h = x
        for layer in layers:
            h = act(_dense(layer, h, w_std, b_std))
        return h

    name = f"mlp(hidden={widths}, activation={act.name})"
    return Network(
        init_hidden, hidden_features, int(out_dim), float(out_w_std), float(out_b_std), spec, name
    )


def _dense(layer, h, w_std, b_std):
    fan_in = h.shape[-1]
    z = (h @ layer["w"]) * jnp.asarray(w_std / math.sqrt(fan_in), h.dtype)
    if "b" in layer:
        z = z + _expand(jnp.asarray(b_std, h.dtype) * layer["b"], z.ndim)
    return z


def _expand(bias, ndim):
    # Explicit broadcast of a (width,) bias against (..., width): the library
    # runs under jax_numpy_rank_promotion="raise" in its tests.
    return jnp.reshape(bias, (1,) * (ndim - 1) + bias.shape)


# -- user-defined feature maps ----------------------------------------------------


def network(
    init_hidden: Callable,
    features: Callable,
    *,
    out_dim: int = 1,
    out_w_std: float = 1.0,
    out_b_std: float = 0.1,
    name: str = "custom network",
) -> Network:
    """Wrap any feature map so that every library feature works with it.

    Parameters
    ----------
    init_hidden : callable
        ``init_hidden(key, x) -> hidden``: a pytree of arrays, **each entry a
        priori N(0, 1)** (put the scales inside ``features``, as in NTK
        parameterisation). An equinox module's array leaves work as ``hidden``
        when ``features`` rebuilds the module from them.
    features : callable
        ``features(hidden, x) -> (n, d)``: pure and jittable.
    out_dim, out_w_std, out_b_std
        The linear readout on top, as in :func:`mlp`.

    Returns
    -------
    Network
    """
    if not callable(init_hidden) or not callable(features):
        raise ValueError("init_hidden and features must be callables")
    return Network(
        init_hidden, features, int(out_dim), float(out_w_std), float(out_b_std), None, name
    )


# -- convolutional ResNet ------------------------------------------------------------


def resnet(
    channels: int = 64,
    *,
    num_blocks: int = 2,
    out_dim: int = 1,
    activation: str | Callable | Activation = "relu",
    filter_size: int = 3,
    w_std: float = 2**0.5,
    b_std: float = 0.1,
    out_w_std: float = 1.0,
    out_b_std: float = 0.1,
    residual_offset: float = 1.0,
    negative_slope: float = 0.01,
) -> Network:
    """A normaliser-free wide ResNet for images ``x: (n, height, width, in_channels)``.

    Structure: a conv stem (``in_channels -> channels``), ``num_blocks`` residual
    blocks ``h <- sqrt(1 - 1/(j + c)) * h + (1/sqrt(j + c)) * conv(act(conv(act(h))))``
    for block ``j = 1, 2, ...`` and ``c = residual_offset`` (the weights keep the
    forward variance constant), then ``act`` and global average pooling. Every
    conv is NTK parameterised with ``fan_in = in_channels * filter_size**2`` and
    ``SAME`` padding.

    Parameters
    ----------
    channels : int
        Width (number of channels) of every layer: the quantity that goes to
        infinity in the NNGP limit.
    num_blocks : int
        Number of residual blocks (0 gives a one-layer CNN).
    activation, w_std, b_std, out_w_std, out_b_std, negative_slope
        As in :func:`mlp`.
    filter_size : int
        Side of the square convolution filters.
    residual_offset : float
        ``c > 0`` in the residual weights above.

    Returns
    -------
    Network
        Features are ``(n, channels)``.
    """
    _check_positive_int("channels", channels)
    _check_positive_int("filter_size", filter_size)
    if not isinstance(num_blocks, int) or num_blocks < 0:
        raise ValueError(f"num_blocks must be a non-negative int, got {num_blocks!r}")
    if not residual_offset > 0:
        raise ValueError(f"residual_offset must be positive, got {residual_offset!r}")
    _check_scale("w_std", w_std, allow_zero=False)
    _check_scale("b_std", b_std, allow_zero=True)
    act = get_activation(activation, negative_slope=negative_slope)

    def conv_init(key, c_in, dtype):
        key_w, key_b = jax.random.split(key)
        layer = {"w": jax.random.normal(key_w, (filter_size, filter_size, c_in, channels), dtype)}
        if b_std > 0:
            layer["b"] = jax.random.normal(key_b, (channels,), dtype)
        return layer

    def init_hidden(key, x):
        if x.ndim != 4:
            raise ValueError(
                f"resnet expects x of shape (n, height, width, channels), got {x.shape}"
            )
        keys = jax.random.split(key, 1 + 2 * num_blocks)
        stem = conv_init(keys[0], x.shape[-1], x.dtype)
        blocks = [
            [
                conv_init(keys[1 + 2 * j], channels, x.dtype),
                conv_init(keys[2 + 2 * j], channels, x.dtype),
            ]
            for j in range(num_blocks)
        ]
        return {"stem": stem, "blocks": blocks}

    def conv(layer, h):
        fan_in = h.shape[-1] * filter_size**2
        z = jax.lax.conv_general_dilated(
            h,
            layer["w"],
            window_strides=(1, 1),
            padding="SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        z = z * jnp.asarray(w_std / math.sqrt(fan_in), h.dtype)
        if "b" in layer:
            z = z + _expand(jnp.asarray(b_std, h.dtype) * layer["b"], z.ndim)
        return z

    def hidden_features(hidden, x):
        h = conv(hidden["stem"], x)
        for j, (first, second) in enumerate(hidden["blocks"], start=1):
            residual = conv(second, act(conv(first, act(h))))
            skip_weight = math.sqrt(1.0 - 1.0 / (j + residual_offset))
            h = skip_weight * h + residual / math.sqrt(j + residual_offset)
        return jnp.mean(act(h), axis=(-3, -2))

    name = f"resnet(channels={channels}, num_blocks={num_blocks}, activation={act.name})"
    return Network(
        init_hidden, hidden_features, int(out_dim), float(out_w_std), float(out_b_std), None, name
    )


# -- argument checks ------------------------------------------------------------------


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_scale(name: str, value, *, allow_zero: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite float {bound}, got {value!r}")


def _check_mlp_input(x) -> None:
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"mlp expects x of shape (..., d_in) with d_in >= 1, got {x.shape}")

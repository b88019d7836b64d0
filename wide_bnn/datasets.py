"""Deterministic synthetic and bundled real regression data sets (no network access).

Every loader returns a :class:`Dataset` of NumPy float64 arrays; convert with
:meth:`Dataset.train_data` and :meth:`Dataset.test_inputs`, which pick the JAX
default float dtype (float64 when x64 is enabled) unless told otherwise.

Add a bundled set in a few lines::

    @register("wine")
    def wine(*, n_train=128, n_test=50, noise_std=0.5, seed=0):
        from sklearn.datasets import load_wine
        bunch = load_wine()
        return from_arrays("wine", bunch.data, bunch.target[:, None].astype(float),
                           n_train=n_train, n_test=n_test, noise_std=noise_std, seed=seed)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from wide_bnn.data import RegressionData

__all__ = [
    "DATASETS",
    "Dataset",
    "diabetes",
    "digits",
    "from_arrays",
    "load",
    "register",
    "teacher",
]

DATASETS: dict[str, Callable[..., Dataset]] = {}


class Dataset(NamedTuple):
    """A train/test split of a regression problem.

    Attributes
    ----------
    name : str
    x_train : numpy.ndarray, shape (n_train, ...)
    y_train : numpy.ndarray, shape (n_train, k)
    x_test : numpy.ndarray, shape (n_test, ...)
    y_test : numpy.ndarray, shape (n_test, k)
    noise_std : float
        The observation noise the set is meant to be modelled with.
    description : str
        Provenance, preprocessing and licence.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    noise_std: float
    description: str

    def train_data(self, dtype=None, *, noise_std: float | None = None) -> RegressionData:
        """The training split as :class:`~wide_bnn.RegressionData`.

        Parameters
        ----------
        dtype : dtype, optional
            Floating dtype; default: JAX's default float (float64 under x64).
        noise_std : float, optional
            Override the data set's noise scale.
        """
        dtype = _default_float(dtype)
        noise = self.noise_std if noise_std is None else noise_std
        return RegressionData(self.x_train.astype(dtype), self.y_train.astype(dtype), noise)

    def test_inputs(self, dtype=None) -> jax.Array:
        """Test inputs as a JAX array of ``dtype`` (default as :meth:`train_data`)."""
        return jnp.asarray(self.x_test.astype(_default_float(dtype)))


def _default_float(dtype):
    if dtype is None:
        return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))
    return np.dtype(dtype)


def register(name: str) -> Callable:
    """Decorator adding a loader to :data:`DATASETS` under ``name``."""

    def decorate(loader: Callable[..., Dataset]) -> Callable[..., Dataset]:
        DATASETS[name] = loader
        return loader

    return decorate


def load(name: str, **options) -> Dataset:
    """Load a data set by name (see :data:`DATASETS`), passing ``options`` to its loader.

    Raises
    ------
    ValueError
        For an unknown name (listing the known ones).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](**options)


def standardise_inputs(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale inputs by the scalar mean and std of the *training* inputs (as in the paper)."""
    mean, std = float(np.mean(x_train)), float(np.std(x_train))
    std = std if std > 0 else 1.0
    return (x_train - mean) / std, (x_test - mean) / std


def from_arrays(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_train: int,
    n_test: int,
    noise_std: float,
    seed: int = 0,
    description: str = "",
    standardise_targets: bool = True,
) -> Dataset:
    """Shuffle (seeded), split, standardise inputs (scalar) and, optionally, targets per column.

    Parameters
    ----------
    x : numpy.ndarray, shape (N, ...)
    y : numpy.ndarray, shape (N, k)
    n_train, n_test : int
        Split sizes; ``n_train + n_test <= N``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    total = x.shape[0]
    for arg, value in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive int, got {value!r}")
    if n_train + n_test > total:
        raise ValueError(
            f"n_train + n_test = {n_train + n_test} exceeds the {total} points of {name}"
        )
    order = np.random.default_rng(seed).permutation(total)
    train, test = order[:n_train], order[n_train : n_train + n_test]
    x_train, x_test = standardise_inputs(x[train], x[test])
    y_train, y_test = y[train], y[test]
    if standardise_targets:
        mean, std = y_train.mean(axis=0), y_train.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        y_train, y_test = (y_train - mean) / std, (y_test - mean) / std
    return Dataset(name, x_train, y_train, x_test, y_test, float(noise_std), description)


@register("teacher")
def teacher(
    n_train: int = 64,
    n_test: int = 32,
    in_dim: int = 16,
    out_dim: int = 1,
    *,
    noise_std: float = 0.1,
    teacher_width: int = 50,
    teacher_depth: int = 2,
    seed: int = 0,
) -> Dataset:
    """Synthetic regression from a fixed random tanh teacher network (benchmark problem P1).

    ``x ~ N(0, I_in_dim)``; the teacher has ``teacher_depth`` tanh layers of
    ``teacher_width`` units with weights ``N(0, 1/fan_in)`` and biases
    ``N(0, 0.1^2)`` and a linear output layer; its outputs are standardised over
    train and test together, then ``N(0, noise_std^2)`` noise is added. The
    defaults are problem P1 of the benchmarks. Deterministic given ``seed``
    (NumPy's PCG64), whatever the JAX version.
    """
    for arg, value in (("in_dim", in_dim), ("out_dim", out_dim), ("teacher_width", teacher_width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive int, got {value!r}")
    if not noise_std > 0:
        raise ValueError(f"noise_std must be positive, got {noise_std!r}")
    rng = np.random.default_rng(seed)
    total = n_train + n_test
    x = rng.standard_normal((total, in_dim))
    h, fan_in = x, in_dim
    for _ in range(teacher_depth):
        w = rng.standard_normal((fan_in, teacher_width)) / np.sqrt(fan_in)
        b = 0.1 * rng.standard_normal(teacher_width)
        h, fan_in = np.tanh(h @ w + b), teacher_width
    w_out = rng.standard_normal((fan_in, out_dim)) / np.sqrt(fan_in)
    f = h @ w_out
    f = (f - f.mean(axis=0)) / f.std(axis=0)
    y = f + noise_std * rng.standard_normal(f.shape)
    description = (
        f"random tanh teacher (depth {teacher_depth}, width {teacher_width}), "
        f"x ~ N(0, I_{in_dim}), standardised outputs + N(0, {noise_std}^2) noise, seed {seed}"
    )
    return Dataset(
        "teacher", x[:n_train], y[:n_train], x[n_train:], y[n_train:], float(noise_std), description
    )


def _sklearn(loader_name: str):
    try:
        import sklearn.datasets as skd
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "the bundled real data sets need scikit-learn: pip install 'wide-bnn[data]'"
        ) from exc
    return getattr(skd, loader_name)()


@register("diabetes")
def diabetes(
    n_train: int = 300, n_test: int = 142, *, noise_std: float = 0.7, seed: int = 0
) -> Dataset:
    """scikit-learn's bundled diabetes regression (442 patients x 10 features, BSD licence).

    Inputs scaled by their scalar training mean/std; the target (disease
    progression) standardised. ``noise_std = 0.7`` is about the residual scale
    of a linear fit on the standardised target.
    """
    bunch = _sklearn("load_diabetes")
    return from_arrays(
        "diabetes",
        bunch.data,
        bunch.target,
        n_train=n_train,
        n_test=n_test,
        noise_std=noise_std,
        seed=seed,
        description="scikit-learn load_diabetes (Efron et al. 2004; BSD-3-Clause via scikit-learn)",
    )


@register("digits")
def digits(
    n_train: int = 256,
    n_test: int = 128,
    *,
    noise_std: float = 0.1,
    seed: int = 0,
    flatten: bool = True,
) -> Dataset:
    """scikit-learn's bundled 8x8 digits as one-hot regression (the paper's CIFAR-10 set-up, small).

    Targets are one-hot class indicators minus 0.1 (10 outputs), inputs scaled by
    their scalar training mean/std; ``flatten=False`` keeps images as
    ``(n, 8, 8, 1)`` for CNNs.
    """
    bunch = _sklearn("load_digits")
    x = bunch.images[..., None] if not flatten else bunch.data
    y = np.eye(10)[bunch.target] - 0.1
    return from_arrays(
        "digits",
        x,
        y,
        n_train=n_train,
        n_test=n_test,
        noise_std=noise_std,
        seed=seed,
        standardise_targets=False,
        description="scikit-learn load_digits (UCI optdigits, 1797 8x8 images; BSD-3-Clause via "
        "scikit-learn), one-hot targets minus 0.1",
    )

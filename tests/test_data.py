"""RegressionData validation: every bad input raises a ValueError naming the argument."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import wide_bnn as wb


def _xy(n=5, d=3, k=None, dtype=np.float64):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)).astype(dtype)
    y = rng.standard_normal((n,) if k is None else (n, k)).astype(dtype)
    return x, y


def test_vector_targets_become_one_column_and_are_remembered():
    x, y = _xy()
    data = wb.RegressionData(x, y, 0.1)
    assert data.y.shape == (5, 1) and data.y_is_vector
    np.testing.assert_array_equal(np.asarray(data.y[:, 0]), y)
    assert data.num_points == 5 and data.out_dim == 1 and data.dtype == jnp.float64


def test_matrix_targets_keep_their_shape():
    x, y = _xy(k=3)
    data = wb.RegressionData(x, y, 0.5)
    assert data.y.shape == (5, 3) and not data.y_is_vector and data.out_dim == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"x": np.array([[np.nan, 1.0]] * 5)}, "x contains 5 non-finite"),
        ({"y": np.full(5, np.inf)}, "y contains 5 non-finite"),
        ({"y": np.zeros(4)}, "different numbers of points"),
        ({"x": np.zeros(5)}, "x must have shape"),
        ({"y": np.zeros((5, 1, 1))}, "y must have shape"),
        ({"x": np.zeros((0, 3)), "y": np.zeros(0)}, "x is empty"),
        ({"noise_std": 0.0}, "noise_std must be positive"),
        ({"noise_std": -1.0}, "noise_std must be positive"),
        ({"noise_std": float("nan")}, "noise_std must be positive"),
        ({"noise_std": np.ones(5)}, "noise_std must be a scalar"),
        ({"noise_std": "big"}, "noise_std must be a positive float"),
        ({"noise_std": True}, "noise_std must be a positive float"),
        ({"x": np.ones((5, 3), dtype=np.int64)}, "x has integer dtype"),
        ({"y": np.ones(5, dtype=np.float32)}, "x has dtype float64 but y has dtype float32"),
        ({"x": np.array([["a", "b"]] * 5)}, "x must be a floating array"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(kwargs, match):
    x, y = _xy()
    args = {"x": x, "y": y, "noise_std": 0.1} | kwargs
    with pytest.raises(ValueError, match=match):
        wb.RegressionData(args["x"], args["y"], args["noise_std"])


def test_dtype_argument_casts_integers_and_mixed_inputs():
    x, _y = _xy()
    data = wb.RegressionData(x.astype(np.float32), np.arange(5), 0.1, dtype="float64")
    assert data.x.dtype == jnp.float64 and data.y.dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(data.y[:, 0]), np.arange(5.0))


def test_float64_request_without_x64_is_refused():
    x, y = _xy()
    with jax.enable_x64(False), pytest.raises(ValueError, match="64-bit JAX"):
        wb.RegressionData(x, y, 0.1, dtype="float64")


def test_float32_data_stays_float32():
    x, y = _xy(dtype=np.float32)
    assert wb.RegressionData(x, y, 0.1).dtype == jnp.float32


def test_data_is_a_pytree_that_survives_jit():
    x, y = _xy(k=2)
    data = wb.RegressionData(x, y, 0.3)

    @jax.jit
    def residual_norm(d):
        return jnp.sum(d.y**2) / d.noise_std

    assert np.isclose(residual_norm(data), np.sum(y**2) / 0.3)
    leaves, treedef = jax.tree_util.tree_flatten(data)
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert rebuilt.out_dim == 2 and rebuilt.noise_std == 0.3

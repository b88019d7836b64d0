"""Property-based checks (hypothesis): valid inputs kept unchanged, invalid ones refused."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import wide_bnn as wb

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
float_dtypes = st.sampled_from([np.float32, np.float64])
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def regression_arrays(draw):
    n = draw(st.integers(1, 12))
    d = draw(st.integers(1, 5))
    dtype = draw(float_dtypes)
    x = draw(hnp.arrays(dtype, (n, d), elements=finite))
    y_shape = draw(st.sampled_from([(n,), (n, draw(st.integers(1, 4)))]))
    y = draw(hnp.arrays(dtype, y_shape, elements=finite))
    return x, y


@SETTINGS
@given(arrays=regression_arrays(), noise=st.floats(1e-6, 1e3))
def test_valid_data_is_kept_exactly(arrays, noise):
    x, y = arrays
    data = wb.RegressionData(x, y, noise)
    assert data.dtype == x.dtype and data.num_points == x.shape[0]
    np.testing.assert_array_equal(np.asarray(data.x), x)
    np.testing.assert_array_equal(np.asarray(data.y).reshape(y.shape), y)
    assert data.y_is_vector == (y.ndim == 1) and data.noise_std == pytest.approx(noise)


@SETTINGS
@given(
    arrays=regression_arrays(),
    index=st.integers(0, 10_000),
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
    target=st.sampled_from(["x", "y"]),
)
def test_any_non_finite_entry_is_refused(arrays, index, bad, target):
    x, y = (a.copy() for a in arrays)
    array = x if target == "x" else y
    array.flat[index % array.size] = bad
    with pytest.raises(ValueError, match=f"{target} contains"):
        wb.RegressionData(x, y, 0.1)


@SETTINGS
@given(arrays=regression_arrays(), extra=st.integers(1, 3))
def test_mismatched_lengths_are_refused(arrays, extra):
    x, y = arrays
    with pytest.raises(ValueError, match="different numbers of points"):
        wb.RegressionData(np.concatenate([x] + [x[:1]] * extra), y, 0.1)


@SETTINGS
@given(noise=st.one_of(st.floats(max_value=0.0), st.just(math.nan), st.just(math.inf)))
def test_non_positive_or_non_finite_noise_is_refused(noise):
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match="noise_std"):
        wb.RegressionData(x, np.zeros(3), noise)


@SETTINGS
@given(
    dtypes=st.tuples(
        st.sampled_from([np.int32, np.int64, np.float32, np.float64]),
        st.sampled_from([np.int32, np.int64, np.float32, np.float64]),
    )
)
def test_integer_or_mixed_dtypes_raise_unless_a_dtype_is_chosen(dtypes):
    x = np.ones((3, 2), dtypes[0])
    y = np.ones(3, dtypes[1])
    same_float = dtypes[0] == dtypes[1] and np.issubdtype(dtypes[0], np.floating)
    if same_float:
        assert wb.RegressionData(x, y, 0.1).dtype == dtypes[0]
    else:
        with pytest.raises(ValueError, match="dtype"):
            wb.RegressionData(x, y, 0.1)
    data = wb.RegressionData(x, y, 0.1, dtype=np.float64)
    assert data.dtype == jnp.float64


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hidden=st.lists(st.integers(1, 9), max_size=3),
    out_dim=st.integers(1, 3),
    activation=st.sampled_from(wb.ACTIVATIONS),
    b_std=st.sampled_from([0.0, 0.1]),
    out_b_std=st.sampled_from([0.0, 0.5]),
    n=st.integers(1, 4),
    d_in=st.integers(1, 4),
    dtype=float_dtypes,
)
def test_any_valid_mlp_has_the_contract_shapes_and_dtype(
    hidden, out_dim, activation, b_std, out_b_std, n, d_in, dtype
):
    net = wb.mlp(
        hidden=tuple(hidden),
        out_dim=out_dim,
        activation=activation,
        b_std=b_std,
        out_b_std=out_b_std,
    )
    x = jnp.ones((n, d_in), dtype)
    params = net.init(jax.random.key(0), x)
    assert len(params["hidden"]) == len(hidden)
    d = hidden[-1] if hidden else d_in
    assert params["readout"]["w"].shape == (d, out_dim)
    assert ("b" in params["readout"]) == (out_b_std > 0)
    out = net.apply(params, x)
    assert out.shape == (n, out_dim) and out.dtype == dtype
    assert bool(jnp.all(jnp.isfinite(out)))


@SETTINGS
@given(
    width=st.one_of(st.integers(max_value=0), st.floats(0.5, 10.0), st.just(True)),
    position=st.integers(0, 2),
)
def test_invalid_widths_are_refused(width, position):
    hidden = [4, 4, 4]
    hidden[position] = width
    with pytest.raises(ValueError, match=rf"hidden\[{position}\] must be a positive int"):
        wb.mlp(hidden=tuple(hidden))

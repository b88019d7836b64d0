"""Data sets: deterministic, correctly standardised, no network access."""

import jax.numpy as jnp
import numpy as np
import pytest

import wide_bnn as wb
from wide_bnn import datasets


def test_teacher_is_problem_p1_and_deterministic():
    a, b = datasets.teacher(), datasets.teacher()
    assert a.x_train.shape == (64, 16) and a.x_test.shape == (32, 16) and a.y_train.shape == (64, 1)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_train, datasets.teacher(seed=1).y_train)
    # noiseless teacher outputs were standardised over train + test, then noise 0.1 added
    y = np.concatenate([a.y_train, a.y_test])
    assert abs(y.mean()) < 4 * 0.1 / np.sqrt(96) + 1e-12
    assert abs(y.var() - (1 + 0.01)) < 0.2
    data = a.train_data()
    assert (
        isinstance(data, wb.RegressionData) and data.dtype == jnp.float64 and data.noise_std == 0.1
    )


def test_teacher_any_shape():
    ds = datasets.teacher(n_train=10, n_test=5, in_dim=3, out_dim=4, seed=3)
    assert ds.y_train.shape == (10, 4) and ds.x_test.shape == (5, 3)


def test_digits_is_one_hot_minus_a_tenth_with_standardised_inputs():
    ds = datasets.load("digits", n_train=100, n_test=50)
    assert ds.y_train.shape == (100, 10)
    np.testing.assert_allclose(np.sort(np.unique(ds.y_train)), [-0.1, 0.9])
    np.testing.assert_allclose(ds.y_train.sum(axis=1), 0.0, atol=1e-12)
    assert abs(ds.x_train.mean()) < 1e-12 and abs(ds.x_train.std() - 1) < 1e-12
    images = datasets.digits(n_train=10, n_test=5, flatten=False)
    assert images.x_train.shape == (10, 8, 8, 1)


def test_diabetes_split_is_disjoint_and_seeded():
    ds = datasets.load("diabetes", n_train=50, n_test=20, seed=2)
    assert ds.x_train.shape == (50, 10)
    assert abs(ds.y_train.mean()) < 1e-12 and abs(ds.y_train.std() - 1) < 1e-12
    rows = {tuple(r) for r in ds.x_train} & {tuple(r) for r in ds.x_test}
    assert not rows


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match="unknown data set 'cifar'"):
        datasets.load("cifar")
    with pytest.raises(ValueError, match="exceeds"):
        datasets.load("diabetes", n_train=400, n_test=100)
    with pytest.raises(ValueError, match="n_train must be a positive int"):
        datasets.load("digits", n_train=0)


def test_register_adds_a_loader():
    @datasets.register("tiny_test_set")
    def tiny(*, seed=0):
        rng = np.random.default_rng(seed)
        return datasets.from_arrays(
            "tiny",
            rng.standard_normal((20, 2)),
            rng.standard_normal(20),
            n_train=15,
            n_test=5,
            noise_std=0.2,
        )

    try:
        assert datasets.load("tiny_test_set").x_train.shape == (15, 2)
    finally:
        del datasets.DATASETS["tiny_test_set"]

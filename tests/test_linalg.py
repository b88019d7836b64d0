"""The Cholesky factorisation and triangular solves used inside chains.

They must equal JAX's own (values and reverse-mode derivatives, float64), also under
``jax.vmap``, and a vmapped call must reach LAPACK one matrix at a time: jaxlib 0.10
splits a batched call over XLA's CPU thread pool and blocks a pool thread meanwhile,
which deadlocked 2-core runs (see :mod:`wide_bnn.linalg`).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.linalg import solve_triangular

import wide_bnn as wb
from wide_bnn import datasets, linalg, sampling

TOL = 1e-10


def _problem(seed, size=6, columns=3):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((size, size))
    spd = jnp.asarray(a @ a.T + size * np.eye(size))
    return spd, jnp.asarray(rng.standard_normal((size, columns)))


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=TOL, atol=TOL)


def _cases():
    """(ours, JAX's reference, argument builder) for each function."""

    def ours_chol(m, b):
        return linalg.cholesky(m)[0] @ b

    def ref_chol(m, b):
        return jnp.linalg.cholesky(m) @ b

    def lower(m, b):
        return jnp.linalg.cholesky(m), b

    return {
        "cholesky": (ours_chol, ref_chol, lambda m, b: (m, b)),
        "solve_lower": (
            linalg.solve_lower,
            lambda f, b: solve_triangular(f, b, lower=True),
            lower,
        ),
        "solve_lower_transposed": (
            linalg.solve_lower_transposed,
            lambda f, b: solve_triangular(f, b, lower=True, trans=1),
            lower,
        ),
        "cho_solve": (
            linalg.cho_solve,
            lambda f, b: jax.scipy.linalg.cho_solve((f, True), b),
            lower,
        ),
    }


@pytest.mark.parametrize("name", sorted(_cases()))
def test_values_and_gradients_equal_jax(name):
    ours, ref, build = _cases()[name]
    weights = jnp.asarray(np.random.default_rng(9).standard_normal((6, 3)))

    def loss(fn):
        return lambda m, b: jnp.sum(weights * fn(m, b))

    # Only the lower triangle of a factor is read, so only its gradient is compared.
    def lower_part(grads):
        first, second = grads
        return (jnp.tril(first), second) if name != "cholesky" else (first, second)

    for seed in range(3):
        args = build(*_problem(seed))
        _close(ours(*args), ref(*args))
        mine = lower_part(jax.grad(loss(ours), argnums=(0, 1))(*args))
        theirs = lower_part(jax.grad(loss(ref), argnums=(0, 1))(*args))
        for a, b in zip(mine, theirs, strict=True):
            _close(a, b)
    # Vmapped over a batch (the chains), with the derivatives.
    batch = [build(*_problem(seed)) for seed in range(4)]
    stacked = [jnp.stack(parts) for parts in zip(*batch, strict=True)]
    _close(jax.vmap(ours)(*stacked), jax.vmap(ref)(*stacked))
    mine = jax.vmap(jax.grad(loss(ours), argnums=(0, 1)))(*stacked)
    theirs = jax.vmap(jax.grad(loss(ref), argnums=(0, 1)))(*stacked)
    for a, b in zip(lower_part(mine), lower_part(theirs), strict=True):
        _close(a, b)


def test_failed_factorisation_is_flagged_with_a_zero_gradient():
    spd, _ = _problem(0)
    factor, ok = linalg.cholesky(-spd)
    assert not bool(ok)
    np.testing.assert_array_equal(np.asarray(factor), np.eye(6))
    grad = jax.grad(lambda m: jnp.sum(linalg.cholesky(m)[0]))(-spd)
    np.testing.assert_array_equal(np.asarray(grad), 0.0)


def _lapack_shapes(hlo_text):
    """The f64 shapes of every LAPACK custom call in compiled HLO text."""
    calls = [line for line in hlo_text.splitlines() if 'custom_call_target="lapack_' in line]
    return calls, [re.findall(r"f64\[([\d,]*)\]", line) for line in calls]


@pytest.mark.parametrize(
    "sampler, collapsed, width",
    [("hmc", True, 4), ("pcn", True, 64), ("mala", False, 8)],
)
def test_chains_call_lapack_one_matrix_at_a_time(monkeypatch, sampler, collapsed, width):
    # n = 16 training points: width 4 takes the primal route (with gradients), width 64 the
    # dual route (pCN: the factorisation kept for recording), width 8 the non-collapsed
    # target (gradients through the readout map).
    ds = datasets.teacher(n_train=16, n_test=4)
    seen = []
    real_run_chunk = sampling._run_chunk

    def spy(compiled, *args):
        seen.append(compiled.as_text())
        return real_run_chunk(compiled, *args)

    monkeypatch.setattr(sampling, "_run_chunk", spy)
    wb.sample(
        wb.mlp((width,)),
        ds.train_data(np.float64),
        x_test=ds.test_inputs(np.float64),
        sampler=sampler,
        collapsed=collapsed,
        num_chains=4,
        num_warmup=2,
        num_samples=2,
        progress=False,
    )
    calls, shapes = _lapack_shapes(seen[0])
    assert calls, "expected LAPACK calls in the compiled chunk"
    for line, found in zip(calls, shapes, strict=True):
        ranks = {len(shape.split(",")) for shape in found if shape}
        assert ranks <= {1, 2}, f"batched LAPACK call: {line.strip()[:200]}"

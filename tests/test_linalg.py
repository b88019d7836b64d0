"""The Cholesky factorisation and triangular solves used inside chains.

They must equal JAX's own (values and reverse-mode derivatives, float64), also under
``jax.vmap``, and a vmapped call on large matrices must reach LAPACK one matrix at a
time: jaxlib 0.10 splits a large batched call over XLA's CPU thread pool and blocks a
pool thread meanwhile, which deadlocked 2-core runs (see :mod:`wide_bnn.linalg`).
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


def _large_batched_lapack_calls(hlo_text):
    """LAPACK calls in compiled HLO text that jaxlib 0.10 would split over its pool.

    The first f64 shape of a call's line is its result: ``(batch..., m, m)`` for a
    factorisation, ``(batch..., m, r)`` for a triangular solve.
    """
    calls = [line for line in hlo_text.splitlines() if 'custom_call_target="lapack_' in line]
    large = []
    for line in calls:
        dims = [int(d) for d in re.search(r"f64\[([\d,]*)\]", line).group(1).split(",")]
        batch, (m, r) = int(np.prod(dims[:-2])), dims[-2:]
        flops = m**3 / 3 if "potrf" in line else m * m * r
        if batch > 1 and batch * flops >= linalg._INLINE_FLOPS:
            large.append(line.strip()[:200])
    return calls, large


@pytest.mark.parametrize(
    "sampler, collapsed, n_train, width",
    [("hmc", True, 128, 96), ("pcn", True, 64, 128), ("mala", False, 64, 128)],
)
def test_chains_make_no_large_batched_lapack_call(monkeypatch, sampler, collapsed, n_train, width):
    # Primal route with gradients (p = 97 < n = 128), the dual route with pCN keeping the
    # factorisation for recording, and the non-collapsed target (gradients through the
    # readout map). 4 chains of 64 x 64 or larger matrices: batched, jaxlib 0.10 would
    # split every factorisation over its thread pool.
    ds = datasets.teacher(n_train=n_train, n_test=4)
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
    calls, large = _large_batched_lapack_calls(seen[0])
    assert calls, "expected LAPACK calls in the compiled chunk"
    assert not large, large


def test_one_matrix_per_call_is_enforced():
    spd, b = _problem(0)
    with pytest.raises(ValueError, match="one square matrix"):
        linalg.cholesky(jnp.stack([spd, spd]))
    with pytest.raises(ValueError, match="right-hand side"):
        linalg.solve_lower(spd, b[:3])

"""Cost of one jitted value-and-grad of the repriorised log-density, by route.

Compares, side by side in one process (1-hidden-layer GELU MLP, float64):

* ``standard``: ``log_posterior`` in the standard parameterisation (the baseline),
* ``primal``: the repriorised density ``rp.log_density`` with the (p, p) route,
* ``dual``: the same with the (n, n) route,
* ``collapsed``: ``rp.log_marginal`` (readout integrated out) with the auto route,
* ``collapsed-autodiff``: the same marginal differentiated through the Cholesky
  (what the hand-written gradient replaces).

Prints median milliseconds per call and ratios to ``standard``; ``auto/primal`` is the
primal time over the auto-route repriorised density time.

Usage::

    python benchmarks/bench_reprior.py                      # widths 256 1024 4096, n 256
    python benchmarks/bench_reprior.py --widths 64 --n 32   # a quick smoke run
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import math
import platform
import statistics
import time

import jax
import jax.numpy as jnp

from wide_bnn.data import RegressionData
from wide_bnn.nets import mlp
from wide_bnn.posterior import log_posterior, log_standard_normal
from wide_bnn.reprior import Repriorisation

METHODS = ("standard", "primal", "dual", "collapsed", "collapsed-autodiff")


def _median_ms(fn, arg, *, budget: float, min_repeats: int, max_repeats: int) -> float:
    jax.block_until_ready(fn(arg))  # compile
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_repeats and (
        len(times) < min_repeats or time.perf_counter() - start < budget
    ):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(arg))
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _autodiff_marginal(net, data):
    # The textbook collapsed target, differentiated through the Cholesky by JAX.
    def log_marginal(hidden):
        psi = net.readout_features(hidden, data.x)
        n, k = data.y.shape
        factor = jnp.linalg.cholesky(psi @ psi.T + data.noise_std**2 * jnp.eye(n, dtype=psi.dtype))
        white = jax.scipy.linalg.solve_triangular(factor, data.y, lower=True)
        logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(factor)))
        value = -0.5 * (jnp.sum(white**2) + k * logdet + n * k * math.log(2 * math.pi))
        return value + log_standard_normal(hidden)

    return log_marginal


def run(widths, n, d_in, out_dim, budget, max_repeats, skip_primal_above):
    key_x, key_y, key_p = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(key_x, (n, d_in), jnp.float64)
    y = jax.random.normal(key_y, (n, out_dim), jnp.float64)
    data = RegressionData(x, y, noise_std=0.1)
    rows = []
    for width in widths:
        net = mlp((width,), out_dim, "gelu")
        params = net.init(key_p, x)
        rp = {route: Repriorisation(net, data, route=route) for route in ("primal", "dual")}
        auto = Repriorisation(net, data).route
        phi = rp["dual"].inverse(params)
        fns = {
            "standard": (lambda p, net=net: log_posterior(net, data, p), params),
            "primal": (rp["primal"].log_density, rp["primal"].inverse(params)),
            "dual": (rp["dual"].log_density, phi),
            "collapsed": (Repriorisation(net, data).log_marginal, params["hidden"]),
            "collapsed-autodiff": (_autodiff_marginal(net, data), params["hidden"]),
        }
        row = {"width": width, "auto": auto}
        for name, (fn, arg) in fns.items():
            if name == "primal" and width > skip_primal_above:
                row[name] = float("nan")
                continue
            compiled = jax.jit(jax.value_and_grad(fn))
            # One-off slow calls (primal at large width) get few repeats.
            row[name] = _median_ms(
                compiled, arg, budget=budget, min_repeats=3, max_repeats=max_repeats
            )
        rows.append(row)
        _print_row(row)
    return rows


def _print_header(args):
    print(
        f"# jax {jax.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}"
    )
    print(
        f"# MLP 1 hidden layer (gelu), n={args.n}, d_in={args.d_in}, k={args.out_dim}, "
        "float64, median ms per jitted value_and_grad"
    )
    cols = " | ".join(f"{m:>18}" for m in METHODS)
    print(f"| width | auto  | {cols} | dual/std | coll/std | primal/auto |")
    print("|" + "---|" * (len(METHODS) + 5))


def _print_row(row):
    cols = " | ".join(f"{row[m]:18.2f}" for m in METHODS)
    auto_ms = row[row["auto"]]
    print(
        f"| {row['width']:5d} | {row['auto']:5s} | {cols} | "
        f"{row['dual'] / row['standard']:8.2f} | {row['collapsed'] / row['standard']:8.2f} | "
        f"{row['primal'] / auto_ms:11.1f} |",
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--d-in", type=int, default=256)
    parser.add_argument("--out-dim", type=int, default=1)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per timing")
    parser.add_argument("--max-repeats", type=int, default=50)
    parser.add_argument("--skip-primal-above", type=int, default=10**9)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)  # a script, not the library: it owns the config
    _print_header(args)
    run(
        args.widths,
        args.n,
        args.d_in,
        args.out_dim,
        args.budget,
        args.max_repeats,
        args.skip_primal_above,
    )


if __name__ == "__main__":
    main()

"""Benchmark the closed-form NNGP kernel: wall time for n x n kernels of a depth-3 MLP.

For each activation and size ``n`` the script builds ``x ~ N(0, I_d)`` (n, d) and
times ``nngp_kernel(net, x)`` (the symmetric kernel, exactly mirrored tiles) under
``jax.jit``. Compilation (``jit(...).lower(x).compile()``) is timed separately
from execution; execution is repeated and the median reported. One process runs
everything, so ratios between rows are comparable even when absolute timings
are bimodal between processes (see ENVIRONMENT.md).

Usage::

    python benchmarks/bench_nngp.py                        # n = 1000, 10000; relu, gelu, tanh
    python benchmarks/bench_nngp.py --sizes 1000 2000 --activations relu --repeats 3

``tanh`` (Gauss-Hermite quadrature, cost ~ order^2 per entry and layer) is only
run up to ``--max-quadrature-n`` points.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import platform
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import wide_bnn as wb
from wide_bnn.nngp import DEFAULT_BLOCK_SIZE, nngp_kernel


def _peak_rss_gib() -> float:
    # ru_maxrss is in KiB on Linux: the process peak so far, not per row.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def bench_one(activation: str, n: int, args) -> dict:
    dtype = jnp.float64 if args.dtype == "float64" else jnp.float32
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, args.input_dim)), dtype)
    net = wb.mlp(hidden=(1,) * args.depth, activation=activation)  # widths do not matter

    fn = jax.jit(lambda z: nngp_kernel(net, z, block_size=args.block_size))
    start = time.perf_counter()
    compiled = fn.lower(x).compile()
    compile_s = time.perf_counter() - start

    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        kernel = compiled(x)
        kernel.block_until_ready()
        times.append(time.perf_counter() - start)
    # Cheap sanity checks on the result that was timed (a fast wrong kernel is no result).
    finite = bool(jnp.all(jnp.isfinite(kernel)))
    symmetric = bool(jnp.all(kernel == kernel.T))
    del kernel
    return {
        "activation": activation,
        "n": n,
        "compile_s": compile_s,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "entries_per_s": n * n / statistics.median(times),
        "finite": finite,
        "symmetric": symmetric,
        "peak_rss_gib": _peak_rss_gib(),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--activations", nargs="+", default=["relu", "gelu", "tanh"])
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--input-dim", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--max-quadrature-n", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)

    print(
        f"# NNGP kernel benchmark: depth {args.depth}, d_in {args.input_dim}, {args.dtype}, "
        f"block_size {args.block_size}, {args.repeats} repeats"
    )
    print(
        f"# jax {jax.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}"
    )
    print(
        "| activation | n | compile (s) | run, median (s) | run, min (s) | entries/s "
        "| finite | exactly symmetric | peak RSS (GiB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for activation in args.activations:
        closed_form = activation != "tanh"
        for n in args.sizes:
            if not closed_form and n > args.max_quadrature_n:
                continue
            row = bench_one(activation, n, args)
            print(
                f"| {row['activation']} | {row['n']} | {row['compile_s']:.2f} | "
                f"{row['median_s']:.3f} | {row['min_s']:.3f} | {row['entries_per_s']:.3g} | "
                f"{row['finite']} | {row['symmetric']} | {row['peak_rss_gib']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

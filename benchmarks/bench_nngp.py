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
    python benchmarks/bench_nngp.py --skip-accuracy        # timing table only

Then three accuracy tables (float64): closed-form duals against high-order
quadrature, tanh quadrature against its order, and the kernel against the
empirical kernels of random networks of growing width.

``tanh`` (Gauss-Hermite quadrature, cost ~ order^2 per entry and layer) runs at
the smaller ``--quadrature-sizes``.
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


def accuracy_tables(args) -> None:
    """Closed forms against quadrature, quadrature against its order, kernel against wide nets."""
    from wide_bnn.activations import get_activation
    from wide_bnn.nngp import _dual

    grid = [
        (k11, rho * (k11 * k22) ** 0.5, k22)
        for k11 in (0.1, 1.0, 4.0)
        for k22 in (0.3, 1.0, 2.5)
        for rho in (-1.0, -0.9, -0.3, 0.0, 0.5, 0.99, 1.0)
    ]
    k11, k12, k22 = (jnp.asarray(c, jnp.float64) for c in zip(*grid, strict=True))
    print("\n## Closed-form duals against 2-D Gauss-Hermite quadrature (63 (k11, k12, k22) points)")
    print("| activation | quadrature order | max abs difference | max relative difference |")
    print("|---|---|---|---|")
    for name in ("relu", "leaky_relu", "abs", "gelu", "erf", "identity"):
        act = get_activation(name)
        closed = np.asarray(_dual(act, 2, k11, k12, k22))
        order = 200 if act.is_piecewise_linear else 100
        quad = np.asarray(_dual(get_activation(lambda u, f=act.fn: f(u)), order, k11, k12, k22))
        diff = np.abs(closed - quad)
        rel = np.max(diff / np.maximum(np.abs(quad), 1e-12))
        print(f"| {name} | {order} | {diff.max():.1e} | {rel:.1e} |")

    print("\n## tanh by quadrature: error against order 300, over the same grid")
    print("| order | max abs error | max abs error, variances <= 1 |")
    print("|---|---|---|")
    tanh = get_activation("tanh")
    reference = np.asarray(_dual(tanh, 300, k11, k12, k22))
    small = np.asarray((k11 <= 1) & (k22 <= 1))
    for order in (16, 32, 48, 64, 100):
        err = np.abs(np.asarray(_dual(tanh, order, k11, k12, k22)) - reference)
        print(f"| {order} | {err.max():.1e} | {err[small].max():.1e} |")

    print(
        f"\n## Kernel against random networks (depth {args.depth}, relu, n = 64, "
        f"{args.networks} networks per width): relative Frobenius error"
    )
    print("| width | one network, mean | one network, max | average of all networks |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((64, args.input_dim)))
    for width in args.widths:
        net = wb.mlp(hidden=(width,) * args.depth, activation="relu")
        kernel = np.asarray(nngp_kernel(net, x))

        @jax.jit
        def empirical(key, net=net):
            psi = net.readout_features(net.init(key, x)["hidden"], x)
            return psi @ psi.T

        samples = [
            np.asarray(empirical(k)) for k in jax.random.split(jax.random.key(width), args.networks)
        ]
        norm = np.linalg.norm(kernel)
        single = [np.linalg.norm(s - kernel) / norm for s in samples]
        average = np.linalg.norm(np.mean(samples, axis=0) - kernel) / norm
        print(f"| {width} | {np.mean(single):.4f} | {np.max(single):.4f} | {average:.4f} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--activations", nargs="+", default=["relu", "gelu", "tanh"])
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--input-dim", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument(
        "--quadrature-sizes",
        type=int,
        nargs="+",
        default=[250, 500],
        help="sizes for activations without a closed form (cost ~ order^2 per entry)",
    )
    parser.add_argument("--skip-accuracy", action="store_true", help="timing table only")
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--networks", type=int, default=8)
    args = parser.parse_args(argv)
    if args.dtype == "float64" or not args.skip_accuracy:
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
        for n in args.sizes if closed_form else args.quadrature_sizes:
            row = bench_one(activation, n, args)
            print(
                f"| {row['activation']} | {row['n']} | {row['compile_s']:.2f} | "
                f"{row['median_s']:.3f} | {row['min_s']:.3f} | {row['entries_per_s']:.3g} | "
                f"{row['finite']} | {row['symmetric']} | {row['peak_rss_gib']:.2f} |",
                flush=True,
            )
    if not args.skip_accuracy:
        accuracy_tables(args)


if __name__ == "__main__":
    main()

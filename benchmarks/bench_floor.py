"""Where the time of one draw goes: the parts of a collapsed-chain step, timed one by one.

Any sampler of the collapsed repriorised chain that moves the hidden layer between two
saved draws pays, per chain and draw, the work this script times on problem P1
(``datasets.teacher()``, 1-hidden-layer GELU MLP, float64, all chains vectorised as in
``wb.sample``):

* ``kernel``: the training features and the ``n x n`` kernel (``p x p`` Gram matrix when
  ``p < n``) alone, which every exact evaluation of the likelihood at new hidden
  parameters must compute;
* ``loglik``: the same with its Cholesky factorisation and the collapsed log-likelihood,
  returning the factorisation for recording (``Target.loglik_cache_fn``);
* ``record``: what is saved per draw from that factorisation: the exact readout draw, the
  test features, ``f_test``, ``f_test_mean`` and the parameter projections
  (``Target.record``);
* ``proposal``: one standard normal vector of the hidden dimension (pCN's proposal noise).

Printed in milliseconds for all chains together (median of ``--repeats`` timings of
``--calls`` calls each), with ``chains / kernel``: the draws per second of a sampler that
did nothing but the features and kernel once per draw. Functions timed one at a time can
cost more than inside the fused sampling loop (on the 2-core test machine ``loglik +
record`` exceeded a whole pCN step of ``wb.sample``), so read the columns as where the time
goes, not as exact bounds. The issue's target at width 1024 (100 x the NumPyro anchor, 1420
ESS/s) is printed for comparison.

Usage::

    python benchmarks/bench_floor.py                        # widths 128 512 1024 2048
    python benchmarks/bench_floor.py --widths 1024 --chains 1 4
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from bench_p1 import ANCHOR_ESS_PER_S, load_problem, make_net

from wide_bnn import targets

#: The issue's target at width 1024: 100 x NumPyro NUTS (14.2 ESS/s, BENCHMARKS.md).
TARGET_ESS_PER_S = 100 * ANCHOR_ESS_PER_S[1024]


def median_ms(fn, args, calls, repeats):
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - start) / calls * 1e3)
    return statistics.median(times)


def measure(width: int, chains: int, calls: int, repeats: int) -> dict[str, float]:
    """Milliseconds per call for all ``chains`` together, by part."""
    _, data, x_test = load_problem("teacher", None)
    target = targets.build_target(make_net(width, 1), data, x_test=x_test)
    keys = jax.random.split(jax.random.key(0), chains)
    positions = jax.vmap(target.init_position)(keys)
    rp = target.repriorisation

    def kernel(position):
        psi = rp.features(target.unravel(position))
        n, p = psi.shape
        return psi @ psi.T if n <= p else psi.T @ psi

    kernel = jax.jit(jax.vmap(kernel))
    loglik = jax.jit(jax.vmap(target.loglik_cache_fn))
    _, caches = loglik(positions)
    consts = target.record_consts
    record = jax.jit(jax.vmap(lambda k, p, c: target.record(k, p, consts, c)))
    proposal = jax.jit(jax.vmap(lambda k: jax.random.normal(k, (target.dim,), jnp.float64)))
    return {
        "kernel": median_ms(kernel, (positions,), calls, repeats),
        "loglik": median_ms(loglik, (positions,), calls, repeats),
        "record": median_ms(record, (keys, positions, caches), calls, repeats),
        "proposal": median_ms(proposal, (keys,), calls, repeats),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 512, 1024, 2048])
    parser.add_argument("--chains", type=int, nargs="+", default=[4])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    print(f"# python benchmarks/bench_floor.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"# {os.cpu_count()} cores, load {os.getloadavg()}, jax {jax.__version__}")
    print(
        "| width | chains | kernel ms | loglik ms | record ms | proposal ms "
        "| chains / kernel per s | target ESS/s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for width in args.widths:
        for chains in args.chains:
            ms = measure(width, chains, args.calls, args.repeats)
            draws = chains * 1e3 / ms["kernel"]
            target = f"{TARGET_ESS_PER_S:.0f}" if width == 1024 else "-"
            print(
                f"| {width} | {chains} | {ms['kernel']:.2f} | {ms['loglik']:.2f} | "
                f"{ms['record']:.2f} | "
                f"{ms['proposal']:.2f} | {draws:.0f} | {target} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

"""Sampling time per step with the chains in one call or in groups on host threads.

``wb.sample(threads=t)`` splits the chains into ``t`` groups and runs the groups at the
same time on ``t`` host threads (one device). This script measures, in one process, the
sampling wall time per saved draw of the same run with ``threads=1`` and with more
threads, alternating the settings ``--repeats`` times so that both see the same machine
state; it prints medians, their ratio and the mean log-density evaluations per draw and
chain (groupings round differently, so NUTS may build other trees).

Usage::

    python benchmarks/bench_threads.py [--samplers hmc pcn block_pcn] [--widths 32 1024]
        [--threads 1 2] [--chains 4] [--samples 300] [--repeats 3]

Problem P1 (``datasets.teacher()``), one-hidden-layer GELU MLP, float64, the library's
default sampler options; compilation and warm-up are excluded (``result.timings``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import statistics

import jax
import numpy as np

import wide_bnn as wb
from wide_bnn import datasets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samplers", nargs="+", default=["hmc", "pcn", "block_pcn"])
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 1024])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    ds = datasets.teacher()
    data, x_test = ds.train_data(), ds.test_inputs()
    print(f"P1, {args.chains} chains, {args.samples} draws, cores {os.cpu_count()}")
    header = " ".join(f"{f'threads {t}':>28}" for t in args.threads)
    print(f"{'sampler':<10} {'width':>6} {header}")
    for sampler in args.samplers:
        for width in args.widths:
            net = wb.mlp((width,), activation="gelu")
            times: dict[int, list[float]] = {t: [] for t in args.threads}
            evals: dict[int, list[float]] = {t: [] for t in args.threads}
            for _ in range(args.repeats):
                for threads in args.threads:
                    result = wb.sample(
                        net,
                        data,
                        x_test=x_test,
                        sampler=sampler,
                        num_chains=args.chains,
                        num_warmup=args.warmup,
                        num_samples=args.samples,
                        threads=threads,
                        progress=False,
                    )
                    times[threads].append(result.timings["sampling"] / args.samples)
                    # Different groupings round differently, and NUTS's trees then differ:
                    # the mean evaluations per draw tell a cheaper draw from a shorter tree.
                    evals[threads].append(float(np.mean(result.stats["num_grad_evals"])))
            medians = {t: statistics.median(v) for t, v in times.items()}
            first = medians[args.threads[0]]
            cells = " ".join(
                f"{medians[t] * 1e3:7.2f} ms x{first / medians[t]:.2f} "
                f"({statistics.median(evals[t]):.0f} evals)"
                for t in args.threads
            )
            print(f"{sampler:<10} {width:>6} {cells}", flush=True)


if __name__ == "__main__":
    main()

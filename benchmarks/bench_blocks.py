"""``block_pcn`` with different numbers of blocks, side by side in one run.

A ``block_pcn`` sweep pays one ``n x n`` Cholesky per block, so fewer blocks cost less
per sweep; but each block's test then carries more units and is accepted less often, and
the tuning lowers the pCN scale to keep the mean block acceptance at its target. This
script measures the trade on problem P1 (``datasets.teacher()``, one-hidden-layer GELU
MLP, float64, repriorised and collapsed, 4 chains on the default threads): for every
width, seed and number of blocks it runs ``wb.sample(sampler="block_pcn",
block_size=ceil(width / blocks))``, in the same process, alternating the settings, and
prints the sampling time per sweep, the mean block acceptance, the tuned scale and the
bulk ESS (minimum over the test points) of ``f_test`` and ``f_test_mean`` per draw and
per second; then, per width, the medians over seeds and their ratios to the first number
of blocks.

Usage::

    python benchmarks/bench_blocks.py [--widths 128 512 1024 2048] [--blocks 16 8]
        [--seeds 1 2 3] [--warmup 300] [--samples 1500]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import math
import statistics

import jax
import numpy as np
from _common import ess_summary, machine_info

import wide_bnn as wb
from wide_bnn import datasets

METRICS = (
    "ms/sweep",
    "acceptance",
    "scale",
    "f_test/draw",
    "f_test_mean/draw",
    "f_test/s",
    "f_test_mean/s",
)


def run(net, width, data, x_test, blocks, seed, args) -> dict[str, float]:
    result = wb.sample(
        net,
        data,
        x_test=x_test,
        sampler="block_pcn",
        block_size=math.ceil(width / blocks),
        num_chains=args.chains,
        num_warmup=args.warmup,
        num_samples=args.samples,
        seed=seed,
        progress=False,
    )
    seconds = result.timings["sampling"]
    draws = args.chains * args.samples
    # Minimum bulk ESS over the test points (x outputs) of each quantity.
    views = {
        name: np.asarray(result.draws[name]).reshape(args.chains, args.samples, -1)
        for name in ("f_test", "f_test_mean")
    }
    ess = ess_summary(views)[0]
    return {
        "ms/sweep": 1e3 * seconds / args.samples,
        "acceptance": float(np.mean(result.stats["acceptance_rate"])),
        "scale": float(np.mean(result.stats["step_size"])),
        "f_test/draw": ess["f_test/min"] / draws,
        "f_test_mean/draw": ess["f_test_mean/min"] / draws,
        "f_test/s": ess["f_test/min"] / seconds,
        "f_test_mean/s": ess["f_test_mean/min"] / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 512, 1024, 2048])
    parser.add_argument("--blocks", type=int, nargs="+", default=[16, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--samples", type=int, default=1500)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    info = machine_info()
    print(
        f"# {info['cpu']}, {info['cores']} cores, load {info['load_average_at_start']}, "
        f"jax {info['jax']}, commit {info['git_commit']}"
    )
    ds = datasets.teacher()
    data, x_test = ds.train_data(), ds.test_inputs()
    header = "| width | blocks | seed | " + " | ".join(METRICS) + " |"
    print(header)
    print("|" + " --- |" * (3 + len(METRICS)))
    medians = {}
    for width in args.widths:
        net = wb.mlp((width,), activation="gelu")
        rows: dict[int, list[dict[str, float]]] = {b: [] for b in args.blocks}
        for seed in args.seeds:
            for blocks in args.blocks:
                row = run(net, width, data, x_test, blocks, seed, args)
                rows[blocks].append(row)
                cells = " | ".join(f"{row[m]:.3g}" for m in METRICS)
                print(f"| {width} | {blocks} | {seed} | {cells} |", flush=True)
        medians[width] = {
            b: {m: statistics.median(r[m] for r in rs) for m in METRICS} for b, rs in rows.items()
        }
    first = args.blocks[0]
    print(f"\nMedians over seeds {args.seeds}; ratios of ESS per second to {first} blocks.\n")
    print(
        "| width | blocks | ms/sweep | acceptance | scale | ESS/s f_test (ratio) "
        "| ESS/s f_test_mean (ratio) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for width, by_blocks in medians.items():
        base = by_blocks[first]
        for blocks, m in by_blocks.items():
            ratios = [m[k] / base[k] for k in ("f_test/s", "f_test_mean/s")]
            print(
                f"| {width} | {blocks} | {m['ms/sweep']:.2f} | {m['acceptance']:.3f} "
                f"| {m['scale']:.3f} | {m['f_test/s']:.0f} ({ratios[0]:.2f}x) "
                f"| {m['f_test_mean/s']:.0f} ({ratios[1]:.2f}x) |"
            )


if __name__ == "__main__":
    main()

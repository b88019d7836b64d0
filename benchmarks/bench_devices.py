"""Time per sampling step against the number of (virtual) devices the chains are split over.

Each configuration runs in a fresh process, because the number of virtual CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=D``) is fixed when JAX starts. On a
CPU the virtual devices share the same cores, so expect no speed-up there: the script
measures the overhead of sharding and is meant for real multi-accelerator machines.

Usage::

    python benchmarks/bench_devices.py [--devices 1 2 4] [--width 256] [--chains 8]
        [--repeats 3] [--shard-data] [--n-train 64]

Prints one line per device count: median sampling time per step (seconds) over the
repeats (one process each) and the ratio to one device. ``--shard-data`` splits the
training points over all the devices (``data_shards = devices``) instead of the chains.
Every run gets ``PJRT_NPROC = 4 x max(--devices)`` XLA pool threads (the default, one per
core, deadlocks with jaxlib 0.10: docs/guides/multi-device.md); a run that does not finish
within ``--timeout`` seconds is reported as hung.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import math
import statistics
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import wide_bnn as wb

    devices, width, chains, samples, sampler, shard_data, n_train = json.loads(sys.argv[1])
    dataset = wb.datasets.load("teacher", n_train=n_train, n_test=16)
    data = dataset.train_data()
    net = wb.mlp((width,), activation="gelu")
    result = wb.sample(
        net, data, sampler=sampler, num_chains=chains, num_warmup=50, num_samples=samples,
        seed=0, progress=False, devices=None if devices == 1 else devices,
        data_shards=devices if shard_data else 1,
    )
    print(json.dumps({"sampling": result.timings["sampling"], "steps": samples}))
    """
)


def run_once(devices: int, args: argparse.Namespace) -> float:
    """Sampling seconds per step of one run in a fresh process (``nan`` if it hung)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    # One thread pool for every virtual device, the same size for every device count: the
    # default (the cores) deadlocks with jaxlib 0.10 (docs/guides/multi-device.md).
    env["PJRT_NPROC"] = str(4 * max(args.devices))
    config = [devices, args.width, args.chains, args.samples, args.sampler]
    config += [args.shard_data, args.n_train]
    try:
        completed = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(config)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=args.timeout,
        )
    except subprocess.TimeoutExpired:
        return float("nan")
    out = json.loads(completed.stdout.strip().splitlines()[-1])
    return out["sampling"] / out["steps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--sampler", default="pcn")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shard-data", action="store_true")
    parser.add_argument("--n-train", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    what = "data" if args.shard_data else "chains"
    print(
        f"{args.sampler}, width {args.width}, n {args.n_train}, {args.chains} chains, "
        f"{what} split over the devices",
        flush=True,
    )
    baseline = None
    for devices in args.devices:
        times = [run_once(devices, args) for _ in range(args.repeats)]
        if any(math.isnan(t) for t in times):
            print(f"devices {devices}: hung (no result within {args.timeout:.0f} s)", flush=True)
            continue
        median = statistics.median(times)
        baseline = baseline or median
        print(
            f"devices {devices}: {median * 1e3:.3f} ms/step (median of {args.repeats}), "
            f"x{median / baseline:.2f} vs {args.devices[0]} device(s)",
            flush=True,
        )


if __name__ == "__main__":
    main()

# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Several devices: chains and training points split with `jax.sharding`
#
# `wb.sample(devices=...)` spreads the chains over devices; `data_shards=` also splits the
# training points, so that each device computes the features of its own block of points
# and XLA sums the Gram matrix over devices. This notebook runs on a CPU by creating four
# virtual devices; on a machine with several GPUs drop the first cell's `XLA_FLAGS` line.
#
# `WIDE_BNN_EXAMPLE_SCALE` (default 1.0) shrinks the width and the number of draws.

# %%
# A notebook: the environment is set before numpy/jax are imported.
# ruff: noqa: E402
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Four virtual CPU devices (ignored by GPUs/TPUs); must be set before JAX starts.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
# Virtual CPU devices share one thread pool; with jaxlib 0.10 the default size (the
# cores) can deadlock (docs/guides/multi-device.md). Four threads per device avoid it.
os.environ.setdefault("PJRT_NPROC", "16")

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np

import wide_bnn as wb

SCALE = float(os.environ.get("WIDE_BNN_EXAMPLE_SCALE", "1.0"))
print(jax.devices())
assert len(jax.devices()) >= 4, "this example needs four devices (see the first cell)"

# %% [markdown]
# A regression problem with more points than readout features, where splitting the points
# pays off (the "primal" route: the Gram matrix is a sum over points).

# %%
rng = np.random.default_rng(0)
n, width = 1024, max(16, int(256 * SCALE))
x = rng.normal(size=(n, 4))
y = np.sin(x[:, 0]) * np.cos(x[:, 1]) + 0.1 * rng.normal(size=n)
data = wb.RegressionData(x, y, noise_std=0.1)
net = wb.mlp((width,), activation="gelu")
x_test = x[:8]
settings = dict(
    sampler="pcn",
    num_chains=4,
    num_warmup=max(20, int(300 * SCALE)),
    num_samples=max(20, int(500 * SCALE)),
    x_test=x_test,
    seed=1,
    progress=False,
)

# %% [markdown]
# The same run three ways: one device; chains over the four devices; and a 2 x 2 mesh of
# 2 chain groups x 2 data shards (each device: 2 chains, 512 points).

# %%
runs = {
    "one device": wb.sample(net, data, **settings),
    "chains over 4 devices": wb.sample(net, data, devices=4, **settings),
    "2 chain groups x 2 data shards": wb.sample(net, data, devices=4, data_shards=2, **settings),
}
for name, result in runs.items():
    print(f"{name:32s} sampling {result.timings['sampling']:.2f} s")

# %% [markdown]
# The per-chain random keys do not depend on the devices, so every run follows the same
# chains. The numbers agree to rounding, not bit for bit: XLA compiles the program for
# each device's share of the chains (and, with `data_shards`, sums over points in another
# order), which can round differently. pCN's accept decisions almost never flip on such
# differences, so the draws stay together. Each readout draw solves with the Gram matrix of
# the 1024 points, whose conditioning magnifies those rounding differences: at full size the
# outputs agree to about 3e-7 (a flipped decision or a wrong chain would differ by ~0.1).

# %%
reference = runs["one device"].draws["f_test"]
differences = {}
for name, result in runs.items():
    differences[name] = np.max(np.abs(result.draws["f_test"] - reference))
    print(f"{name:32s} largest difference from one device: {differences[name]:.1e}")
assert max(differences.values()) < 1e-5

# %% [markdown]
# On a CPU the virtual devices share the same cores, so this is not faster here; on
# several accelerators each device does a fraction of the work, and with `data_shards`
# the `(n, width)` features are split too. `benchmarks/bench_devices.py` measures the time
# per step against the number of devices.

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
# # Convolutional networks and your own feature maps
#
# Repriorisation only transforms the *readout* of a network, so it works for any hidden
# feature map: an MLP, a ResNet, or a function you write. This notebook
#
# 1. builds a small wide ResNet for 8x8 digit images with `wb.resnet`,
# 2. writes a one-layer CNN by hand with `wb.network` and checks that it is exactly
#    `wb.resnet(num_blocks=0)`,
# 3. checks the change of variables of `wb.Repriorisation` on it (round trip and density),
# 4. samples its posterior and compares it with a Monte Carlo estimate of its NNGP.
#
# `WIDE_BNN_EXAMPLE_SCALE` (default 1.0) shrinks channels, data and draws.

# %%
# A notebook: the environment is set before numpy/jax are imported.
# ruff: noqa: E402
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax

jax.config.update("jax_enable_x64", True)

import math

import jax.numpy as jnp
import numpy as np

import wide_bnn as wb
from wide_bnn import datasets

SCALE = float(os.environ.get("WIDE_BNN_EXAMPLE_SCALE", "1.0"))


def scaled(value: int, minimum: int) -> int:
    """``value`` shrunk by SCALE, never below ``minimum``."""
    return max(minimum, round(value * SCALE))


CHANNELS = scaled(128, 8)
N_TRAIN, N_TEST = scaled(128, 32), scaled(64, 16)
NUM_CHAINS = 4 if SCALE >= 0.5 else 2
NUM_WARMUP, NUM_SAMPLES = scaled(200, 20), scaled(400, 40)
print(f"channels {CHANNELS}, n_train {N_TRAIN}, {NUM_CHAINS} chains x {NUM_SAMPLES} draws")

# %% [markdown]
# ## Images
#
# `flatten=False` keeps the digits as `(n, 8, 8, 1)` images. Targets are one-hot minus 0.1
# (ten outputs), modelled as regression with noise 0.1.

# %%
ds = datasets.load("digits", n_train=N_TRAIN, n_test=N_TEST, flatten=False)
data = ds.train_data()
x_test = ds.test_inputs()
print(data)
assert data.x.shape == (N_TRAIN, 8, 8, 1) and data.y.shape == (N_TRAIN, 10)

# %% [markdown]
# ## A wide ResNet
#
# `wb.resnet` is a normaliser-free ResNet: a convolutional stem, residual blocks weighted so
# that the forward variance stays constant, then global average pooling. `channels` is the
# width. Every parameter has a standard normal prior; the scales are inside the convolutions.

# %%
resnet = wb.resnet(channels=CHANNELS, num_blocks=1, out_dim=10, activation="relu")
params = resnet.init(jax.random.key(0), data.x)
print(jax.tree_util.tree_map(np.shape, params))
f = resnet.apply(params, data.x)
assert f.shape == (N_TRAIN, 10)
# Prior draws of the outputs have roughly unit scale (NTK parameterisation).
print("prior output sd:", float(jnp.std(f)))
assert 0.05 < float(jnp.std(f)) < 20

# %% [markdown]
# ## The same idea, written by hand
#
# `wb.network(init_hidden, features)` turns any feature map into a network the whole library
# understands. Two rules: every leaf of the hidden parameters is a priori N(0, 1) (scales go
# inside `features`), and `features(hidden, x)` is a pure, jittable `(n, d)` map.
#
# Here: one 3x3 convolution in NTK parameterisation, ReLU, global average pooling.

# %%
W_STD, B_STD, FILTER = 2**0.5, 0.1, 3


def init_conv(key, x):
    key_w, key_b = jax.random.split(key)
    shape = (FILTER, FILTER, x.shape[-1], CHANNELS)  # HWIO
    return {
        "w": jax.random.normal(key_w, shape, x.dtype),
        "b": jax.random.normal(key_b, (CHANNELS,), x.dtype),
    }


def conv_features(hidden, x):
    fan_in = x.shape[-1] * FILTER**2
    z = jax.lax.conv_general_dilated(
        x, hidden["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    z = z * (W_STD / math.sqrt(fan_in)) + B_STD * hidden["b"].reshape(1, 1, 1, -1)
    return jnp.mean(jax.nn.relu(z), axis=(1, 2))  # (n, CHANNELS)


cnn = wb.network(init_conv, conv_features, out_dim=10, name="one-layer CNN")
cnn_params = cnn.init(jax.random.key(1), data.x)
print(cnn.name, jax.tree_util.tree_map(np.shape, cnn_params))

# The hand-written map is wb.resnet without residual blocks: same parameters, same outputs.
reference = wb.resnet(channels=CHANNELS, num_blocks=0, out_dim=10, activation="relu")
as_resnet = {
    "hidden": {"stem": cnn_params["hidden"], "blocks": []},
    "readout": cnn_params["readout"],
}
np.testing.assert_allclose(
    cnn.apply(cnn_params, data.x), reference.apply(as_resnet, data.x), rtol=1e-10, atol=1e-12
)

# %% [markdown]
# ## Repriorisation of the custom network
#
# `wb.Repriorisation(net, data)` maps whitened readout coordinates `Z` to the readout
# `B = M(h) + S(h) Z`. Two checks that the change of variables is right, on this very network:
# the map inverts, and the repriorised density equals the standard log posterior plus the
# log-determinant of the map.

# %%
rp = wb.Repriorisation(cnn, data)
print(rp)
phi = rp.inverse(cnn_params)
back = rp.forward(phi)
for a, b in zip(
    jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(cnn_params), strict=True
):
    np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-8)

lhs = rp.log_density(phi)
rhs = wb.log_posterior(cnn, data, cnn_params) + rp.log_det_jacobian(phi)
print(f"log density {float(lhs):.6f} = log posterior + log det {float(rhs):.6f}")
np.testing.assert_allclose(lhs, rhs, rtol=1e-9)

# %% [markdown]
# ## Sampling
#
# Elliptical slice sampling needs no tuning and uses the standard normal prior of every
# coordinate. By default the readout is integrated out and drawn exactly for each saved draw.

# %%
result = wb.sample(
    cnn,
    data,
    x_test=x_test,
    sampler="elliptical",
    num_chains=NUM_CHAINS,
    num_warmup=NUM_WARMUP,
    num_samples=NUM_SAMPLES,
    seed=0,
    progress=False,
)
diagnosis = wb.diagnose(result, emit=False)
print(diagnosis)
assert result.draws["f_test"].shape == (NUM_CHAINS, NUM_SAMPLES, N_TEST, 10)
assert np.isfinite(diagnosis.summary.loc["f_test", "rhat_max"])

# %% [markdown]
# ## Comparison with a Monte Carlo NNGP
#
# Networks without a closed-form kernel recursion get a Monte Carlo estimate of their
# infinite-width kernel: `wb.nngp_kernel_mc` averages the empirical kernel `Psi Psi^T` over
# prior draws of the hidden parameters. (For a network with one hidden layer, like this one,
# that average *is* the NNGP kernel.) The GP posterior then takes three lines.

# %%
x_all = jnp.concatenate([data.x, x_test])
kernel, standard_error = wb.nngp_kernel_mc(
    cnn, x_all, num_samples=scaled(2000, 200), key=jax.random.key(2)
)
print(
    "relative Monte Carlo error of the kernel diagonal:",
    float(jnp.max(jnp.diag(standard_error) / jnp.diag(kernel))),
)
n = data.num_points
k_train = kernel[:n, :n] + data.noise_std**2 * jnp.eye(n)
k_cross = kernel[n:, :n]
nngp_mean = k_cross @ jnp.linalg.solve(k_train, data.y)
nngp_var = jnp.diag(kernel[n:, n:]) - jnp.sum(k_cross * jnp.linalg.solve(k_train, k_cross.T).T, 1)
assert np.all(np.asarray(nngp_var) > 0)

comparison = wb.compare_with_nngp(result, nngp=(np.asarray(nngp_mean), np.asarray(nngp_var)))
print(
    f"mean KL to the NNGP marginals {comparison.distance:.3g} "
    f"(noise floor {comparison.noise_floor:.2g}); "
    f"median variance ratio {comparison.var_ratio_median:.3f}"
)
sampled_mean = result.draws["f_test"].mean(axis=(0, 1))
correlation = np.corrcoef(sampled_mean.ravel(), np.asarray(nngp_mean).ravel())[0, 1]
print(f"correlation of the predictive means: {correlation:.3f}")
assert correlation > 0.7

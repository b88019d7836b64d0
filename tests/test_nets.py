"""Networks: NTK parameterisation, shapes, jit/vmap, custom feature maps and argument checks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import wide_bnn as wb


def _x(n=6, d=4, seed=1):
    return jax.random.normal(jax.random.key(seed), (n, d))


def test_params_tree_follows_the_contract(key):
    net = wb.mlp(hidden=(8, 16), out_dim=3)
    params = net.init(key, _x())
    shapes = jax.tree_util.tree_map(jnp.shape, params)
    assert shapes == {
        "hidden": [{"w": (4, 8), "b": (8,)}, {"w": (8, 16), "b": (16,)}],
        "readout": {"w": (16, 3), "b": (3,)},
    }
    assert net.apply(params, _x()).shape == (6, 3)
    assert net.features(params, _x()).shape == (6, 16)


def test_zero_bias_scales_remove_the_bias_parameters(key):
    net = wb.mlp(hidden=(8,), b_std=0.0, out_b_std=0.0)
    params = net.init(key, _x())
    assert set(params["hidden"][0]) == {"w"} and set(params["readout"]) == {"w"}
    assert net.readout_features(params["hidden"], _x()).shape == (6, 8)


def test_apply_matches_a_hand_written_forward_pass(key):
    net = wb.mlp(
        hidden=(5, 7),
        out_dim=2,
        activation="tanh",
        w_std=1.3,
        b_std=0.2,
        out_w_std=0.9,
        out_b_std=0.4,
    )
    x = _x()
    p = net.init(key, x)
    h = np.asarray(x)
    for layer in p["hidden"]:
        w, b = np.asarray(layer["w"]), np.asarray(layer["b"])
        h = np.tanh(1.3 / math.sqrt(w.shape[0]) * h @ w + 0.2 * b)
    w, b = np.asarray(p["readout"]["w"]), np.asarray(p["readout"]["b"])
    expected = 0.9 / math.sqrt(7) * h @ w + 0.4 * b[None, :]
    np.testing.assert_allclose(net.apply(p, x), expected, rtol=1e-12, atol=1e-12)


def test_linear_model_has_no_hidden_layer(key):
    net = wb.mlp(hidden=(), out_dim=1)
    p = net.init(key, _x())
    assert p["hidden"] == []
    x = _x()
    expected = 1.0 / 2.0 * x @ p["readout"]["w"] + 0.1 * p["readout"]["b"][None, :]
    np.testing.assert_allclose(net.apply(p, x), expected, rtol=1e-12)


def test_readout_matrix_round_trip(key):
    net = wb.mlp(hidden=(8,), out_dim=2)
    p = net.init(key, _x())
    matrix = net.readout_matrix(p["readout"])
    assert matrix.shape == (9, 2)
    back = net.readout_from_matrix(matrix)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(jnp.array_equal, back, p["readout"]))
    psi = net.readout_features(p["hidden"], _x())
    np.testing.assert_allclose(psi @ matrix, net.apply(p, _x()), rtol=1e-12)


@pytest.mark.parametrize("name", wb.ACTIVATIONS)
def test_every_activation_runs_jitted_and_batched(name, key):
    net = wb.mlp(hidden=(8,), activation=name)
    x = _x()
    params = jax.vmap(lambda k: net.init(k, x))(jax.random.split(key, 3))
    batched = jax.jit(jax.vmap(net.apply, in_axes=(0, None)))(params, x)
    one = net.apply(jax.tree_util.tree_map(lambda a: a[1], params), x)
    np.testing.assert_allclose(batched[1], one, rtol=1e-12)
    # leading batch axes on the inputs broadcast through every layer
    assert net.apply(jax.tree_util.tree_map(lambda a: a[0], params), x.reshape(2, 3, 4)).shape == (
        2,
        3,
        1,
    )


def test_activation_functions_are_the_documented_ones():
    z = jnp.linspace(-3.0, 3.0, 13)
    gelu = wb.get_activation("gelu")(z)
    np.testing.assert_allclose(gelu, z * stats.norm.cdf(z), rtol=1e-12, atol=1e-15)
    leaky = wb.get_activation("leaky_relu", negative_slope=0.2)(z)
    np.testing.assert_allclose(leaky, np.where(z > 0, z, 0.2 * z))
    np.testing.assert_allclose(wb.get_activation("abs")(z), np.abs(z))


def test_unknown_activation_lists_the_valid_names():
    with pytest.raises(ValueError, match="valid names are relu, leaky_relu"):
        wb.mlp(hidden=(4,), activation="swishy")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hidden": (0,)}, r"hidden\[0\] must be a positive int"),
        ({"hidden": (4.5,)}, r"hidden\[0\] must be a positive int"),
        ({"out_dim": 0}, "out_dim must be a positive int"),
        ({"w_std": 0.0}, "w_std must be a finite float > 0"),
        ({"b_std": -0.1}, "b_std must be a finite float >= 0"),
        ({"out_w_std": float("nan")}, "out_w_std must be a finite float"),
        ({"activation": 3}, "activation must be a name"),
    ],
)
def test_bad_network_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        wb.mlp(**({"hidden": (4,)} | kwargs))


def _relu_output_variance(x, w_std, b_std, out_w_std, out_b_std, depth):
    # Exact at every width for relu: E[relu(z)^2] = E[z^2] / 2 layer by layer.
    q = w_std**2 * float(x @ x) / x.shape[0] + b_std**2
    for _ in range(depth - 1):
        q = w_std**2 * q / 2 + b_std**2
    return out_w_std**2 * q / 2 + out_b_std**2


@pytest.mark.parametrize("depth", [1, 2])
def test_output_variance_at_init_matches_the_parameterisation(depth):
    scales = {"w_std": 1.7, "b_std": 0.3, "out_w_std": 0.8, "out_b_std": 0.5}
    net = wb.mlp(hidden=(64,) * depth, activation="relu", **scales)
    x = _x(n=1, d=10)
    num_nets = 4000
    keys = jax.random.split(jax.random.key(42), num_nets)
    outputs = np.asarray(jax.vmap(lambda k: net.apply(net.init(k, x), x))(keys)).ravel()
    expected = _relu_output_variance(np.asarray(x[0]), depth=depth, **scales)
    # E[f] = 0 by symmetry of the output layer, so mean(f^2) estimates the variance;
    # its standard error comes from the sample variance of f^2 (independent nets).
    second = outputs**2
    z = (second.mean() - expected) / (second.std(ddof=1) / math.sqrt(num_nets))
    assert abs(z) < 3.5, z


def test_wide_network_outputs_are_close_to_gaussian_and_narrow_ones_are_not():
    x = _x(n=1, d=16)
    num_nets = 3000

    def excess_kurtosis(width):
        net = wb.mlp(hidden=(width,), activation="relu")
        keys = jax.random.split(jax.random.key(7), num_nets)
        f = np.asarray(jax.vmap(lambda k: net.apply(net.init(k, x), x))(keys)).ravel()
        return stats.kurtosis(f)

    standard_error = math.sqrt(24 / num_nets)
    assert abs(excess_kurtosis(2048)) < 4 * standard_error
    # power check: the same statistic detects the non-Gaussian width-1 network
    assert excess_kurtosis(1) > 10 * standard_error


def test_custom_feature_map_gets_the_library_readout(key):
    def init_hidden(k, x):
        return {"w": jax.random.normal(k, (x.shape[-1], 32), x.dtype)}

    def features(hidden, x):
        return jnp.sin(x @ hidden["w"] / math.sqrt(x.shape[-1]))

    net = wb.network(init_hidden, features, out_dim=2, out_w_std=1.5)
    p = net.init(key, _x())
    expected = 1.5 / math.sqrt(32) * features(p["hidden"], _x()) @ p["readout"]["w"]
    expected = expected + 0.1 * p["readout"]["b"][None, :]
    np.testing.assert_allclose(net.apply(p, _x()), expected, rtol=1e-12)


def test_resnet_shapes_and_residual_weights_preserve_variance():
    net = wb.resnet(channels=48, num_blocks=3, activation="relu", b_std=0.0, out_b_std=0.0)
    x = jax.random.normal(jax.random.key(3), (2, 6, 6, 3))
    keys = jax.random.split(jax.random.key(4), 300)
    params = jax.vmap(lambda k: net.init(k, x))(keys)
    assert jax.tree_util.tree_map(jnp.shape, params)["hidden"]["stem"]["w"] == (300, 3, 3, 3, 48)
    feats = jax.vmap(net.features, in_axes=(0, None))(params, x)
    assert feats.shape == (300, 2, 48)
    # Residual weights sum to one in variance, so the pre-activation second moment
    # stays that of the stem at every depth; compare against a depth-0 network.
    shallow = wb.resnet(channels=48, num_blocks=0, activation="relu", b_std=0.0, out_b_std=0.0)
    shallow_feats = jax.vmap(shallow.features, in_axes=(0, None))(
        jax.vmap(lambda k: shallow.init(k, x))(keys), x
    )
    ratio = float(jnp.mean(feats**2) / jnp.mean(shallow_feats**2))
    assert 0.85 < ratio < 1.15, ratio


def test_resnet_rejects_non_image_inputs(key):
    with pytest.raises(ValueError, match="height, width, channels"):
        wb.resnet(channels=4).init(key, _x())

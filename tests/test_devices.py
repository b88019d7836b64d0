"""Chains sharded over several devices give the same numbers as one device.

The devices are four virtual CPU devices (``--xla_force_host_platform_device_count=4``),
which must be configured before JAX starts: each check runs a script in a fresh
process (float64 enabled inside it) and the assertions run here on what it saved.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import wide_bnn

REPO = Path(wide_bnn.__file__).resolve().parents[1]
NUM_DEVICES = 4

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_rank_promotion", "raise")
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    import wide_bnn as wb
    from wide_bnn import linalg, sampling
    from wide_bnn.targets import build_target

    # Loop over the chains in every vmapped LAPACK call, however small (on one device
    # only large calls loop), so that the no-all-gather check below has something to catch.
    linalg._INLINE_FLOPS = 0

    out, sampler = sys.argv[1], sys.argv[2]
    assert len(jax.devices()) == {num_devices}, jax.devices()
    x = np.linspace(-2.0, 2.0, 6)[:, None]
    y = np.sin(1.5 * x[:, 0]) + 0.3 * np.random.default_rng(7).normal(size=6)
    net, data = wb.mlp((3,), activation="tanh", b_std=0.5), wb.RegressionData(x, y, 0.3)
    x_test = np.array([[-2.5], [0.3], [2.5]])
    options = dict(max_tree_depth=4) if sampler == "nuts" else {{}}
    kwargs = dict(sampler=sampler, num_chains=8, num_warmup=20, num_samples=12, seed=3,
                  chunk_size=5, progress=False, x_test=x_test, **options)

    # Record where the engine's chain states live on every chunk call.
    placements, gathers = [], []
    real_run_chunk = sampling._run_chunk
    def spy(compiled, states, *args):
        leaves = jax.tree_util.tree_leaves(states)
        placements.append(sorted({{len(leaf.sharding.device_set) for leaf in leaves}}))
        gathers.append(compiled.as_text().count("all-gather("))
        return real_run_chunk(compiled, states, *args)
    sampling._run_chunk = spy

    saved = {{}}
    for name, devices in [("single", None), ("sharded", "all"), ("pair", 2)]:
        placements.clear()
        gathers.clear()
        result = wb.sample(net, data, devices=devices, **kwargs)
        saved[f"{{name}}/all_gathers"] = np.asarray(max(gathers))
        saved.update({{f"{{name}}/draws/{{k}}": v for k, v in result.draws.items()}})
        saved.update({{f"{{name}}/stats/{{k}}": v for k, v in result.stats.items()}})
        saved[f"{{name}}/placements"] = np.asarray(sorted({{d for p in placements for d in p}}))

    # Log densities and gradients of a batch of positions, on one device and sharded.
    target = build_target(net, data)
    positions = jax.random.normal(jax.random.key(1), (8, target.dim), np.float64)
    value_and_grad = jax.jit(jax.vmap(jax.value_and_grad(target.logdensity_fn)))
    mesh = Mesh(np.asarray(jax.devices()), ("chain",))
    sharded = jax.device_put(positions, NamedSharding(mesh, PartitionSpec("chain")))
    for name, batch in [("single", positions), ("sharded", sharded)]:
        value, grad = value_and_grad(batch)
        saved[f"{{name}}/logdensity"], saved[f"{{name}}/grad"] = np.asarray(value), np.asarray(grad)
        saved[f"{{name}}/logdensity_devices"] = np.asarray(len(value.sharding.device_set))
    np.savez(out, **saved)
    """
).format(num_devices=NUM_DEVICES)


def run_on_virtual_devices(script, out, *args):
    """Run ``script out *args`` with four virtual CPU devices; what it saved in ``out``."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={NUM_DEVICES}"
    # Virtual devices share one thread pool sized by the cores; jaxlib 0.10's batched
    # LAPACK kernels and the collectives block pool threads, which deadlocks a pool of two
    # (see docs/guides/multi-device.md). A larger pool avoids it.
    env["PJRT_NPROC"] = str(4 * NUM_DEVICES)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    completed = subprocess.run(
        [sys.executable, "-c", script, str(out), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    with np.load(out) as stored:
        return dict(stored)


def group(saved, prefix):
    return {k[len(prefix) :]: v for k, v in saved.items() if k.startswith(prefix)}


@pytest.mark.parametrize(
    ("sampler", "exact"),
    [("pcn", True), pytest.param("hmc", False, marks=pytest.mark.slow)],
)
def test_sharded_chains_give_the_same_draws_and_log_densities(tmp_path, sampler, exact):
    saved = run_on_virtual_devices(SCRIPT, tmp_path / f"{sampler}.npz", sampler)
    # The runs really were placed as asked: states on 1, 4 and 2 devices.
    np.testing.assert_array_equal(saved["single/placements"], [1])
    np.testing.assert_array_equal(saved["sharded/placements"], [NUM_DEVICES])
    np.testing.assert_array_equal(saved["pair/placements"], [2])
    # Each device runs its own chains: no chain is gathered from another device (a loop
    # over the chain axis, as wide_bnn.linalg uses on one device, would gather them all).
    for name in ("single", "sharded", "pair"):
        assert int(saved[f"{name}/all_gathers"]) == 0, name
    single = group(saved, "single/draws/") | group(saved, "single/stats/")
    for name in ("sharded", "pair"):
        other = group(saved, f"{name}/draws/") | group(saved, f"{name}/stats/")
        assert other.keys() == single.keys()
        if exact:
            # Same seed, same per-chain key schedule: bit-identical.
            for key, value in single.items():
                np.testing.assert_array_equal(other[key], value, err_msg=f"{name}: {key}")
        else:
            # Gradients are compiled for the per-device batch and may round differently
            # (see docs/guides/multi-device.md): a rounding-level difference can flip an
            # accept/reject decision, after which a chain's trajectory differs. With a
            # device-dependent key schedule no chain would match even at the first draw;
            # here most chains still agree closely there.
            first, reference = other["f_test"][:, 0], single["f_test"][:, 0]
            close = np.all(np.isclose(first, reference, rtol=1e-4, atol=1e-6), axis=(1, 2))
            assert close.mean() >= 0.5, close
    assert single["f_test"].shape == (8, 12, 3, 1)
    # Log densities and gradients of sharded positions agree to 1e-10 (float64).
    assert int(saved["sharded/logdensity_devices"]) == NUM_DEVICES
    np.testing.assert_allclose(
        saved["sharded/logdensity"], saved["single/logdensity"], rtol=1e-10, atol=1e-10
    )
    np.testing.assert_allclose(saved["sharded/grad"], saved["single/grad"], rtol=1e-10, atol=1e-10)
    assert np.all(np.isfinite(saved["single/grad"]))


def test_cli_devices_flag_reaches_sample(monkeypatch, tmp_path):
    import wide_bnn.cli as cli
    import wide_bnn.sampling as sampling

    seen = {}

    def fake_sample(net, data, **kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt  # stop before any work; the CLI reports "interrupted"

    monkeypatch.setattr(sampling, "sample", fake_sample)
    argv = ["sample", "--out", str(tmp_path), "--hidden", "4", "--no-progress"]
    assert cli.main([*argv, "--devices", "all", "--chunk-size", "7"]) == 130
    assert seen["devices"] == "all" and seen["chunk_size"] == 7
    assert seen["data_shards"] == 1
    assert cli.main([*argv, "--devices", "2", "--data-shards", "2"]) == 130
    assert seen["devices"] == 2 and seen["data_shards"] == 2
    config = tmp_path / "run.toml"
    config.write_text(json.dumps({"devices": "all"}).replace('{"devices": ', "devices = ")[:-1])
    assert cli.main(["sample", "--config", str(config), "--out", str(tmp_path)]) == 130
    assert seen["devices"] == "all"


DATA_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    import wide_bnn as wb
    from wide_bnn import sampling
    from wide_bnn.targets import build_target

    out = sys.argv[1]
    rng = np.random.default_rng(5)
    n = 256
    x = rng.normal(size=(n, 2))
    y = np.sin(x[:, 0]) + 0.2 * rng.normal(size=n)
    data = wb.RegressionData(x, y, 0.3)
    saved = {}

    # Log densities and gradients with the data split over four devices, for the primal
    # route (p < n), the dual route (p > n) and the standard parameterisation.
    mesh = Mesh(np.asarray(jax.devices()).reshape(1, 4), ("chain", "data"))
    split = NamedSharding(mesh, PartitionSpec("data"))
    arrays = jax.device_put((data.x, data.y), split)
    cases = [("primal", 16, "repriorised", True), ("dual", 384, "repriorised", True),
             ("paper", 16, "repriorised", False), ("standard", 16, "standard", False)]
    for name, width, parameterisation, collapsed in cases:
        net = wb.mlp((width,), activation="tanh")

        def value_and_grad(position, xy):
            local = data if xy is None else sampling._with_arrays(data, xy)
            target = build_target(net, local, parameterisation=parameterisation,
                                  collapsed=collapsed)
            return jax.vmap(jax.value_and_grad(target.logdensity_fn))(position)

        dim = build_target(net, data, parameterisation=parameterisation,
                           collapsed=collapsed).dim
        positions = jax.random.normal(jax.random.key(2), (3, dim), np.float64)
        single = jax.jit(value_and_grad, static_argnums=1)(positions, None)
        compiled = jax.jit(value_and_grad).lower(positions, arrays).compile()
        sharded = compiled(positions, arrays)
        saved[f"{name}/single"] = np.asarray(single[0])
        saved[f"{name}/sharded"] = np.asarray(sharded[0])
        saved[f"{name}/single_grad"] = np.asarray(single[1])
        saved[f"{name}/sharded_grad"] = np.asarray(sharded[1])
        saved[f"{name}/all_reduces"] = np.asarray(compiled.as_text().count("all-reduce("))

    # Whole runs: one device against 2 chain groups x 2 data shards.
    seen = []
    real_run_chunk = sampling._run_chunk
    def spy(compiled, *args):
        seen.append((compiled, args[-1]))
        return real_run_chunk(compiled, *args)
    sampling._run_chunk = spy
    net = wb.mlp((16,), activation="tanh")
    kwargs = dict(sampler="pcn", num_chains=4, num_warmup=30, num_samples=20, seed=4,
                  progress=False, x_test=x[:5], record_train=True)
    for name, extra in [("single", {}), ("split", dict(devices="all", data_shards=2))]:
        seen.clear()
        result = wb.sample(net, data, **kwargs, **extra)
        compiled, data_arrays = seen[0]
        saved[f"run/{name}/f_test"] = result.draws["f_test"]
        saved[f"run/{name}/f_train"] = result.draws["f_train"]
        saved[f"run/{name}/lp"] = result.stats["lp"]
        saved[f"run/{name}/temp_bytes"] = np.asarray(compiled.memory_analysis().temp_size_in_bytes)
        if data_arrays is not None:
            rows = [shard.data.shape[0] for shard in data_arrays[0].addressable_shards]
            saved[f"run/{name}/x_shard_rows"] = np.asarray(rows)
            saved[f"run/{name}/all_reduces"] = np.asarray(compiled.as_text().count("all-reduce("))
    np.savez(out, **saved)
    """
)


def test_data_sharded_over_devices_gives_the_same_numbers(tmp_path):
    saved = run_on_virtual_devices(DATA_SCRIPT, tmp_path / "data.npz")
    for name in ("primal", "dual", "paper", "standard"):
        # The data really were split: the compiled program sums over devices.
        assert int(saved[f"{name}/all_reduces"]) > 0, name
        np.testing.assert_allclose(
            saved[f"{name}/sharded"], saved[f"{name}/single"], rtol=1e-10, atol=1e-10
        )
        np.testing.assert_allclose(
            saved[f"{name}/sharded_grad"], saved[f"{name}/single_grad"], rtol=1e-10, atol=1e-10
        )
        assert np.all(np.isfinite(saved[f"{name}/single_grad"]))
    # Each device held half of the 256 training points (and half of the chains), and
    # needed less scratch memory than one device running all chains on all points.
    np.testing.assert_array_equal(saved["run/split/x_shard_rows"], [128] * NUM_DEVICES)
    assert int(saved["run/split/all_reduces"]) > 0
    assert saved["run/split/temp_bytes"] < 0.75 * saved["run/single/temp_bytes"]
    # pCN with sums taken in another order: the same chain up to rounding (an accept
    # decision would flip only if a log-ratio fell within rounding of its threshold).
    for key in ("f_test", "f_train", "lp"):
        np.testing.assert_allclose(
            saved[f"run/split/{key}"], saved[f"run/single/{key}"], rtol=1e-8, atol=1e-10
        )


def test_cpu_devices_warn_about_the_thread_pool_deadlock(monkeypatch):
    import types
    import warnings

    from wide_bnn import sampling

    cpus = tuple(types.SimpleNamespace(platform="cpu") for _ in range(4))
    monkeypatch.setattr(sampling.os, "cpu_count", lambda: 2)
    monkeypatch.delenv("PJRT_NPROC", raising=False)
    monkeypatch.setattr(sampling.jax.lib, "__version__", "0.10.2")
    # Several devices (batched LAPACK calls, collectives): twice the larger of the cores
    # and the local devices.
    for devices, threads in [(cpus[:2], 4), (cpus, 8)]:
        assert sampling._several_devices(devices)
        with pytest.warns(sampling.ThreadPoolWarning, match=f"PJRT_NPROC={threads} "):
            sampling._warn_if_cpu_pool_can_deadlock(devices)
    # One device: large LAPACK calls go one matrix at a time (inline), nothing to warn about.
    assert not sampling._several_devices(cpus[:1]) and not sampling._several_devices(None)
    quiet = [
        (cpus, "0.10.2", "8"),  # the remedy is in place
        (cpus, "0.11.2", None),  # jaxlib without the blocking kernels
        ((types.SimpleNamespace(platform="gpu"),) * 2, "0.10.2", None),
    ]
    for devices, version, nproc in quiet:
        monkeypatch.setattr(sampling.jax.lib, "__version__", version)
        if nproc is None:
            monkeypatch.delenv("PJRT_NPROC", raising=False)
        else:
            monkeypatch.setenv("PJRT_NPROC", nproc)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            sampling._warn_if_cpu_pool_can_deadlock(devices)


PROCESS_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    process, out, port = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    # Two hosts, simulated by two processes on this machine (CPU collectives: gloo).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"localhost:{port}", num_processes=2, process_id=process
    )
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import wide_bnn as wb

    assert len(jax.devices()) == 2 and len(jax.local_devices()) == 1
    x = np.linspace(-2.0, 2.0, 8)[:, None]
    y = np.sin(1.5 * x[:, 0])
    net, data = wb.mlp((8,), activation="tanh"), wb.RegressionData(x, y, 0.3)
    saved = {}
    runs = [("local", None, 1), ("chains", "all", 1), ("data", "all", 2)]
    for name, devices, data_shards in runs:
        # "local": each process alone on its own device, the single-device reference.
        result = wb.sample(
            net, data, sampler="pcn", num_chains=4, num_warmup=20, num_samples=10, seed=3,
            progress=False, x_test=x[:3], devices=devices, data_shards=data_shards,
        )
        saved[f"{name}/f_test"], saved[f"{name}/lp"] = result.draws["f_test"], result.stats["lp"]
    if process == 0:
        np.savez(out, **saved)
    """
)


def _free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def test_two_processes_run_the_same_chains_as_one(tmp_path):
    # The multi-host code path (jax.distributed, a global mesh, arrays filled per process,
    # outputs gathered with process_allgather, process 0 saving) with two processes of one
    # CPU device each.
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    out, port = tmp_path / "processes.npz", str(_free_port())
    children = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESS_SCRIPT, str(process), str(out), port],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for process in range(2)
    ]
    try:
        errors = [child.communicate(timeout=300)[1] for child in children]
    finally:
        for child in children:
            child.kill()
    for child, stderr in zip(children, errors, strict=True):
        assert child.returncode == 0, stderr[-4000:]
    with np.load(out) as stored:
        saved = dict(stored)
    for name in ("f_test", "lp"):
        single = saved[f"local/{name}"]
        # Chains over processes: each process computes whole chains, as one device does.
        np.testing.assert_array_equal(saved[f"chains/{name}"], single, err_msg=name)
        # Data over processes: sums over points meet in an all-reduce, to rounding.
        np.testing.assert_allclose(saved[f"data/{name}"], single, rtol=1e-10, atol=1e-12)
    assert saved["local/f_test"].shape == (4, 10, 3, 1)

"""Bad input never yields a silent wrong answer: every case raises a ValueError naming the
argument, before anything is compiled.

Each case is ``(label, call, match)``; ``docs/guides/bad-input.md`` lists the same cases
with the messages they produce. "Before compilation" is checked twice: the sampling
engine (:class:`wide_bnn.sampling._Run`, which builds and compiles the chains) is
replaced by a tripwire, and JAX's own monitoring events must report no XLA backend
compilation during the call.
"""

import os
import shutil
import string
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import wide_bnn as wb
import wide_bnn.checkpoint as ckpt
import wide_bnn.cli as cli
from wide_bnn import sampling

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def tiny():
    """Six points, one feature, a width-3 tanh MLP (float64)."""
    x = np.linspace(-2.0, 2.0, 6)[:, None]
    y = np.sin(1.5 * x[:, 0])
    return wb.mlp((3,), activation="tanh"), wb.RegressionData(x, y, 0.3)


class Tripwire:
    """Stands in for the sampling engine: reaching it means validation let the input pass."""

    def __init__(self, *args, **kwargs):
        raise AssertionError("bad input reached the sampling engine (compilation)")


@pytest.fixture
def engine_tripwire(monkeypatch):
    """Fail if the call builds the sampling engine."""
    monkeypatch.setattr(sampling, "_Run", Tripwire)


@pytest.fixture
def no_compilation(engine_tripwire):
    """Fail if the call builds the sampling engine or XLA compiles anything."""
    compiles = []

    def listener(event, duration, **kwargs):
        if event == COMPILE_EVENT:
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield compiles
    jax.monitoring.unregister_event_duration_listener(listener)
    assert not compiles, f"{len(compiles)} XLA compilation(s) before the error"


def raises_naming(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    return str(info.value)


# -- RegressionData ------------------------------------------------------------------------------

X = np.linspace(-2.0, 2.0, 6)[:, None]
Y = np.sin(X[:, 0])


def with_value(array, index, value):
    array = np.array(array, dtype=float)
    array[index] = value
    return array


DATA_CASES = [
    ("NaN in x", lambda: wb.RegressionData(with_value(X, (2, 0), np.nan), Y, 0.1), r"^x contains"),
    ("inf in x", lambda: wb.RegressionData(with_value(X, (0, 0), np.inf), Y, 0.1), r"^x contains"),
    ("NaN in y", lambda: wb.RegressionData(X, with_value(Y, 3, np.nan), 0.1), r"^y contains"),
    ("-inf in y", lambda: wb.RegressionData(X, with_value(Y, 1, -np.inf), 0.1), r"^y contains"),
    ("x, y lengths differ", lambda: wb.RegressionData(X, Y[:5], 0.1), r"x and y have different"),
    ("noise_std = 0", lambda: wb.RegressionData(X, Y, 0.0), r"^noise_std must be positive"),
    ("noise_std < 0", lambda: wb.RegressionData(X, Y, -0.1), r"^noise_std must be positive"),
    ("noise_std NaN", lambda: wb.RegressionData(X, Y, np.nan), r"^noise_std must be positive"),
    ("noise_std inf", lambda: wb.RegressionData(X, Y, np.inf), r"^noise_std must be positive"),
    ("noise_std vector", lambda: wb.RegressionData(X, Y, [0.1, 0.2]), r"^noise_std must be a"),
    ("noise_std string", lambda: wb.RegressionData(X, Y, "0.1"), r"^noise_std must be a"),
    ("noise_std bool", lambda: wb.RegressionData(X, Y, True), r"^noise_std must be a"),
    ("empty x and y", lambda: wb.RegressionData(X[:0], Y[:0], 0.1), r"^x is empty"),
    ("y with 0 columns", lambda: wb.RegressionData(X, np.zeros((6, 0)), 0.1), r"^y is empty"),
    ("x 1-D", lambda: wb.RegressionData(X[:, 0], Y, 0.1), r"^x must have shape \(n, features"),
    ("y 3-D", lambda: wb.RegressionData(X, np.zeros((6, 1, 1)), 0.1), r"^y must have shape"),
    ("integer x", lambda: wb.RegressionData(np.arange(6)[:, None], Y, 0.1), r"^x has integer"),
    (
        "mixed float32/float64",
        lambda: wb.RegressionData(X.astype(np.float32), Y, 0.1),
        r"^x has dtype float32 but y has dtype float64",
    ),
    ("float16 x", lambda: wb.RegressionData(X.astype(np.float16), Y, 0.1), r"^x has dtype float16"),
    ("complex y", lambda: wb.RegressionData(X, Y + 1j, 0.1), r"^y must be a floating array"),
    ("boolean x", lambda: wb.RegressionData(X > 0, Y, 0.1), r"^x must be a floating array"),
    ("ragged x", lambda: wb.RegressionData([[1.0], [1.0, 2.0]], Y[:2], 0.1), r"^x must be"),
    ("dtype='int32'", lambda: wb.RegressionData(X, Y, 0.1, dtype="int32"), r"^dtype must be"),
]

# -- networks ------------------------------------------------------------------------------------

NET_CASES = [
    ("width 0", lambda: wb.mlp((8, 0)), r"^hidden\[1\] must be a positive int"),
    ("negative width", lambda: wb.mlp((-4,)), r"^hidden\[0\] must be a positive int"),
    ("float width", lambda: wb.mlp((2.5,)), r"^hidden\[0\] must be a positive int"),
    ("out_dim 0", lambda: wb.mlp((4,), out_dim=0), r"^out_dim must be a positive int"),
    ("unknown activation", lambda: wb.mlp((4,), activation="swish"), r"activation 'swish'"),
    ("w_std NaN", lambda: wb.mlp((4,), w_std=np.nan), r"^w_std must be"),
    ("b_std < 0", lambda: wb.mlp((4,), b_std=-1.0), r"^b_std must be"),
    ("resnet num_blocks < 0", lambda: wb.resnet(num_blocks=-1), r"^num_blocks must be"),
]


# -- sample ----------------------------------------------------------------------------------------


def sample_with(**kwargs):
    net, data = tiny()
    net = kwargs.pop("net", net)
    data = kwargs.pop("data", data)
    return lambda: wb.sample(net, data, progress=False, **kwargs)


SAMPLE_CASES = [
    (
        "net.out_dim differs from y's columns",
        sample_with(net=wb.mlp((3,), out_dim=2)),
        r"data has 1 output\(s\) .* net.out_dim is 2",
    ),
    ("NaN in x_test", sample_with(x_test=np.full((2, 1), np.nan)), r"^x_test contains 2"),
    ("inf in x_test", sample_with(x_test=np.array([[np.inf]])), r"^x_test contains 1"),
    ("x_test feature dim", sample_with(x_test=np.zeros((2, 3))), r"^x_test must have shape"),
    ("x_test 1-D", sample_with(x_test=np.zeros(3)), r"^x_test must have shape"),
    ("x_test empty", sample_with(x_test=np.zeros((0, 1))), r"^x_test is empty"),
    ("integer x_test", sample_with(x_test=np.ones((2, 1), int)), r"^x_test has integer"),
    (
        "float32 x_test, float64 data",
        sample_with(x_test=np.ones((2, 1), np.float32)),
        r"^x_test has dtype float32",
    ),
    (
        "MLP on image-shaped x",
        sample_with(data=wb.RegressionData(np.zeros((6, 2, 2)), Y, 0.3)),
        r"^net maps data.x of shape \(6, 2, 2\) to outputs of shape \(6, 2, 1\)",
    ),
    ("ResNet on flat x", sample_with(net=wb.resnet()), r"^resnet expects x of shape"),
    ("unknown sampler", sample_with(sampler="gibbs"), r"^sampler must be one of"),
    ("unknown parameterisation", sample_with(parameterisation="ntk"), r"^parameterisation must"),
    ("num_chains 0", sample_with(num_chains=0), r"^num_chains must be an int >= 1"),
    ("num_chains 2.0", sample_with(num_chains=2.0), r"^num_chains must be an int >= 1"),
    ("num_samples 0", sample_with(num_samples=0), r"^num_samples must be an int >= 1"),
    ("num_warmup -1", sample_with(num_warmup=-1), r"^num_warmup must be an int >= 0"),
    ("thinning 0", sample_with(thinning=0), r"^thinning must be an int >= 1"),
    ("seed -1", sample_with(seed=-1), r"^seed must be in"),
    ("unknown sampler option", sample_with(sampler="pcn", step_size=0.1), r"unknown option"),
    ("step_size < 0", sample_with(sampler="hmc", step_size=-0.1), r"^step_size for sampler"),
    ("devices='gpu'", sample_with(devices="gpu"), r"^devices must be None, 'all'"),
    ("devices=0", sample_with(devices=0), r"^devices=0 but there are"),
    ("devices=[]", sample_with(devices=[]), r"^devices must be"),
    (
        "devices repeats a device",
        sample_with(num_chains=2, devices=[jax.devices()[0]] * 2),
        r"^devices lists a device twice",
    ),
    ("data_shards 0", sample_with(data_shards=0), r"^data_shards must be an int >= 1"),
    ("data_shards without devices", sample_with(data_shards=2), r"^data_shards=2 needs devices"),
    ("threads 0", sample_with(threads=0), r"^threads must be an int >= 1"),
    (
        "threads not dividing the chains (4 chains, 3 threads)",
        sample_with(num_chains=4, threads=3),
        r"^threads=3 must divide num_chains=4",
    ),
    (
        "block_pcn on a two-layer MLP",
        sample_with(net=wb.mlp((3, 3), activation="tanh"), sampler="block_pcn"),
        r"^sampler='block_pcn' moves the hidden units of a one-hidden-layer MLP",
    ),
    ("block_size 0", sample_with(sampler="block_pcn", block_size=0), r"^block_size for sampler"),
]


@pytest.mark.parametrize(("label", "call", "match"), DATA_CASES + NET_CASES + SAMPLE_CASES)
def test_bad_input_raises_naming_the_argument_before_compiling(label, call, match, no_compilation):
    raises_naming(call, match)


def test_every_case_names_a_known_argument():
    # The table in the docs is keyed by argument: every message must start with one or
    # name it, so that a user sees what to fix.
    names = ("x", "y", "noise_std", "dtype", "hidden", "out_dim", "activation", "w_std")
    names += ("b_std", "num_blocks", "data", "net", "x_test", "sampler", "parameterisation")
    names += ("num_chains", "num_samples", "num_warmup", "thinning", "seed", "step_size")
    names += ("devices", "data_shards", "resnet", "unknown option", "threads", "block_size")
    for label, call, _ in DATA_CASES + NET_CASES + SAMPLE_CASES:
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        assert any(name in message for name in names), (label, message)


def test_chains_must_be_a_multiple_of_the_devices(monkeypatch, no_compilation):
    # One CPU device here; fake a second so that the multiple rule itself is exercised.
    device = jax.devices()[0]
    monkeypatch.setattr(sampling.jax, "devices", lambda: [device, FakeDevice()])
    raises_naming(sample_with(num_chains=3, devices="all"), r"num_chains=3 must be a multiple")
    raises_naming(sample_with(num_chains=3, devices=2), r"num_chains=3 must be a multiple")
    raises_naming(
        sample_with(num_chains=2, devices=2, data_shards=2, data=FIVE_POINTS),
        r"^data_shards=2 must divide the number of training points \(5\)",
    )
    raises_naming(
        sample_with(devices=1, data_shards=2), r"^data_shards=2 must divide the number of devices"
    )


# Built at import: the test itself must not compile anything.
FIVE_POINTS = wb.RegressionData(X[:5], Y[:5], 0.3)


class FakeDevice:
    """Only counted, never used: validation fails before any placement."""


# -- checkpoint directories --------------------------------------------------------------------

RUN = dict(sampler="pcn", num_chains=2, num_warmup=4, num_samples=6, chunk_size=2, seed=3)


FIRST_RUN = {}


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    """A real checkpoint directory of a completed small run (three chunk files)."""
    net, data = tiny()
    directory = tmp_path_factory.mktemp("good") / "ckpt"
    result = wb.sample(net, data, progress=False, checkpoint_dir=str(directory), **RUN)
    assert result.complete
    FIRST_RUN["result"] = result
    assert sorted(os.listdir(directory)) == [
        "draws_000000000.npz",
        "draws_000000002.npz",
        "draws_000000004.npz",
        "state.npz",
    ]
    return directory


def copy_of(directory, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(directory, target)
    return target


def sample_into(directory, **overrides):
    return sample_with(checkpoint_dir=str(directory), **{**RUN, **overrides})


def truncate(path, fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def flip_byte(path, member=None):
    """Flip the last data byte of a member of an ``.npz`` (zip) file.

    Data bytes, not zip metadata: a flip in a local header's size field, say, is
    harmless (readers use the central directory) and rightly not refused.
    """
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member) if member else archive.infolist()[-1]
    position = info.header_offset + len(info.FileHeader()) + info.compress_size - 1
    data = bytearray(path.read_bytes())
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 4},
        {"num_samples": 8},
        {"sampler": "elliptical"},
        {"data": wb.RegressionData(X, Y + 1.0, 0.3)},
        {"net": wb.mlp((4,), activation="tanh")},
    ],
    ids=["seed", "num_samples", "sampler", "data", "net"],
)
def test_checkpoint_of_a_different_run_is_refused_before_compiling(
    good_checkpoint, change, no_compilation
):
    raises_naming(sample_into(good_checkpoint, **change), r"^checkpoint_dir=.*different run")


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda d: (d / "state.npz").write_bytes(b"not a checkpoint"), "corrupt or unreadable"),
        (lambda d: truncate(d / "state.npz"), "corrupt or unreadable"),
        (lambda d: flip_byte(d / "state.npz", "states/0.npy"), "corrupt or unreadable"),
        (lambda d: (d / "state.npz").write_bytes(b""), "corrupt or unreadable"),
        (lambda d: truncate(d / "draws_000000002.npz"), "corrupt or incomplete"),
        (lambda d: flip_byte(d / "draws_000000004.npz"), "corrupt or incomplete"),
        (lambda d: (d / "draws_000000000.npz").unlink(), "corrupt or incomplete"),
    ],
    ids=[
        "state-garbage",
        "state-truncated",
        "state-bitflip",
        "state-empty",
        "chunk-truncated",
        "chunk-bitflip",
        "chunk-missing",
    ],
)
def test_corrupt_checkpoint_is_refused_before_compiling(
    good_checkpoint, tmp_path, damage, match, no_compilation
):
    directory = copy_of(good_checkpoint, tmp_path)
    damage(directory)
    raises_naming(sample_into(directory), rf"^checkpoint_dir=.*{match}")


def test_undamaged_copy_resumes_to_the_same_draws(good_checkpoint, tmp_path):
    # The control for the damage tests: an intact copy is accepted (and complete).
    net, data = tiny()
    directory = copy_of(good_checkpoint, tmp_path)
    resumed = wb.sample(net, data, progress=False, checkpoint_dir=str(directory), **RUN)
    original = FIRST_RUN["result"]
    for name in original.draws:
        np.testing.assert_array_equal(resumed.draws[name], original.draws[name])


# The command line builds its data set with small jitted functions (the teacher network),
# so only the engine tripwire applies to it.


def test_cli_refuses_a_foreign_checkpoint_in_one_line(tmp_path, capsys, engine_tripwire):
    directory = tmp_path / "ckpt"
    directory.mkdir()
    ckpt.write_state(str(directory), "f" * 64, 0, {}, {}, config_fingerprint="0" * 64)
    argv = ["sample", "--out", str(tmp_path / "out"), "--checkpoint-dir", str(directory)]
    argv += ["--hidden", "4", "--chains", "1", "--samples", "2", "--no-progress", "--no-report"]
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint_dir=" in err[0] and "different run" in err[0], err


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--devices", "two"], "devices must be 'all' or a positive number"),
        (["--devices", "0"], "devices must be 'all' or a positive number"),
        (["--chunk-size", "0"], "chunk_size must be an int >= 1"),
        (["--chains", "0"], "num_chains must be an int >= 1"),
        (["--thinning", "0"], "thinning must be an int >= 1"),
        (["--sampler", "gibbs"], "sampler must be one of"),
        (["--activation", "swish"], "activation 'swish'"),
        (["--hidden", "0"], "hidden must be a list of positive widths"),
        (["--noise-std", "-1"], "noise_std"),
    ],
)
def test_cli_bad_flags_are_one_line_errors(argv, match, tmp_path, capsys, engine_tripwire):
    base = ["sample", "--out", str(tmp_path), "--samples", "2", "--no-progress", "--no-report"]
    assert cli.main([*base, *argv]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err


# -- property-based: argument checking of sample() ---------------------------------------------

INT_ARGUMENTS = {
    # name: (lowest valid value, a valid draw strategy)
    "num_chains": (1, st.integers(1, 64)),
    "num_warmup": (0, st.integers(0, 10_000)),
    "num_samples": (1, st.integers(1, 10_000)),
    "thinning": (1, st.integers(1, 50)),
    "num_projections": (1, st.integers(1, 500)),
    "chunk_size": (1, st.integers(1, 1000)),
}


def invalid_int(low):
    too_small = st.integers(-(2**40), low - 1)
    wrong_type = st.sampled_from([float(low), str(low), True, None, [low], np.float64(low)])
    return st.one_of(too_small, wrong_type)


@st.composite
def sample_arguments(draw):
    """Valid ``sample`` keyword arguments, with at most one made invalid."""
    kwargs = {name: draw(valid) for name, (_, valid) in INT_ARGUMENTS.items()}
    kwargs["seed"] = draw(st.integers(0, 2**63 - 1))
    kwargs["sampler"] = draw(st.sampled_from([None, *wb.SAMPLERS]))
    kwargs["progress"] = draw(st.booleans())
    broken = draw(st.sampled_from([None, *INT_ARGUMENTS, "seed", "sampler", "progress"]))
    if broken in INT_ARGUMENTS:
        low = INT_ARGUMENTS[broken][0]
        value = draw(invalid_int(low))
        if broken == "chunk_size" and value is None:
            value = 0  # None is chunk_size's default, not an error
        kwargs[broken] = value
    elif broken == "seed":
        kwargs["seed"] = draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=2**63)))
    elif broken == "sampler":
        kwargs["sampler"] = draw(st.text(string.ascii_lowercase, max_size=8).filter(_unknown))
    elif broken == "progress":
        kwargs["progress"] = draw(st.sampled_from([0, 1, "yes", None]))
    return broken, kwargs


def _unknown(name):
    return name not in wb.SAMPLERS


@SETTINGS
@given(case=sample_arguments())
def test_sample_arguments_are_accepted_iff_valid(case):
    broken, kwargs = case
    net, data = tiny()
    call = dict(
        x_test=None,
        parameterisation="repriorised",
        collapsed=None,
        checkpoint_dir=None,
        keep_params=False,
        record_train=False,
        devices=None,
        data_shards=1,
        sampler_options={},
    )
    call.update(kwargs)
    if broken is None:
        setup = sampling._setup(net, data, **call)
        for name in INT_ARGUMENTS:
            assert setup[name] == kwargs[name]
        assert setup["sampler"] == (kwargs["sampler"] or wb.DEFAULT_SAMPLER)
    else:
        with pytest.raises(ValueError, match=rf"^{broken}"):
            sampling._setup(net, data, **call)


dtypes = st.sampled_from(
    [np.float64, np.float32, np.float16, np.int32, np.int64, np.bool_, np.complex64]
)


def small_values(dtype):
    return st.booleans() if dtype == np.bool_ else st.integers(-3, 3)


@SETTINGS
@given(
    x_dtype=dtypes,
    y_dtype=dtypes,
    n=st.integers(1, 6),
    d=st.integers(1, 3),
    k=st.integers(0, 2),
    data=st.data(),
)
def test_regression_data_accepts_exactly_one_supported_float_dtype(x_dtype, y_dtype, n, d, k, data):
    # float32/float64 with equal dtypes and finite values pass unchanged; anything else
    # raises naming x or y (k == 0 is a vector target).
    x = data.draw(hnp.arrays(x_dtype, (n, d), elements=small_values(x_dtype)))
    y = data.draw(hnp.arrays(y_dtype, (n, k) if k else (n,), elements=small_values(y_dtype)))
    supported = (np.float32, np.float64)
    if x_dtype in supported and y_dtype == x_dtype:
        made = wb.RegressionData(x, y, 0.5)
        assert made.dtype == jnp.dtype(x_dtype)
        np.testing.assert_array_equal(np.asarray(made.x), x)
    else:
        with pytest.raises(ValueError, match=r"^(x|y) "):
            wb.RegressionData(x, y, 0.5)


@SETTINGS
@given(widths=st.lists(st.integers(-3, 5), max_size=4), out_dim=st.integers(-1, 3))
def test_networks_are_built_iff_every_width_and_out_dim_is_positive(widths, out_dim):
    if all(w >= 1 for w in widths) and out_dim >= 1:
        net = wb.mlp(tuple(widths), out_dim=out_dim)
        assert net.spec.hidden == tuple(widths) and net.out_dim == out_dim
    else:
        with pytest.raises(ValueError, match=r"^(hidden\[\d\]|out_dim) must be a positive int"):
            wb.mlp(tuple(widths), out_dim=out_dim)

"""ESS per second of NumPyro NUTS with and without the wide_bnn plug-in (problem P1).

One process, side by side, per width (1-hidden-layer GELU MLP on ``datasets.teacher()``,
float64, noise_std 0.1 fixed, or latent with ``--latent-noise``):

* ``standard``: the NumPyro model ``bnn(...)`` + ``Normal(f, sigma)`` likelihood, as is,
* ``plugin``: the same model under ``wide_bnn.numpyro.reparam`` (whitened readout),
* ``collapsed``: ``bnn_collapsed`` (readout integrated out; exact readout draws after).

Every variant is NumPyro's own ``NUTS`` kernel (default settings: diagonal mass matrix,
target acceptance 0.8, max tree depth 10), driven by a jitted ``lax.scan`` per chain so
that compilation (timed and reported separately), warm-up and sampling are timed apart.
``ms/grad`` is the fastest of 50 jitted value-and-gradient calls of NumPyro's potential.
Chains run one after another (vmapped NUTS would run them in lockstep).

Metrics (bulk ESS by ArviZ, all chains): ``f_test`` = the network outputs at the 32
test points, minimum over points; ``f_test_mean`` = ``E[f(x_test) | hidden, sigma]``
(which only moves when the hidden layer mixes), minimum over points; ``sigma`` with
``--latent-noise``. ESS/s divides by the summed sampling wall time of all chains. The
ratio lines divide the plug-in's (and the collapsed form's) ESS/s by the standard
model's, per metric, and likewise ESS per gradient evaluation (which does not depend on
the machine's load; multiply by the ratio of costs per gradient for ESS/s).

Usage::

    python benchmarks/bench_numpyro.py                                   # full: widths 128-1024
    python benchmarks/bench_numpyro.py --widths 32 --num-warmup 100 \\
        --num-samples 100 --num-chains 2                                 # smoke run
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import platform
import time
import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import NUTS, Predictive
from numpyro.infer.util import initialize_model

import wide_bnn.numpyro as wbn
from wide_bnn.datasets import teacher
from wide_bnn.nets import mlp

VARIANTS = ("standard", "plugin", "collapsed")
METRICS = ("f_test", "f_test_mean", "sigma")


def build_model(variant, net, latent_noise, noise_std):
    """The NumPyro model of one variant: ``model(x, y)``."""

    def noise():
        if latent_noise:
            return numpyro.sample("sigma", dist.HalfNormal(1.0))
        return noise_std

    if variant == "collapsed":

        def model(x, y):
            wbn.bnn_collapsed("net", net, x, y, noise_std=noise())

        return model

    def model(x, y=None):
        sigma = noise()
        f = wbn.bnn("net", net, x, y=y, noise_std=sigma)
        numpyro.deterministic("f", f)
        numpyro.sample("y", dist.Normal(f, sigma), obs=y)

    return wbn.reparam(model) if variant == "plugin" else model


def make_runner(kernel, num_warmup, num_samples, model_args):
    """A function running one NUTS chain from a key; compiled once, on its first call.

    Returns the latent draws, the gradient evaluations per draw and the timings
    (``compile`` is non-zero for the first chain only).
    """
    compiled = {}

    def steps(state, length):
        def body(state, _):
            state = kernel.sample(state, model_args, {})
            return state, (state.z, state.num_steps)

        return jax.lax.scan(body, state, None, length=length)

    def run(key):
        state = kernel.init(key, num_warmup, model_args=model_args)
        t0 = time.perf_counter()
        if not compiled:
            for length in (num_warmup, num_samples):
                lowered = jax.jit(steps, static_argnums=1).lower(state, length)
                compiled[length] = lowered.compile()
        t1 = time.perf_counter()
        state, _ = jax.block_until_ready(compiled[num_warmup](state))
        t2 = time.perf_counter()
        state, (z, num_steps) = jax.block_until_ready(compiled[num_samples](state))
        t3 = time.perf_counter()
        return z, num_steps, {"compile": t1 - t0, "warmup": t2 - t1, "sampling": t3 - t2}

    return run


def gradient_ms(model, model_args, repeats=50):
    """Fastest of ``repeats`` jitted value-and-grad calls of the potential (milliseconds)."""
    init, potential_fn, _, _ = initialize_model(
        jax.random.key(0), model, model_args=model_args, dynamic_args=False
    )
    fn = jax.jit(jax.value_and_grad(potential_fn))
    jax.block_until_ready(fn(init.z))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(init.z))
        times.append(time.perf_counter() - start)
    # The minimum: the machine is shared, and load only ever adds time.
    return 1e3 * min(times)


def run_variant(variant, net, data, args, seed):
    x, y, x_test = data
    model = build_model(variant, net, args.latent_noise, args.noise_std)
    kernel = NUTS(model)
    run_chain = make_runner(kernel, args.num_warmup, args.num_samples, (x, y))
    chains, grads, timings = [], [], []
    for chain in range(args.num_chains):
        z, num_steps, timing = run_chain(jax.random.fold_in(jax.random.key(seed), chain))
        chains.append(z)
        grads.append(np.asarray(num_steps))
        timings.append(timing)
    z = jax.tree.map(lambda *c: jnp.stack(c), *chains)  # (chain, draw, ...)
    samples = jax.vmap(jax.vmap(kernel.postprocess_fn((x, y), {})))(z)
    flat = jax.tree.map(lambda a: a.reshape((-1, *a.shape[2:])), samples)
    key = jax.random.key(seed + 1)
    rb = wbn.readout_posterior(key, model, samples, x, y, x_test=x_test, batch_ndims=2)
    if variant == "collapsed":
        f_test = rb["f_test"]
    else:
        f_test = Predictive(model, flat)(key, x_test)["f"]
        f_test = f_test.reshape((args.num_chains, args.num_samples, *f_test.shape[1:]))
    draws = {"f_test": f_test[..., 0], "f_test_mean": rb["f_test_mean"][..., 0]}
    if args.latent_noise:
        draws["sigma"] = samples["sigma"][..., None]
    seconds = sum(t["sampling"] for t in timings)
    row = {
        "variant": variant,
        "grads_per_draw": float(np.mean(grads)),
        "grad_ms": gradient_ms(model, (x, y)),
        "compile_s": sum(t["compile"] for t in timings),
        "warmup_s": sum(t["warmup"] for t in timings),
        "sampling_s": seconds,
    }
    total = args.num_chains * args.num_samples
    for metric, values in draws.items():
        dataset = az.convert_to_dataset({metric: np.asarray(values, dtype=np.float64)})
        ess = np.atleast_1d(az.ess(dataset, method="bulk")[metric].values)
        row[f"{metric}_ess_per_draw"] = float(np.min(ess)) / total
        row[f"{metric}_ess_per_s"] = float(np.min(ess)) / seconds
    return row


def _print_header(args):
    print(
        f"# numpyro {numpyro.__version__}, jax {jax.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}"
    )
    noise = "latent sigma ~ HalfNormal(1)" if args.latent_noise else f"noise_std {args.noise_std}"
    print(
        f"# P1 teacher (n 64, 32 test points, d_in 16), MLP 1 hidden layer gelu, float64, {noise}; "
        f"NUTS, {args.num_chains} chains x ({args.num_warmup} warm-up + {args.num_samples} draws)"
    )
    metrics = METRICS if args.latent_noise else METRICS[:2]
    ess_cols = " | ".join(f"ESS/draw {m} | ESS/s {m}" for m in metrics)
    print(
        f"| width | variant | ms/grad | grads/draw | compile s | warm-up s | sampling s | "
        f"{ess_cols} |"
    )
    print("|" + "---|" * (7 + 2 * len(metrics)))
    return metrics


def _print_row(width, row, metrics):
    cols = " | ".join(
        f"{row[f'{m}_ess_per_draw']:.3f} | {row[f'{m}_ess_per_s']:.2f}" for m in metrics
    )
    print(
        f"| {width} | {row['variant']} | {row['grad_ms']:.2f} | {row['grads_per_draw']:.1f} | "
        f"{row['compile_s']:.1f} | "
        f"{row['warmup_s']:.1f} | {row['sampling_s']:.1f} | {cols} |",
        flush=True,
    )


def _print_ratios(width, rows, metrics):
    base = rows["standard"]
    for variant in ("plugin", "collapsed"):
        if variant not in rows:
            continue
        row = rows[variant]
        per_s = ", ".join(
            f"{m} {row[f'{m}_ess_per_s'] / base[f'{m}_ess_per_s']:.1f}x" for m in metrics
        )
        # ESS per gradient evaluation: independent of the machine's load.
        per_grad = ", ".join(f"{m} {_per_grad(row, m) / _per_grad(base, m):.1f}x" for m in metrics)
        print(
            f"# width {width}: {variant} / standard: ESS/s {per_s}; ESS/gradient {per_grad}",
            flush=True,
        )


def _per_grad(row, metric):
    return row[f"{metric}_ess_per_draw"] / row["grads_per_draw"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--num-chains", type=int, default=4)
    parser.add_argument("--num-warmup", type=int, default=500)
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--noise-std", type=float, default=0.1)
    parser.add_argument("--latent-noise", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if "standard" not in args.variants:
        parser.error("--variants must include 'standard' (the baseline of the ratios)")
    jax.config.update("jax_enable_x64", True)  # a script, not the library: it owns the config
    ds = teacher(noise_std=args.noise_std)
    data = tuple(jnp.asarray(a) for a in (ds.x_train, ds.y_train, ds.x_test))
    metrics = _print_header(args)
    for width in args.widths:
        net = mlp(hidden=(width,), activation="gelu")
        rows = {}
        for variant in args.variants:
            with warnings.catch_warnings():
                # ArviZ warns about unreliable ESS for short chains; the smoke run is short.
                warnings.simplefilter("ignore", UserWarning)
                rows[variant] = run_variant(variant, net, data, args, args.seed)
            _print_row(width, rows[variant], metrics)
        _print_ratios(width, rows, metrics)


if __name__ == "__main__":
    main()

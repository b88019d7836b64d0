"""NumPyro NUTS on an exact standard normal: the best any reparameterisation can give it.

The NumPyro plug-in (``wide_bnn.numpyro``) makes a wide BNN's posterior close to N(0, I)
in the whitened coordinates; NUTS with its default settings then needs as many gradient
evaluations per draw as on N(0, I) itself, in the same dimension. This script measures
that floor (default: the dimension of the P1 network at width 1024, 16 inputs:
16 x 1024 hidden weights, 1024 biases and 1025 readout coordinates), so the plug-in's
gradients per draw in ``bench_numpyro.py`` can be read against it.

Prints the mean number of gradient evaluations per draw, the step size NUTS adapted, and
the bulk ESS per draw of fixed random unit projections (min and median over 20).

Usage::

    python benchmarks/bench_nuts_normal.py                 # d = 18433, 2 x (300 + 300)
    python benchmarks/bench_nuts_normal.py --dim 4609      # width 256
    python benchmarks/bench_nuts_normal.py --max-tree-depth 4 --target-accept 0.6
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse

import jax
import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=16 * 1024 + 1024 + 1025)
    parser.add_argument("--num-warmup", type=int, default=300)
    parser.add_argument("--num-samples", type=int, default=300)
    parser.add_argument("--num-chains", type=int, default=2)
    parser.add_argument("--max-tree-depth", type=int, default=10, help="NUTS (default 10)")
    parser.add_argument(
        "--target-accept", type=float, default=0.8, help="NUTS target acceptance (default 0.8)"
    )
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)

    import arviz as az
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    def model():
        numpyro.sample("z", dist.Normal(0.0, 1.0).expand([args.dim]).to_event(1))

    mcmc = MCMC(
        NUTS(
            model,
            max_tree_depth=args.max_tree_depth,
            target_accept_prob=args.target_accept,
        ),
        num_warmup=args.num_warmup,
        num_samples=args.num_samples,
        num_chains=args.num_chains,
        chain_method="sequential",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), extra_fields=("num_steps", "adapt_state.step_size"))
    extra = mcmc.get_extra_fields()
    draws = np.asarray(mcmc.get_samples(group_by_chain=True)["z"])
    directions = np.random.default_rng(0).standard_normal((args.dim, 20))
    projections = draws @ (directions / np.linalg.norm(directions, axis=0))
    ess = np.array([az.ess(projections[..., i]) for i in range(20)]) / projections[..., 0].size
    print(
        f"dim {args.dim}: {np.mean(extra['num_steps']):.1f} gradients per draw, "
        f"step size {np.mean(extra['adapt_state.step_size']):.3g}, "
        f"ESS per draw of projections min {ess.min():.2f} median {np.median(ess):.2f}"
    )


if __name__ == "__main__":
    main()

"""Draw the home-page figure of the documentation from a width-sweep results table.

The figure shows effective samples per draw and per second of the test predictions
(minimum over test points) against hidden width, one line per parameterisation and
sampler: the standard parameterisation gets worse or stays flat as the network widens,
the repriorised one improves.

Input: a CSV table with one row per run and the columns of
:func:`wide_bnn.sweep.run_row` (``width``, ``parameterisation``, ``sampler``,
``f_test_ess_per_draw_min``, ``f_test_ess_per_s_min``, ``f_test_mean_...``), i.e. the
``sweep.csv`` written by ``Sweep.save`` / ``wide-bnn demo`` or a benchmark run.

Usage::

    python docs/make_figures.py RESULTS.csv                     # -> docs/figures/ess_vs_width.png
    python docs/make_figures.py RESULTS.csv --out figure.png --variable f_test_mean
    python docs/make_figures.py p1.csv --configs std-nuts numpyro-nuts reprior-pcn
        # only these configurations of a benchmark CSV (its ``sampler`` column)
    python docs/make_figures.py --run --widths 32 128 512 1024 --out-dir runs/p1
        # runs the P1 sweep first (wb.width_sweep on datasets.teacher(), float64),
        # saves it to --out-dir, then draws the figure from its sweep.csv
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "figures" / "ess_vs_width.png"
REQUIRED = ("width", "parameterisation", "sampler")


def load_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a results CSV and check it has what the figure needs."""
    table = pd.read_csv(path)
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    return table


def draw(table: pd.DataFrame, *, variable: str = "f_test", stat: str = "min") -> Figure:
    """Two panels, ESS per draw and ESS per second against width, one line per run type."""
    metrics = (("ess_per_draw", "ESS per draw"), ("ess_per_s", "ESS per second"))
    columns = [f"{variable}_{metric}_{stat}" for metric, _ in metrics]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"table is missing columns {missing}")
    figure = Figure(figsize=(9.0, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    groups = sorted(table.groupby(["parameterisation", "sampler"]), key=lambda g: g[0])
    for (parameterisation, sampler), part in groups:
        part = part.sort_values("width")
        style = "-" if parameterisation == "repriorised" else "--"
        colour = "C0" if parameterisation == "repriorised" else "C3"
        if sum(1 for (p, _), _ in groups if p == parameterisation) > 1:
            colour = None  # several samplers per parameterisation: let matplotlib cycle
        for ax, column in zip(axes, columns, strict=True):
            values = part[column].to_numpy(dtype=float)
            ax.plot(
                part["width"],
                np.where(values > 0, values, np.nan),
                style,
                marker="o",
                color=colour,
                label=f"{parameterisation} ({sampler})",
            )
    widths = sorted(int(w) for w in table["width"].unique())
    for ax, (_, label) in zip(axes, metrics, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.set_xticks([], minor=True)
        ax.set_yscale("log")
        ax.set_xlabel("hidden width")
        ax.set_ylabel(f"{label}, {variable} ({stat} over test points)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize="small")
    return figure


def run_sweep(widths, out_dir, *, num_chains, num_warmup, num_samples, samplers) -> Path:
    """Run the P1 width sweep of the benchmarks and save it; return its ``sweep.csv``."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import wide_bnn as wb
    from wide_bnn import datasets

    sweep = wb.width_sweep(
        widths,
        datasets.teacher(),
        samplers=samplers,
        num_chains=num_chains,
        num_warmup=num_warmup,
        num_samples=num_samples,
        out_dir=out_dir,
        log=print,
    )
    del sweep
    return Path(out_dir) / "sweep.csv"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", help="results CSV (one row per run)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="PNG to write")
    parser.add_argument("--variable", default="f_test", choices=("f_test", "f_test_mean"))
    parser.add_argument("--stat", default="min", choices=("min", "median"))
    parser.add_argument("--dpi", type=int, default=150)
    parser.add_argument(
        "--configs", nargs="+", default=None, help="draw only these values of the sampler column"
    )
    run = parser.add_argument_group("running the sweep first (--run)")
    run.add_argument("--run", action="store_true", help="run the P1 sweep, then draw")
    run.add_argument("--widths", type=int, nargs="+", default=[32, 128, 512, 1024, 2048])
    run.add_argument("--out-dir", default="runs/p1")
    run.add_argument("--chains", type=int, default=4)
    run.add_argument("--warmup", type=int, default=500)
    run.add_argument("--samples", type=int, default=1000)
    run.add_argument("--reprior-sampler", default="pcn")
    run.add_argument("--standard-sampler", default="nuts")
    args = parser.parse_args(argv)

    if args.run:
        results = run_sweep(
            args.widths,
            args.out_dir,
            num_chains=args.chains,
            num_warmup=args.warmup,
            num_samples=args.samples,
            samplers={"repriorised": args.reprior_sampler, "standard": args.standard_sampler},
        )
    elif args.results:
        results = Path(args.results)
    else:
        parser.error("give a results CSV or --run")
    table = load_table(results)
    if args.configs:
        unknown = sorted(set(args.configs) - set(table["sampler"]))
        if unknown:
            parser.error(f"--configs {unknown} not in {sorted(set(table['sampler']))}")
        table = table[table["sampler"].isin(args.configs)]
    figure = draw(table, variable=args.variable, stat=args.stat)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=args.dpi)
    print(f"wrote {out} from {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``wide-bnn`` command line: ``demo``, ``sample`` and ``report``.

``wide-bnn demo`` runs a width sweep of both parameterisations on a bundled
real data set and writes an HTML/Markdown report; ``wide-bnn sample`` runs one
configuration (flags or a TOML file) with resumable checkpoints;
``wide-bnn report RUN_DIR`` rebuilds the report of a run directory.

This is an application, not a library import: it enables 64-bit JAX in
:func:`main` (``--float32`` opts out) and sets ``OPENBLAS_NUM_THREADS=1``
before numpy/jax load, because jitted Cholesky factorisations otherwise run
100-1000x slower on small machines.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import sys
import tomllib
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

EXIT_USAGE = 2

# Demo sizes: the full one finishes in a few minutes on 2 CPU cores; --quick is for tests.
DEMO: dict[str, Any] = {
    "dataset": "diabetes",
    "n_train": 64,
    "n_test": 24,
    "widths": [32, 128, 512],
    "num_chains": 4,
    "num_warmup": 150,
    "num_samples": 300,
    "slice_points": 25,
    # Repriorised: the library's choice per width (sampler=None: HMC below 4 readout
    # features per training point, block pCN above; docs/guides/samplers.md); NUTS is
    # the strongest standard-parameterisation baseline. In the standard
    # parameterisation NUTS runs into its default depth limit (1023 gradients per
    # draw) from width ~128; depth 6 keeps the demo within minutes.
    "samplers": {"repriorised": None, "standard": "nuts"},
    "sampler_options": {"nuts": {"max_tree_depth": 6}},
}
DEMO_QUICK: dict[str, Any] = {
    "dataset": "diabetes",
    "n_train": 32,
    "n_test": 8,
    "widths": [16, 64],
    "num_chains": 2,
    "num_warmup": 50,
    "num_samples": 100,
    "slice_points": 9,
    # MALA compiles faster than NUTS: the quick demo is dominated by compilation.
    "samplers": {"repriorised": "pcn", "standard": "mala"},
    "sampler_options": {},
}

# Keys of a `sample` TOML config (same names as the long flags, with underscores).
SAMPLE_DEFAULTS: dict[str, Any] = {
    "dataset": "teacher",
    "n_train": None,
    "n_test": None,
    "noise_std": None,
    "hidden": [512],
    "activation": "gelu",
    "sampler": None,
    "parameterisation": "repriorised",
    "collapsed": True,
    "chains": 4,
    "warmup": 500,
    "samples": 1000,
    "thinning": 1,
    "seed": 0,
    "out": None,
    "checkpoint_dir": None,
    "chunk_size": None,
    "devices": None,
    "data_shards": 1,
    "threads": None,
    "options": {},
    "report": True,
}


class CLIError(Exception):
    """A user error reported as one line with exit code 2."""


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--float32", action="store_true", help="run in float32 (default: float64, recommended)"
    )
    common.add_argument("--no-progress", action="store_true", help="hide progress bars")
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")

    parser = argparse.ArgumentParser(
        prog="wide-bnn",
        description="Fast, diagnosed posterior sampling for wide Bayesian neural networks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="width sweep of both parameterisations on a bundled data set, with a report",
        description="Sample a one-hidden-layer GELU MLP at several widths in the repriorised "
        "and the standard parameterisation on a bundled real data set (scikit-learn's "
        "diabetes or digits), compare with the infinite-width NNGP posterior and write an "
        "HTML/Markdown report. Takes a few minutes on 2 CPU cores.",
    )
    demo.add_argument("--quick", action="store_true", help="tiny version (seconds; for tests)")
    demo.add_argument("--dataset", choices=["diabetes", "digits"], help="bundled data set")
    demo.add_argument("--widths", type=int, nargs="+", metavar="W", help="hidden widths")
    demo.add_argument("--chains", type=int, help="chains per run")
    demo.add_argument("--warmup", type=int, help="warm-up steps per chain")
    demo.add_argument("--samples", type=int, help="draws per chain")
    demo.add_argument(
        "--sampler-repriorised",
        metavar="NAME",
        help="sampler for the repriorised runs (default: the library's choice per width)",
    )
    demo.add_argument(
        "--sampler-standard", metavar="NAME", help="sampler for the standard runs (nuts)"
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--out", type=Path, default=Path("wide-bnn-demo"), help="output directory")

    sample = commands.add_parser(
        "sample",
        parents=[common],
        help="sample one configuration (flags or TOML); resumable",
        description="Sample one network/sampler configuration, save the draws as netCDF "
        "(OUT/runs/<label>.nc) and a report. Settings come from --config (TOML, keys named "
        "like the long flags with underscores, sampler options in an [options] table), "
        "overridden by flags. Checkpoints go to --checkpoint-dir (default OUT/checkpoints); "
        "re-running the same command resumes from them.",
    )
    sample.add_argument("--config", type=Path, help="TOML configuration file")
    sample.add_argument("--dataset", help="teacher, diabetes or digits (default teacher)")
    sample.add_argument("--n-train", type=int, help="training points")
    sample.add_argument("--n-test", type=int, help="test points")
    sample.add_argument("--noise-std", type=float, help="observation noise sd")
    sample.add_argument("--hidden", type=int, nargs="+", metavar="W", help="hidden widths")
    sample.add_argument("--activation", help="activation (default gelu)")
    sample.add_argument("--sampler", help="sampler name (default: the library's choice)")
    sample.add_argument("--parameterisation", choices=["repriorised", "standard"])
    sample.add_argument(
        "--collapsed",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="integrate the readout out (repriorised only; default on)",
    )
    sample.add_argument("--chains", type=int, help="number of chains (default 4)")
    sample.add_argument("--warmup", type=int, help="warm-up steps (default 500)")
    sample.add_argument("--samples", type=int, help="draws per chain (default 1000)")
    sample.add_argument("--thinning", type=int, help="keep every n-th draw (default 1)")
    sample.add_argument("--seed", type=int, help="random seed (default 0)")
    sample.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="sampler option, e.g. --option step_size=0.1 (repeatable; JSON values)",
    )
    sample.add_argument("--out", type=Path, help="output directory (required)")
    sample.add_argument("--checkpoint-dir", type=Path, help="default OUT/checkpoints")
    sample.add_argument(
        "--chunk-size",
        type=int,
        help="draws per compiled chunk, i.e. per checkpoint (default: about 1/20 of the run)",
    )
    sample.add_argument(
        "--devices",
        help="spread the chains over devices: 'all' or a number of devices (default: one)",
    )
    sample.add_argument(
        "--data-shards",
        type=int,
        help="also split the training points over this many of the devices (default: 1)",
    )
    sample.add_argument(
        "--threads",
        type=int,
        help="run the chains in this many groups at once, one host thread each (default: "
        "one per core)",
    )
    sample.add_argument(
        "--report", action=argparse.BooleanOptionalAction, default=None, help="write a report"
    )

    rep = commands.add_parser(
        "report",
        parents=[common],
        help="(re)build the HTML/Markdown report of a run directory",
        description="Read RUN_DIR/runs/*.nc (and sweep.csv if present) and write "
        "report.html and report.md.",
    )
    rep.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="directory of a run")
    rep.add_argument("--out", type=Path, help="output directory (default RUN_DIR)")
    rep.add_argument("--title", help="report title")
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("wide-bnn")
    except Exception:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (0 ok, 2 user error, 130 interrupted)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        import jax

        jax.config.update("jax_enable_x64", not args.float32)
        handler = {"demo": _demo, "sample": _sample, "report": _report}[args.command]
        with warnings.catch_warnings():
            # An application shows warnings (once per place) instead of failing on them.
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            return handler(args)
    except KeyboardInterrupt:
        print("wide-bnn: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(f"wide-bnn: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE


def _one_line(exc: BaseException) -> str:
    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, CLIError | ValueError | FileNotFoundError | tomllib.TOMLDecodeError):
        return message
    return f"{type(exc).__name__}: {message}"


def _echo(message: str) -> None:
    print(message, flush=True)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    # Library warnings (diagnostics, jitter) are part of the output: one line each.
    print(f"warning: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------
# demo


def _demo(args) -> int:
    from wide_bnn.datasets import load
    from wide_bnn.reporting import report
    from wide_bnn.sweep import width_sweep

    plan = dict(DEMO_QUICK if args.quick else DEMO)
    if args.dataset:
        plan["dataset"] = args.dataset
    for key, flag in (
        ("widths", "widths"),
        ("num_chains", "chains"),
        ("num_warmup", "warmup"),
        ("num_samples", "samples"),
    ):
        value = getattr(args, flag)
        if value is not None:
            plan[key] = value
    samplers = dict(plan["samplers"])
    if args.sampler_repriorised:
        samplers["repriorised"] = args.sampler_repriorised
    if args.sampler_standard:
        samplers["standard"] = args.sampler_standard
    dataset = load(plan["dataset"], n_train=plan["n_train"], n_test=plan["n_test"])
    out = args.out.resolve()
    _echo(
        f"wide-bnn demo: {dataset.name} (n_train {plan['n_train']}, n_test {plan['n_test']}), "
        f"widths {plan['widths']}, {plan['num_chains']} chains x {plan['num_samples']} draws "
        f"after {plan['num_warmup']} warm-up, repriorised "
        f"({samplers['repriorised'] or 'the default sampler per width'}) vs "
        f"standard ({samplers['standard']})"
    )
    sweep = width_sweep(
        plan["widths"],
        dataset,
        num_chains=plan["num_chains"],
        num_warmup=plan["num_warmup"],
        num_samples=plan["num_samples"],
        samplers=samplers,
        sampler_options=plan["sampler_options"],
        seed=args.seed,
        slice_points=plan["slice_points"],
        progress=not args.no_progress,
        log=_echo,
    )
    sweep.save(out)
    path = report(out, title=f"wide_bnn demo: width sweep on {dataset.name}")
    _echo(f"report written to {out} ({path.name}, report.md)")
    return 0


# ----------------------------------------------------------------------------
# sample


def _sample_config(args) -> dict[str, Any]:
    config = dict(SAMPLE_DEFAULTS)
    if args.config is not None:
        try:
            loaded = tomllib.loads(args.config.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise CLIError(f"--config file {os.fspath(args.config)!r} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            name = os.fspath(args.config)
            raise CLIError(f"--config file {name!r} is not valid TOML: {exc}") from exc
        unknown = sorted(set(loaded) - set(SAMPLE_DEFAULTS))
        if unknown:
            raise CLIError(
                f"--config has unknown key(s) {unknown}; known: {sorted(SAMPLE_DEFAULTS)}"
            )
        config.update(loaded)
    flags = {
        "dataset": args.dataset,
        "n_train": args.n_train,
        "n_test": args.n_test,
        "noise_std": args.noise_std,
        "hidden": args.hidden,
        "activation": args.activation,
        "sampler": args.sampler,
        "parameterisation": args.parameterisation,
        "collapsed": args.collapsed,
        "chains": args.chains,
        "warmup": args.warmup,
        "samples": args.samples,
        "thinning": args.thinning,
        "seed": args.seed,
        "out": args.out,
        "checkpoint_dir": args.checkpoint_dir,
        "chunk_size": args.chunk_size,
        "devices": args.devices,
        "data_shards": args.data_shards,
        "threads": args.threads,
        "report": args.report,
    }
    config.update({k: v for k, v in flags.items() if v is not None})
    options = dict(config["options"] or {})
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CLIError(f"--option must look like KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    config["options"] = options
    if config["out"] is None:
        raise CLIError("--out is required (or `out = ...` in the --config file)")
    hidden = config["hidden"]
    if isinstance(hidden, int):
        hidden = [hidden]
    if not hidden or not all(isinstance(w, int) and w > 0 for w in hidden):
        raise CLIError(f"hidden must be a list of positive widths, got {config['hidden']!r}")
    config["hidden"] = list(hidden)
    config["devices"] = _devices_setting(config["devices"])
    return config


def _devices_setting(value: Any) -> str | int | None:
    """``--devices`` / ``devices =``: ``None``, ``"all"`` or a positive number of devices."""
    if value is None or value == "all":
        return value
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise CLIError(f"devices must be 'all' or a positive number of devices, got {value!r}")


def _sample(args) -> int:
    from wide_bnn.datasets import load
    from wide_bnn.diagnostics import diagnose, save_inference_data, to_inference_data
    from wide_bnn.nets import mlp
    from wide_bnn.reporting import report
    from wide_bnn.sampling import sample
    from wide_bnn.sweep import nngp_moments

    config = _sample_config(args)
    out = Path(config["out"]).resolve()
    checkpoints = Path(config["checkpoint_dir"] or out / "checkpoints").resolve()
    size = {k: config[k] for k in ("n_train", "n_test", "noise_std") if config[k] is not None}
    dataset = load(config["dataset"], **size)
    data = dataset.train_data()
    x_test = dataset.test_inputs(data.dtype)
    net = mlp(hidden=tuple(config["hidden"]), out_dim=data.out_dim, activation=config["activation"])
    _echo(
        f"wide-bnn sample: {dataset.name} (n_train {data.num_points}), hidden {config['hidden']}, "
        f"{config['parameterisation']} / {config['sampler'] or 'default sampler'}, "
        f"{config['chains']} chains; checkpoints in {checkpoints}"
    )
    result = sample(
        net,
        data,
        x_test=x_test,
        sampler=config["sampler"],
        parameterisation=config["parameterisation"],
        collapsed=config["collapsed"],
        num_chains=config["chains"],
        num_warmup=config["warmup"],
        num_samples=config["samples"],
        thinning=config["thinning"],
        seed=config["seed"],
        progress=not args.no_progress,
        checkpoint_dir=os.fspath(checkpoints),
        chunk_size=config["chunk_size"],
        devices=config["devices"],
        data_shards=config["data_shards"],
        threads=config["threads"],
        **config["options"],
    )
    nngp = nngp_moments(net, data, x_test)
    idata = to_inference_data(result, nngp=nngp, extra_attrs={"dataset": dataset.name})
    sampler = result.settings.get("sampler", config["sampler"])
    label = f"w{max(config['hidden'])}-{config['parameterisation']}-{sampler}"
    (out / "runs").mkdir(parents=True, exist_ok=True)
    path = out / "runs" / f"{label}.nc"
    save_inference_data(idata, path)
    saved = {**config, "out": os.fspath(out), "checkpoint_dir": os.fspath(checkpoints)}
    (out / "config.json").write_text(json.dumps(saved, indent=2, default=str))
    diagnosis = diagnose(idata, emit=False)
    row = diagnosis.summary.loc["f_test"] if "f_test" in diagnosis.summary.index else None
    if row is not None:
        _echo(
            f"f_test ESS/draw min {row['ess_per_draw_min']:.3g}, median "
            f"{row['ess_per_draw_median']:.3g}; R-hat max {row['rhat_max']:.4g}"
        )
    for message in diagnosis.warnings:
        print(f"warning: {message}", file=sys.stderr)
    if not result.complete:
        _echo("the run was interrupted; re-run the same command to resume")
    _echo(f"draws saved to {path}")
    if config["report"]:
        html = report(out, title=f"wide_bnn run {label}")
        _echo(f"report written to {out} ({html.name}, report.md)")
    return 0


# ----------------------------------------------------------------------------
# report


def _report(args) -> int:
    from wide_bnn.reporting import report

    if not args.run_dir.is_dir():
        raise CLIError(f"RUN_DIR {os.fspath(args.run_dir)!r} is not a directory")
    out = args.out or args.run_dir
    path = report(args.run_dir, out, title=args.title)
    _echo(f"report written to {Path(out).resolve()} ({path.name}, report.md)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Where the time of one log-density gradient goes: XLA operations of a traced loop.

Runs ``--evals`` value-and-gradient evaluations of a sampling target (``wb.sample``'s own
``Target.logdensity_fn``, all chains vectorised with ``jax.vmap``, inside one jitted
``lax.scan``, as a gradient sampler would) on problem P1 (``datasets.teacher()``,
1-hidden-layer GELU MLP, float64), under ``jax.profiler``. Prints the wall time per
evaluation measured without the profiler, then the operations of the compiled program that
took the most time per evaluation, with their kind, output shape and the JAX operation
they came from.

The profiler's times are of operations inside the compiled program. A ``while`` row is a
loop, and the operations it runs are listed again on their own rows.

Usage::

    python benchmarks/profile_gradient.py                    # width 32, collapsed, 4 chains
    python benchmarks/profile_gradient.py --width 128 --no-collapsed
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import collections
import gzip
import json
import re
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
from _common import machine_info
from bench_floor import median_ms
from bench_p1 import load_problem, make_net

from wide_bnn import targets

#: ``%name = f64[4,33,33]{...} kind(...) ... op_name="jit(loop)/.../erfc"`` in HLO text.
_HLO_LINE = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\(.*?\)|\S+) ([\w\-]+)\(")
_LAYOUT = re.compile(r"\{[^}]*\}")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def scanned_gradients(target, evals):
    """A jitted ``(chains, dim) -> values`` running ``evals`` vmapped value-and-gradients."""
    value_and_grad = jax.vmap(jax.value_and_grad(target.logdensity_fn))

    def loop(positions):
        def body(positions, _):
            value, grad = value_and_grad(positions)
            # A tiny move keeps every evaluation dependent on the last (nothing hoisted).
            return positions + 1e-6 * grad, value

        return jax.lax.scan(body, positions, None, length=evals)[1]

    return jax.jit(loop)


def hlo_ops(compiled_text):
    """``{hlo op name: (kind, output shape, source)}`` from a compiled module's text."""
    ops = {}
    for line in compiled_text.splitlines():
        match = _HLO_LINE.match(line)
        if match:
            name, shape, kind = match.groups()
            source = _OP_NAME.search(line)
            path = source.group(1).split("/") if source else []
            shape = _LAYOUT.sub("", shape)
            shape = shape if len(shape) <= 20 else shape[:17] + "..."
            ops[name] = (kind, shape, "/".join(path[-2:]))
    return ops


def profile(fn, args, trace_dir):
    """Total microseconds and calls per HLO operation of one traced call of ``fn``."""
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        jax.block_until_ready(fn(*args))
    (trace_file,) = Path(trace_dir).rglob("*.trace.json.gz")
    events = json.loads(gzip.decompress(trace_file.read_bytes()))["traceEvents"]
    total, calls = collections.Counter(), collections.Counter()
    for event in events:
        op = event.get("args", {}).get("hlo_op")
        if event.get("ph") == "X" and op:
            total[op] += event.get("dur", 0.0)
            calls[op] += 1
    return total, calls


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--evals", type=int, default=200, help="evaluations per traced call")
    parser.add_argument("--collapsed", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--top", type=int, default=12, help="operations printed")
    parser.add_argument("--repeats", type=int, default=7, help="untraced timings (median)")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)

    _, data, x_test = load_problem("teacher", None)
    net = make_net(args.width, 1)
    target = targets.build_target(net, data, x_test=x_test, collapsed=args.collapsed)
    positions = jax.random.normal(jax.random.key(0), (args.chains, target.dim), jnp.float64)
    loop = scanned_gradients(target, args.evals)
    ops = hlo_ops(loop.lower(positions).compile().as_text())

    per_eval_ms = median_ms(loop, (positions,), calls=1, repeats=args.repeats) / args.evals

    with tempfile.TemporaryDirectory() as trace_dir:
        total, calls = profile(loop, (positions,), trace_dir)

    facts = machine_info()
    print(
        f"machine: {facts['cpu']} ({facts['cores']} cores), load {facts['load_average_at_start']}, "
        f"jax {facts['jax']}, commit {facts['git_commit']}"
    )
    print(
        f"width {args.width}, {'collapsed' if args.collapsed else 'non-collapsed'}, "
        f"{args.chains} chains, dim {target.dim}, route {target.repriorisation.route}: "
        f"{per_eval_ms:.3f} ms per value and gradient (median of {args.repeats}, untraced)"
    )
    print(f"{'ms/eval':>8} {'calls':>6}  {'operation':<28} {'kind':<14} {'shape':<20} from")
    # Operations run fewer than once per evaluation are the scan loop itself.
    per_eval = [(op, us) for op, us in total.most_common() if calls[op] >= args.evals]
    for op, us in per_eval[: args.top]:
        kind, shape, source = ops.get(op, ("?", "?", "?"))
        print(
            f"{us / args.evals / 1e3:8.4f} {calls[op] / args.evals:6.1f}  {op:<28} "
            f"{kind:<14} {shape:<20} {source}"
        )


if __name__ == "__main__":
    main()

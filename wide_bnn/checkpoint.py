"""Atomic on-disk checkpoints of a sampling run (used by :func:`wide_bnn.sample`).

Layout of a checkpoint directory:

``state.npz``
    the run's fingerprints (``config_fingerprint``: arguments, network, data and
    library version, checkable before anything is compiled; ``fingerprint``: the same
    plus the initial positions), the number of saved draws it covers, the chain
    states and the tuning states (written after warm-up and after every chunk);
``draws_<start>.npz``
    the recorded draws and statistics of the chunk starting at draw ``start``.

Every file is written to a temporary file in the same directory, flushed to disk and
moved into place with :func:`os.replace` (then the directory entry is synced), so a
crash, ``SIGKILL`` or Ctrl-C leaves either the old or the new file, never a torn one.
A kill during a write can leave a ``.tmp-*`` file behind; :func:`remove_stale_temporaries`
deletes them when the run restarts. A chunk file is written before the state that counts it, so the
state never refers to missing draws. PRNG keys (none are stored today, but states
may hold them) go through :func:`jax.random.key_data` / ``wrap_key_data``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, NamedTuple

import jax
import numpy as np

__all__ = [
    "Checkpoint",
    "check",
    "read",
    "remove_stale_temporaries",
    "write_chunk",
    "write_state",
]

STATE_FILE = "state.npz"
_FORMAT = "wide_bnn-checkpoint-1"
_TMP_PREFIX = ".tmp-"


class Checkpoint(NamedTuple):
    """What a checkpoint restores.

    Attributes
    ----------
    num_draws : int
        Saved draws per chain covered by the checkpoint.
    states : pytree
        Chain states after those draws (or after warm-up when ``num_draws == 0``).
    tuning : pytree
        Tuning states (frozen after warm-up; the kernel parameters derive from them).
    draws, stats : dict of str to numpy.ndarray
        ``(chain, num_draws, ...)`` recorded arrays and sampler statistics.
    """

    num_draws: int
    states: Any
    tuning: Any
    draws: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]


def chunk_file(start: int) -> str:
    """File name of the chunk starting at draw ``start``."""
    return f"draws_{start:09d}.npz"


def _write_atomic(path: str, arrays: dict[str, np.ndarray]) -> None:
    directory = os.path.dirname(path) or "."
    handle, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=".npz", dir=directory)
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)  # type: ignore[arg-type]  # numpy stub overloads
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Including KeyboardInterrupt: never leave temporaries behind.
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _sync_directory(directory)


def _sync_directory(directory: str) -> None:
    # Makes the rename itself durable (power loss); a no-op where directories cannot
    # be opened (Windows).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: str) -> list[str]:
    """Delete temporaries left by a run killed while writing; return their names.

    Only one run may use a checkpoint directory at a time, so any temporary present
    when a run starts belongs to a dead writer.
    """
    removed = []
    for name in sorted(os.listdir(directory)):
        if name.startswith(_TMP_PREFIX) and name.endswith(".npz"):
            os.remove(os.path.join(directory, name))
            removed.append(name)
    return removed


def _tree_arrays(prefix: str, tree: Any) -> dict[str, np.ndarray]:
    arrays = {}
    for i, leaf in enumerate(jax.tree_util.tree_leaves(tree)):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            arrays[f"{prefix}/{i}/key"] = np.asarray(jax.random.key_data(leaf))
        else:
            arrays[f"{prefix}/{i}"] = np.asarray(leaf)
    return arrays


def _tree_from(prefix: str, stored, template: Any) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten(template)
    restored = []
    for i, leaf in enumerate(leaves):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = stored[f"{prefix}/{i}/key"]
            value = jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        else:
            value = np.asarray(stored[f"{prefix}/{i}"])
            if value.dtype != leaf.dtype:
                raise ValueError(f"{prefix} leaf {i} has dtype {value.dtype}, not {leaf.dtype}")
        if value.shape != leaf.shape:
            raise ValueError(f"{prefix} leaf {i} has shape {value.shape}, not {leaf.shape}")
        restored.append(value)
    if len([k for k in stored if k.startswith(prefix + "/")]) != len(leaves):
        raise ValueError(f"{prefix} has the wrong number of leaves")
    return jax.tree_util.tree_unflatten(treedef, restored)


def write_state(
    directory: str,
    fingerprint: str,
    num_draws: int,
    states: Any,
    tuning: Any,
    *,
    config_fingerprint: str | None = None,
) -> None:
    """Atomically write the chain states and tuning states after ``num_draws`` draws."""
    arrays = {
        "format": np.asarray(_FORMAT),
        "fingerprint": np.asarray(fingerprint),
        "num_draws": np.asarray(num_draws, np.int64),
    }
    if config_fingerprint is not None:
        arrays["config_fingerprint"] = np.asarray(config_fingerprint)
    arrays.update(_tree_arrays("states", states))
    arrays.update(_tree_arrays("tuning", tuning))
    _write_atomic(os.path.join(directory, STATE_FILE), arrays)


def write_chunk(
    directory: str, start: int, draws: dict[str, np.ndarray], stats: dict[str, np.ndarray]
) -> None:
    """Atomically write one chunk of ``(chain, draw, ...)`` draws and statistics."""
    arrays = {f"draws/{k}": np.asarray(v) for k, v in draws.items()}
    arrays.update({f"stats/{k}": np.asarray(v) for k, v in stats.items()})
    _write_atomic(os.path.join(directory, chunk_file(start)), arrays)


def check(directory: str, config_fingerprint: str) -> int | None:
    """Validate a checkpoint directory cheaply, before anything is compiled.

    Reads ``state.npz`` and every chunk file it counts (which verifies their
    checksums) and compares the configuration fingerprint.

    Returns
    -------
    int or None
        Saved draws per chain covered by the checkpoint; ``None`` when there is none.

    Raises
    ------
    ValueError
        Naming ``checkpoint_dir``, like :func:`read`.
    """
    stored = _load_state(directory)
    if stored is None:
        return None
    # Checkpoints written before the configuration fingerprint existed are checked by
    # the full fingerprint in `read` only.
    if "config_fingerprint" in stored and str(stored["config_fingerprint"]) != config_fingerprint:
        raise _different_run(directory)
    try:
        num_draws = int(stored["num_draws"])
        if num_draws < 0:
            raise ValueError(f"num_draws is {num_draws}")
        _read_draws(directory, num_draws, None, None)
    except Exception as exc:
        raise _corrupt(directory, exc) from exc
    return num_draws


def _load_state(directory: str) -> dict[str, np.ndarray] | None:
    path = os.path.join(directory, STATE_FILE)
    if not os.path.exists(path):
        return None
    try:
        stored = _load_npz(path)
        if str(stored["format"]) != _FORMAT:
            raise ValueError(f"unknown format {stored['format']!s}")
        str(stored["fingerprint"])
    except Exception as exc:
        raise ValueError(
            f"checkpoint_dir={directory!r} holds a corrupt or unreadable checkpoint "
            f"({STATE_FILE}: {exc}); delete it or choose another checkpoint_dir"
        ) from exc
    return stored


def _load_npz(path: str) -> dict[str, np.ndarray]:
    # Our own file handle: np.load leaks its handle when the zip directory is unreadable.
    # Reading every member verifies the zip checksums (truncated or bit-flipped files).
    with open(path, "rb") as stream, np.load(stream, allow_pickle=False) as stored:
        return dict(stored)


def _different_run(directory: str) -> ValueError:
    return ValueError(
        f"checkpoint_dir={directory!r} holds a checkpoint of a different run (other "
        "arguments, data, network or library version); delete it or choose another "
        "checkpoint_dir"
    )


def _corrupt(directory: str, exc: Exception) -> ValueError:
    return ValueError(
        f"checkpoint_dir={directory!r} holds a corrupt or incomplete checkpoint "
        f"({exc}); delete it or choose another checkpoint_dir"
    )


def read(
    directory: str,
    fingerprint: str,
    states_template: Any,
    tuning_template: Any,
    draw_names: tuple[str, ...],
    stat_names: tuple[str, ...],
) -> Checkpoint | None:
    """Read the checkpoint in ``directory``; ``None`` when there is none yet.

    Raises
    ------
    ValueError
        Naming ``checkpoint_dir`` when the checkpoint belongs to a different run
        (fingerprint mismatch) or cannot be read (corrupt or incomplete files).
    """
    stored = _load_state(directory)
    if stored is None:
        return None
    if str(stored["fingerprint"]) != fingerprint:
        raise _different_run(directory)
    try:
        num_draws = int(stored["num_draws"])
        states = _tree_from("states", stored, states_template)
        tuning = _tree_from("tuning", stored, tuning_template)
        draws, stats = _read_draws(directory, num_draws, draw_names, stat_names)
    except Exception as exc:
        raise _corrupt(directory, exc) from exc
    return Checkpoint(num_draws, states, tuning, draws, stats)


def _read_draws(directory, num_draws, draw_names, stat_names):
    """Concatenate the chunk files covering ``num_draws``; names ``None``: check only."""
    check_only = draw_names is None
    draw_names = draw_names or ()
    stat_names = stat_names or ()
    pieces_draws: dict[str, list] = {name: [] for name in draw_names}
    pieces_stats: dict[str, list] = {name: [] for name in stat_names}
    position = 0
    while position < num_draws:
        path = os.path.join(directory, chunk_file(position))
        stored = _load_npz(path)
        expected = {f"draws/{n}" for n in draw_names} | {f"stats/{n}" for n in stat_names}
        if not stored or (not check_only and set(stored) != expected):
            raise ValueError(f"{chunk_file(position)} holds {sorted(stored)}")
        lengths = {value.shape[1] for value in stored.values()}
        if len(lengths) != 1 or next(iter(lengths)) < 1:
            raise ValueError(f"{chunk_file(position)} has inconsistent draw counts {lengths}")
        length = min(next(iter(lengths)), num_draws - position)
        for name in draw_names:
            pieces_draws[name].append(stored[f"draws/{name}"][:, :length])
        for name in stat_names:
            pieces_stats[name].append(stored[f"stats/{name}"][:, :length])
        position += length
    draws = {n: np.concatenate(v, axis=1) for n, v in pieces_draws.items() if v}
    stats = {n: np.concatenate(v, axis=1) for n, v in pieces_stats.items() if v}
    return draws, stats

"""The public surface: every name in __all__ imports and is documented; no import side effects."""

import inspect
import os
import subprocess
import sys
from collections.abc import Mapping

import wide_bnn as wb


def test_every_public_name_is_importable_and_documented():
    missing = [name for name in wb.__all__ if not hasattr(wb, name)]
    assert not missing
    undocumented = []
    for name in wb.__all__:
        obj = getattr(wb, name)
        if name.startswith("__") or isinstance(obj, str | tuple | Mapping):
            continue
        if not (inspect.getdoc(obj) or "").strip():
            undocumented.append(name)
    assert not undocumented, undocumented


def test_import_does_not_enable_x64():
    code = "import jax, wide_bnn; print(jax.config.read('jax_enable_x64'))"
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "False"

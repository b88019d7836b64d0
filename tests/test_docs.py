"""The documentation site builds without warnings and documents the whole public API.

The site is built once per session with ``mkdocs build --strict`` into a temporary
directory (never into the work tree). The API checks read the ids mkdocstrings gives
every rendered object (``id="wide_bnn.nets.mlp"``), so a public name missing from the
reference, or a module without a page, fails here rather than going unnoticed.

Locally the tests skip when the ``docs`` extra is not installed; under CI (``CI`` set)
a missing tool is an error, so the check cannot silently disappear.
"""

import ast
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import pytest

import wide_bnn as wb

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGE = ROOT / "wide_bnn"
DOC_TOOLS = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
_ID = re.compile(r'id="(wide_bnn(?:\.[A-Za-z0-9_]+)*)"')


def _require_doc_tools():
    missing = [name for name in DOC_TOOLS if importlib.util.find_spec(name) is None]
    if missing:
        message = f"documentation tools not installed: {missing} (pip install -e '.[docs]')"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    """Build the site once; return its directory (fails on any mkdocs warning)."""
    _require_doc_tools()
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


@pytest.fixture(scope="session")
def api_ids(site):
    """Every ``wide_bnn...`` anchor id rendered under the API reference."""
    ids = set()
    for page in (site / "api").rglob("*.html"):
        ids.update(_ID.findall(page.read_text(encoding="utf-8")))
    return ids


def _public_modules():
    """Module name -> its ``__all__``, for every non-private module of the package."""
    modules = {}
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name.startswith("_"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = []
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
            ):
                names = list(ast.literal_eval(node.value))
        modules[path.stem] = names
    return modules


def test_mkdocs_build_strict(site):
    assert (site / "index.html").is_file()
    assert (site / "theory" / "index.html").is_file()


def test_every_module_has_an_api_page():
    directives = set()
    for page in (DOCS / "api").glob("*.md"):
        directives.update(re.findall(r"^:::\s+(wide_bnn[\w.]*)", page.read_text(), re.M))
    missing = [m for m in _public_modules() if f"wide_bnn.{m}" not in directives]
    assert not missing, f"modules without a '::: wide_bnn.<module>' API page: {missing}"


def test_every_module_public_name_is_rendered(api_ids):
    missing = [
        f"wide_bnn.{module}.{name}"
        for module, names in _public_modules().items()
        for name in names
        if f"wide_bnn.{module}.{name}" not in api_ids
    ]
    assert not missing, f"public names missing from the API reference: {missing}"


def test_every_top_level_export_is_in_the_api_reference(api_ids):
    # A name exported by ``wide_bnn`` counts as documented when it is rendered at the
    # package level or in a module that lists it in its own ``__all__``.
    modules = _public_modules()
    missing = []
    for name in wb.__all__:
        homes = [f"wide_bnn.{m}.{name}" for m, names in modules.items() if name in names]
        if not any(anchor in api_ids for anchor in [f"wide_bnn.{name}", *homes]):
            missing.append(name)
    assert not missing, f"wide_bnn.__all__ names missing from the API reference: {missing}"


def test_sphinx_roles_are_tidied(site):
    # docs/hooks.py turns ":func:<code>x</code>" (a Sphinx role rendered literally) into code.
    leftovers = []
    for page in (site / "api").rglob("*.html"):
        if re.search(r":(func|class|meth|mod|data|attr|exc):<code>", page.read_text()):
            leftovers.append(page.relative_to(site).as_posix())
    assert not leftovers


def test_math_is_rendered_by_arithmatex(site):
    html = (site / "theory" / "index.html").read_text(encoding="utf-8")
    assert html.count('class="arithmatex"') > 20
    # The MathJax configuration must be shipped with the site.
    assert (site / "javascripts" / "mathjax.js").is_file()


def _python_blocks(page: Path):
    # ```python blocks are executed; ```py blocks (full-size runs, shell-like
    # fragments) are only highlighted.
    return re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), re.M | re.S)


@pytest.mark.parametrize(
    "page", sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if _python_blocks(p))
)
def test_python_snippets_in_docs_run(page):
    # Snippets are user code: run them under JAX's default rank promotion, not the
    # stricter setting of the test suite.
    namespace = {"__name__": "__docs__"}
    with jax.numpy_rank_promotion("allow"):
        for block in _python_blocks(DOCS / page):
            exec(compile(block, f"docs/{page}", "exec"), namespace)


def test_api_modules_import():
    # Pages reference modules by name; a typo or a removed module must fail loudly here too.
    for module in _public_modules():
        importlib.import_module(f"wide_bnn.{module}")


def _make_figures_module():
    spec = importlib.util.spec_from_file_location("make_figures", DOCS / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_figures_draws_the_headline_figure(tmp_path):
    pytest.importorskip("matplotlib")
    make_figures = _make_figures_module()
    rows = []
    for width in (32, 128, 512):
        for param, sampler, ess in (("repriorised", "pcn", 0.5), ("standard", "nuts", 0.01)):
            row = {"width": width, "parameterisation": param, "sampler": sampler}
            for variable in ("f_test", "f_test_mean"):
                row[f"{variable}_ess_per_draw_min"] = ess * width / 512
                row[f"{variable}_ess_per_s_min"] = 100 * ess
            rows.append(row)
    csv = tmp_path / "sweep.csv"
    import pandas as pd

    pd.DataFrame(rows).to_csv(csv, index=False)
    out = tmp_path / "figure.png"
    assert make_figures.main([str(csv), "--out", str(out), "--dpi", "50"]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")

    pd.DataFrame(rows).drop(columns=["f_test_ess_per_s_min"]).to_csv(csv, index=False)
    with pytest.raises(ValueError, match="f_test_ess_per_s_min"):
        make_figures.main([str(csv), "--out", str(out)])

"""MkDocs hook: tidy Sphinx-style roles left in NumPy docstrings.

The library's docstrings use Sphinx roles (``:func:`mlp```), which mkdocstrings
renders literally as ``:func:<code>mlp</code>``. Drop the role and, for the
``~`` shorthand, keep only the last dotted component, as Sphinx would.
"""

from __future__ import annotations

import re

_ROLE = re.compile(
    r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj|const):<code>(~?)([^<]*)</code>"
)


def _replace(match: re.Match) -> str:
    tilde, target = match.groups()
    text = target.rsplit(".", 1)[-1] if tilde else target
    return f"<code>{text}</code>"


def on_page_content(html: str, **kwargs) -> str:
    return _ROLE.sub(_replace, html)

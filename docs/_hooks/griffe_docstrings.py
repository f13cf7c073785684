"""Griffe extension for the API reference: makes Spectra's docstrings render as intended in Markdown.

Spectra's docstrings are written for ``help()`` and doctest (they run with the tests), with a few
reST habits. Without this, Markdown would turn a doctest line such as ``>>> x[0][1]`` into a
nested block quote with a reference link. On every object, before its docstring is parsed:

* each doctest block (a ``>>>`` line up to the next blank line) becomes a fenced ``pycon`` block,
  with ``# doctest: ...`` directives dropped;
* the Sphinx roles ``:func:`x```, ``:mod:`x```, ``:class:`x```, ... become code spans ``x``;
* a paragraph ending in the reST literal marker ``::`` ends in ``:`` (the indented block after it
  is already a Markdown code block).

Loaded by mkdocstrings (``mkdocs.yml`` → ``handlers.python.options.extensions``); never imported
by Spectra itself.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|mod|class|meth|attr|data|obj|exc|const):`~?([^`]+)`")
_DIRECTIVE = re.compile(r"\s*#\s*doctest:.*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def fence_doctests(text: str) -> str:
    """Wrap doctest blocks in ```pycon fences and rewrite reST roles; fenced code is left alone."""
    out: list[str] = []
    lines = text.split("\n")
    i, in_fence = 0, False
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            in_fence = not in_fence
            out.append(line)
            i += 1
            continue
        stripped = line.lstrip()
        if not in_fence and stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            block: list[str] = []
            while i < len(lines) and lines[i].strip():
                cleaned = _DIRECTIVE.sub("", lines[i])
                if cleaned.strip() != "...":  # a continuation line that only carried a directive
                    block.append(cleaned)
                i += 1
            if out and out[-1].strip():
                out.append("")
            out += [f"{indent}```pycon", *block, f"{indent}```"]
            continue
        if not in_fence:
            line = _ROLE.sub(r"`\1`", line)
            if line.endswith("::") and not line.endswith(" ::") and stripped != "::":
                line = line[:-1]
        out.append(line)
        i += 1
    return "\n".join(out)


class SpectraDocstrings(griffe.Extension):
    """Rewrites every docstring once the object tree is built, before mkdocstrings parses it."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        # The package itself (``spectra/__init__.py``); rewriting twice is harmless (idempotent).
        self.on_object(obj=pkg)

"""MkDocs hook: the API reference of Spectra's pybind11 classes, rendered from their docstrings.

mkdocstrings reads the Python sources statically, so it cannot see the classes that live in the
compiled ``spectra._core`` (``HookRegistry``, ``PositionSampler``, ``RunningMoments``,
``SecondMoments``). At build time this hook imports them (the CLI reference imports ``spectra``
anyway) and replaces the marker ``<!-- spectra-native-classes -->`` in a page with their
constructor signatures, class docstrings and methods, so that page stays as current as the
build it documents.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
from pathlib import Path
from typing import Any

MARKER = "<!-- spectra-native-classes -->"
CLASSES = ("HookRegistry", "PositionSampler", "RunningMoments", "SecondMoments")

_INT = re.compile(r"typing\.SupportsInt \| typing\.SupportsIndex")
_FLOAT = re.compile(r"typing\.SupportsFloat \| typing\.SupportsIndex")


def _docstrings_module():
    """docs/_hooks/griffe_docstrings.py, for its doctest fencing (not importable as a package)."""
    name = "_spectra_docs_griffe_docstrings"
    if name not in sys.modules:
        path = Path(__file__).with_name("griffe_docstrings.py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _clean_signature(signature: str, cls: str) -> str:
    signature = re.sub(rf"self: spectra\._core\.{cls}(, )?", "", signature)
    signature = _INT.sub("int", _FLOAT.sub("float", signature))
    return signature.replace("spectra._core.", "").replace("collections.abc.", "")


def _split_pybind_doc(doc: str | None, cls: str) -> tuple[str | None, str]:
    """pybind11 puts the signature on the docstring's first line: (signature, the rest)."""
    doc = inspect.cleandoc(doc or "")
    first, _, rest = doc.partition("\n")
    if "(" in first and first.split("(", 1)[0].isidentifier():
        return _clean_signature(first, cls), inspect.cleandoc(rest)
    return None, doc


def render_class(cls: type) -> str:
    fence = _docstrings_module().fence_doctests
    name = cls.__name__
    init_sig, _ = _split_pybind_doc(cls.__init__.__doc__, name)
    lines = [f"## `spectra.{name}` {{ #spectra.{name} }}", ""]
    if init_sig:
        lines += ["```python", init_sig.replace("__init__", name, 1).replace(" -> None", ""), "```", ""]
    lines += [fence(inspect.cleandoc(cls.__doc__ or "")), ""]
    properties, methods = [], []
    for attr, value in vars(cls).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, property):
            properties.append(attr)
        elif callable(value):
            methods.append((attr, value))
    if properties:
        lines += ["**Read-only properties:** " + ", ".join(f"`{p}`" for p in properties), ""]
    for attr, method in methods:
        signature, doc = _split_pybind_doc(method.__doc__, name)
        lines += [f"### `{name}.{attr}` {{ #spectra.{name}.{attr} }}", ""]
        lines += ["```python", signature or f"{attr}(...)", "```", ""]
        if doc:
            lines += [fence(doc), ""]
    return "\n".join(lines)


def render() -> str:
    import spectra

    missing = [name for name in CLASSES if not hasattr(spectra, name)]
    if missing:
        raise RuntimeError(f"spectra has no {', '.join(missing)}: is the native module built? (make setup)")
    return "\n\n".join(render_class(getattr(spectra, name)) for name in CLASSES)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render())

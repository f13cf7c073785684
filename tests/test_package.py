"""The package's top level: light, complete, and only the modules that belong there."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import spectra

PACKAGE = Path(spectra.__file__).resolve().parent


def test_the_top_level_holds_only_the_entry_points():
    """The entry points, the native loader, and ``defaults``: constants that import nothing, so that
    every layer (down to the ops, and the CLI without torch) shares one value."""
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert modules == ["__init__.py", "__main__.py", "_native.py", "cli.py", "defaults.py", "info.py"], modules
    tree = ast.parse((PACKAGE / "defaults.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def test_import_spectra_imports_neither_torch_nor_transformers():
    code = "import sys, spectra; print(sorted({'torch', 'transformers', 'pandas'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("name", spectra.__all__)
def test_every_public_name_resolves(name):
    assert getattr(spectra, name) is not None


def test_subpackages_and_aliases_are_attributes():
    import spectra.heads.stats
    import spectra.models.zoo

    assert spectra.geometry.__name__ == "spectra.geometry"
    assert spectra.stats is spectra.heads.stats and spectra.zoo is spectra.models.zoo
    assert spectra.experiments.scale_sweep is spectra.interventions.scale_sweep
    assert "geometry" in dir(spectra)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        spectra.nonexistent  # noqa: B018

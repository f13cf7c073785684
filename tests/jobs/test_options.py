"""The job kinds' options are declared once: the engines' KEYS, the command line and the docs tables
all come from spectra.jobs.<kind>.options; the command line stays light."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import spectra
from spectra.engine import kind_module
from spectra.jobs.option_tables import KIND_OPTIONS, markdown
from spectra.jobs.options import keys

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", sorted(KIND_OPTIONS))
def test_kind_keys_come_from_its_options(kind):
    assert kind_module(kind).KEYS == keys(KIND_OPTIONS[kind])


@pytest.mark.parametrize("kind", sorted(KIND_OPTIONS))
def test_docs_options_table_is_current(kind):
    text = (ROOT / "docs" / "distributed.md").read_text()
    match = re.search(rf"<!-- options:{kind}:begin -->\n(.*?)\n<!-- options:{kind}:end -->", text, re.S)
    assert match, f"docs/distributed.md lost its options:{kind} markers"
    assert match.group(1) == markdown(kind), (
        f"docs/distributed.md's {kind} options table is stale; paste spectra.jobs.option_tables.markdown({kind!r}) "
        "between the markers"
    )


def _spectra(*args: str) -> subprocess.CompletedProcess:
    code = (
        "import sys, runpy; sys.argv = ['spectra', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('spectra', run_name='__main__')\n"
        "except SystemExit as exit:\n    code = exit.code\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'pandas') if m in sys.modules)\n"
        "print('HEAVY', heavy)\nsys.exit(code)"
    )
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["profile"],
        ["capture"],
        ["sweep"],
        ["dynamics"],
        ["taxonomy"],
        ["geometry"],
        ["plasticity"],
        ["report"],
        ["run"],
        ["demo"],
        ["info"],
    ],
)
def test_help_imports_no_torch(command):
    done = _spectra(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout, f"spectra {' '.join(command)} --help imports {done.stdout.splitlines()[-1]}"


def test_version():
    done = _spectra("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"spectra {spectra.__version__}"

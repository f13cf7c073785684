"""The notebooks in notebooks/: committed without outputs, each with a "Use your own model" cell, and
each runs end to end on a fresh kernel, offline, in under a minute."""

import re
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
EXPECTED = {"01_capture", "02_profile", "03_interventions", "04_taxonomy_dynamics", "05_qk_geometry", "06_plasticity"}
#: Seconds one notebook may take from kernel start to the last cell (on 2 CPU cores, embedded models).
TIME_LIMIT_S = 60.0
IDS = [p.name for p in NOTEBOOKS]


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no .ipynb file"
    assert EXPECTED <= {p.stem for p in NOTEBOOKS}, (
        f"missing notebooks: {sorted(EXPECTED - {p.stem for p in NOTEBOOKS})}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [
        i
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{path.name}: code cells {dirty} hold outputs or an execution count; strip them "
        "(e.g. jupyter nbconvert --clear-output --inplace)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_has_the_use_your_own_model_cell(path):
    cells = nbformat.read(path, as_version=4).cells
    marks = [
        i
        for i, cell in enumerate(cells)
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("## Use your own model")
    ]
    assert marks, f'{path.name}: no markdown cell starting with "## Use your own model"'
    # The first code cell after the heading sets MODEL, says it may be a local folder, and comes
    # before any other code, so that pointing the notebook at a checkpoint is a one-line change.
    first_code = next((i for i in range(len(cells)) if cells[i].cell_type == "code"), None)
    setting = next((i for i in range(marks[0] + 1, len(cells)) if cells[i].cell_type == "code"), None)
    assert setting is not None and setting == first_code, f"{path.name}: the MODEL cell must be the first code cell"
    source = cells[setting].source
    assert re.search(r"^MODEL = \"[^\"]+\"\s+# or a local folder such as ", source, re.M), (
        f"{path.name}: the cell after the heading must set MODEL = \"...\"  # or a local folder such as ...; got\n{source}"
    )
    rest = "\n".join(c.source for c in cells[setting + 1 :] if c.cell_type == "code")
    assert re.search(r"\bMODEL\b", rest), f"{path.name}: no later code cell uses MODEL"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_executes(path, tmp_path, monkeypatch, record_property):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    seconds = time.perf_counter() - start
    record_property("execution_seconds", round(seconds, 1))
    print(f"{path.name}: executed in {seconds:.1f} s")
    errors = [
        o
        for cell in notebook.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
        if o.output_type == "error"
    ]
    assert not errors
    assert seconds <= TIME_LIMIT_S, f"{path.name} took {seconds:.1f} s to execute; the limit is {TIME_LIMIT_S:.0f} s"

"""The conformance matrix over every causal-LM model type of the installed transformers (plus bert and
roberta): statuses are well formed, the families Spectra has long supported stay supported, and
docs/supported-models.md carries exactly the generated table."""

from __future__ import annotations

from pathlib import Path

import pytest

from spectra.models import conformance

DOC = Path(__file__).resolve().parents[2] / "docs" / "supported-models.md"
REGENERATE = ".venv/bin/python -m spectra.models.conformance --write docs/supported-models.md --readme README.md"
KNOWN_SUPPORTED = (
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma2",
    "gemma3_text",
    "smollm3",
    "phi",
    "gpt_neox",
    "gpt2",
    "bert",
)


@pytest.fixture(scope="module")
def frame():
    return conformance.matrix()


def test_every_type_has_one_row(frame):
    assert list(frame["model_type"]) == conformance.model_types()
    assert {"bert", "roberta"} <= set(frame["model_type"])


def test_statuses_and_reasons(frame):
    assert set(frame["status"]) <= set(conformance.STATUSES)
    for row in frame.itertuples():
        if row.status != conformance.SUPPORTED:
            assert str(row.reason).strip(), f"{row.model_type}: status {row.status!r} without a reason"
        else:
            assert row.max_entropy_error <= conformance.ENTROPY_TOL, row


@pytest.mark.parametrize("model_type", KNOWN_SUPPORTED)
def test_known_families_supported(frame, model_type):
    row = frame.set_index("model_type").loc[model_type]
    assert row.status == conformance.SUPPORTED, f"{model_type}: {row.status}: {row.reason}"


def test_doc_carries_the_table(frame):
    table = conformance.table_in(DOC.read_text()) if DOC.exists() else None
    assert table is not None, f"{DOC} has no conformance markers; regenerate it with `{REGENERATE}`"
    expected = conformance.markdown(frame)
    if table != expected:
        old, new = set(table.splitlines()), set(expected.splitlines())
        changed = sorted(new - old)[:10]
        pytest.fail(
            f"docs/supported-models.md's conformance table is out of date ({len(new - old)} lines differ, e.g. "
            f"{changed}); regenerate it with `{REGENERATE}`",
            pytrace=False,
        )


def test_markdown_counts_line():
    import pandas as pd

    frame = pd.DataFrame(
        [
            conformance.Row("b", conformance.UNSUPPORTED, "x").__dict__,
            conformance.Row("a", conformance.SUPPORTED).__dict__,
            conformance.Row("c", conformance.NOT_BUILDABLE, "y | z").__dict__,
        ]
    )
    text = conformance.markdown(frame)
    lines = text.splitlines()
    assert lines[2].startswith("| `a` | supported")
    assert lines[3].startswith("| `b` | unsupported")
    assert "y \\| z" in lines[4]
    assert text.endswith("1 supported, 0 not applicable, 1 unsupported, 1 not buildable, out of 3 types.")


def test_readme_lists_the_passing_types(frame):
    readme = DOC.parents[1] / "README.md"
    listed = conformance.list_in(readme.read_text())
    assert listed is not None, f"README.md has no conformance-list markers; regenerate with `{REGENERATE}`"
    assert listed == conformance.supported_list(frame), (
        f"README.md's list is out of date; regenerate with `{REGENERATE}`"
    )

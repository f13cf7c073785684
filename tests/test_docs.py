"""Documentation that is generated from code must match the code."""

import re
from pathlib import Path

from spectra import models

ROOT = Path(__file__).resolve().parents[1]


def test_readme_supported_architectures_table_is_current():
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- supported-architectures:begin[^>]*-->\n(.*?)\n<!-- supported-architectures:end -->", readme, re.S)
    assert match, "README.md lost its supported-architectures markers"
    assert match.group(1) == models.supported_table(), (
        "README.md's supported-architectures table is stale; paste spectra.models.supported_table() between the markers"
    )

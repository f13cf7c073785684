"""Documentation that is generated from code must match the code, and the site must build offline.

``test_site_builds_offline`` runs ``mkdocs build --strict`` (what ``make docs`` runs) into a
temporary folder, so ``make test`` proves ``make docs`` works; the other site tests read that build.
"""

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from spectra import models

ROOT = Path(__file__).resolve().parents[1]
TABLE_MARKERS = re.compile(
    r"<!-- supported-architectures:begin[^>]*-->\n(.*?)\n<!-- supported-architectures:end -->", re.S
)
EXTERNAL = re.compile(r"^(https?:)?//", re.I)


def supported_table_in(path: Path) -> str:
    match = TABLE_MARKERS.search(path.read_text())
    assert match, f"{path.relative_to(ROOT)} lost its supported-architectures markers"
    return match.group(1)


def test_readme_supported_architectures_table_is_current():
    assert supported_table_in(ROOT / "README.md") == models.supported_table(), (
        "README.md's supported-architectures table is stale; paste spectra.models.supported_table() between the markers"
    )


def test_docs_supported_models_table_is_current():
    assert supported_table_in(ROOT / "docs" / "supported-models.md") == models.supported_table(), (
        "docs/supported-models.md's table is stale; paste spectra.models.supported_table() between the markers"
    )


# ---- the site ----
@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built exactly as `make docs` builds it (strict: any warning fails), into a tmp dir."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return out


def page(site: Path, name: str) -> str:
    path = site / name / "index.html"
    assert path.is_file(), f"the site has no page {name}/"
    return path.read_text()


def test_site_builds_offline(site):
    assert (site / "index.html").is_file()
    assert (site / "search" / "search_index.json").is_file()


def test_api_reference_is_generated_from_docstrings(site):
    html = page(site, "reference/api/plasticity")
    assert 'id="spectra.plasticity.analyze_head"' in html
    assert "Attention plasticity of one head" in html  # the first line of analyze_head's docstring
    assert 'id="spectra.capture.probe.Probe"' in page(site, "reference/api/capture")
    assert 'id="spectra.metrics.profile.profile"' in page(site, "reference/api/metrics")
    # One page per subpackage, named after it, documenting that subpackage's modules.
    for package in (
        "jobs",
        "engine",
        "report",
        "figures",
        "interventions",
        "heads",
        "geometry",
        "plasticity",
        "metrics",
        "capture",
        "io",
        "data",
        "models",
        "ops",
        "testing",
    ):
        assert f'id="spectra.{package}' in page(site, f"reference/api/{package}"), package
    # Doctest examples are rendered as code, not as Markdown block quotes (">>> " read as quoting).
    quoted = [
        p.parent.name for p in (site / "reference" / "api").glob("*/index.html") if "<blockquote>" in p.read_text()
    ]
    assert not quoted, f"doctests rendered as block quotes on the API pages of {quoted}"
    # The pybind11 classes of spectra._core, which static analysis cannot see.
    top = page(site, "reference/api/spectra")
    for name in ("HookRegistry", "PositionSampler", "RunningMoments", "SecondMoments"):
        assert f'id="spectra.{name}"' in top, name


def test_cli_reference_lists_every_command(site):
    from spectra.cli import main

    html = page(site, "reference/cli")
    assert main.commands, "spectra.cli.main has no subcommands"
    for name, command in main.commands.items():
        if command.hidden:
            continue
        assert f"spectra {name}" in html, f"`spectra {name}` is missing from the CLI reference"
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and not getattr(param, "hidden", False):
                    assert opt in html, f"`spectra {name} {opt}` is missing from the CLI reference"
    assert "spectra plasticity [OPTIONS]" in html


class _Resources(HTMLParser):
    """Every URL a browser would fetch by itself: stylesheets, scripts, images, fonts, frames."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if (
            tag == "link"
            and attrs.get("href")
            and not {"canonical", "alternate"} & set((attrs.get("rel") or "").split())
        ):
            self.urls.append(attrs["href"])
        if tag in ("script", "img", "iframe", "source", "audio", "video", "embed") and attrs.get("src"):
            self.urls.append(attrs["src"])
        if tag == "object" and attrs.get("data"):
            self.urls.append(attrs["data"])


CSS_URL = re.compile(r"""(?:@import\s+(?:url\()?|url\()\s*["']?([^"')\s]+)""", re.I)


def test_site_loads_nothing_from_the_network(site):
    external: list[str] = []
    for html_file in site.rglob("*.html"):
        parser = _Resources()
        parser.feed(html_file.read_text())
        external += [f"{html_file.relative_to(site)}: {url}" for url in parser.urls if EXTERNAL.match(url)]
    for css_file in site.rglob("*.css"):
        external += [
            f"{css_file.relative_to(site)}: {url}"
            for url in CSS_URL.findall(css_file.read_text())
            if EXTERNAL.match(url)
        ]
    assert not external, "the site fetches external resources:\n" + "\n".join(external[:20])
    assert "fonts.googleapis.com" not in page(site, "getting-started")

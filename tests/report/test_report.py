"""spectra.report: a self-contained HTML report for the result folder of every Spectra job.

The result folders are real, made once per module with the smallest settings of each job (in
process, through the CLI); the browser side is tests/report/test_report_browser.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from spectra.cli import main
from spectra.jobs.demo import run_demo
from spectra.models import zoo
from spectra.models.loading import load_model
from spectra.models.random_init import tiny_model
from spectra.report.html import (
    _script_json,
    attention_data,
    attention_weights,
    build_report_data,
    figure_caption,
    find_figures,
    read_result,
    write_report,
)

SWEEP_CONFIG = """experiment: gain_map
model: tiny-llama
context_length: 32
n_samples: 2
batch_size: 2
alphas: [0.5, 1.0, 1.5]
n_bootstrap: 20
"""


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """A result folder of each kind: profile (the demo), geometry, plasticity, sweep, dynamics."""
    root = tmp_path_factory.mktemp("results")
    run_demo(context_length=64, n_samples=2, batch_size=2, out_dir=root / "profile", progress=False)
    _invoke(
        "geometry", "--model", "tiny-llama", "--n-examples", "1", "--max-length", "32", "--out", str(root / "geometry")
    )
    _invoke(
        "plasticity",
        "--model",
        "tiny-llama",
        "--n-examples",
        "1",
        "--max-length",
        "64",
        "--out",
        str(root / "plasticity"),
        "--quiet",
    )
    (root / "gain_map.yaml").write_text(SWEEP_CONFIG)
    _invoke("sweep", "--config", str(root / "gain_map.yaml"), "--out", str(root / "sweep"), "--quiet")
    checkpoints = [arg for path in zoo.checkpoint_paths("tiny-qwen3")[-2:] for arg in ("--checkpoints", str(path))]
    _invoke(
        "dynamics",
        *checkpoints,
        "--out",
        str(root / "dynamics"),
        "--context-length",
        "16",
        "--n-samples",
        "1",
        "--n-random",
        "1",
        "--random-block",
        "4",
        "--quiet",
    )
    return {kind: root / kind for kind in ("profile", "geometry", "plasticity", "sweep", "dynamics")}


@pytest.fixture(scope="module")
def reports(folders) -> dict[str, Path]:
    """``spectra report`` of each folder (the demo wrote its own)."""
    out = {"profile": folders["profile"] / "report.html"}
    for kind in ("geometry", "plasticity", "sweep", "dynamics"):
        assert _invoke("report", str(folders[kind])).strip() == f"spectra report: {folders[kind] / 'report.html'}"
        out[kind] = folders[kind] / "report.html"
    return out


def embedded(report: Path) -> dict:
    """The JSON the page's script reads."""
    text = report.read_text(encoding="utf-8")
    return json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)[1])


KINDS = ("profile", "geometry", "plasticity", "sweep", "dynamics")


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_result_folder_gets_a_report(kind, folders, reports):
    assert read_result(folders[kind]).kind == kind
    data = embedded(reports[kind])
    grid = data["grid"]
    n_layers, n_heads = 4, 8  # tiny-llama and tiny-qwen3
    assert (grid["n_layers"], grid["n_heads"]) == (n_layers, n_heads)
    assert grid["metrics"] and grid["default_metric"] == grid["metrics"][0]
    for values in grid["values"].values():
        assert len(values) == n_layers and all(len(row) == n_heads for row in values)
    assert any(v is not None for row in grid["values"][grid["default_metric"]] for v in row)
    # Every cell's tooltip names a class (taxonomy, or PC0 for geometry runs).
    texts = [t for row in grid["classes"] for t in row]
    assert len(texts) == n_layers * n_heads and all(t.startswith("taxonomy class: ") for t in texts), texts[:2]
    if kind == "geometry":
        assert all("; PC0 class: " in t for t in texts)
    if kind == "dynamics":
        assert all("taxonomy.csv (step 1600" in t for t in texts)
    # The viewer has the run's model, q of every head and k of every KV head.
    view = data["viewer"]
    assert view["available"], view.get("reason")
    assert view["model"] == ("tiny-qwen3" if kind == "dynamics" else "tiny-llama") or "step-001600" in view["model"]
    assert 1 <= len(view["samples"]) <= 3 and all(len(s["tokens"]) == view["n_tokens"] <= 64 for s in view["samples"])
    # Figures: every figure of the folder, captioned.
    html = reports[kind].read_text(encoding="utf-8")
    figures = find_figures(folders[kind])
    assert figures and html.count('<img src="data:image/png;base64,') == len(figures)
    for path in figures:
        assert figure_caption(path.name) in html
    # Metadata: the command line as one shell line.
    assert "<th>command_line</th>" in html


def test_sweep_and_dynamics_reports_show_intervention_and_dynamics_figures(reports):
    sweep = reports["sweep"].read_text(encoding="utf-8")
    assert "<h2>Intervention and gain</h2>" in sweep and "Gain heatmap" in sweep and "Gain fits" in sweep
    dynamics = reports["dynamics"].read_text(encoding="utf-8")
    assert "<h2>Training dynamics</h2>" in dynamics and "Norm divergence" in dynamics
    assert "gain_max_attn" in embedded(reports["sweep"])["grid"]["metrics"][0]


@pytest.mark.parametrize("kind", KINDS)
def test_report_is_self_contained(kind, reports):
    html = reports[kind].read_text(encoding="utf-8")
    assert not re.search(r"https?://", html), re.search(r".{60}https?://.{60}", html)
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", html)
    assert "@import" not in html and not re.search(r"url\((?!data:)", html)
    assert "<script src" not in html and '<link rel="stylesheet"' not in html
    assert html.count("<script") == 2  # the data and the inlined code


def test_python_weights_equal_the_models_eager_attention(reports):
    """attention_weights (what the page's JavaScript computes) against the model's own attention
    probabilities, for every layer, head, window and query."""
    view = embedded(reports["profile"])["viewer"]
    model, _ = load_model("tiny-llama", attn_implementation="eager")
    ids = torch.tensor([s["ids"] for s in view["samples"]])
    with torch.no_grad():
        attentions = model(ids, output_attentions=True).attentions
    worst = 0.0
    for layer in range(view["n_layers"]):
        for head in range(view["n_heads"]):
            for sample in range(len(view["samples"])):
                for query in range(view["n_tokens"]):
                    ours = attention_weights(view, layer, head, sample, query)
                    theirs = attentions[layer][sample, head, query].double().numpy()
                    worst = max(worst, float(np.abs(ours - theirs).max()))
    assert worst < 1e-5, worst


@pytest.mark.parametrize("family", ["gemma2", "bert", "qwen2"])
def test_python_weights_handle_softcap_windows_and_bidirectional_attention(family):
    """Soft-capping and sliding windows (gemma2), bidirectional attention (bert) and per-layer windows (qwen2)."""
    model = tiny_model(family, "eager")
    ids = torch.randint(1, 90, (2, 20), generator=torch.Generator().manual_seed(0))
    view = attention_data(model, None, ids)
    assert view["samples"][0]["tokens"][0] == f"#{int(ids[0, 0])}"
    if family == "gemma2":
        assert view["layers"][0]["softcap"] == 5.0 and any(layer["window"] == 8 for layer in view["layers"])
    if family == "bert":
        assert not view["layers"][0]["causal"]
    with torch.no_grad():
        attentions = model(ids, output_attentions=True).attentions
    for layer in range(view["n_layers"]):
        for head in range(view["n_heads"]):
            for query in range(20):
                ours = attention_weights(view, layer, head, 1, query)
                np.testing.assert_allclose(ours, attentions[layer][1, head, query].double().numpy(), atol=1e-5)


def test_viewer_keeps_the_page_small_for_large_models():
    model = tiny_model("llama", "eager")
    ids = torch.randint(1, 90, (3, 32), generator=torch.Generator().manual_seed(0))
    per_token = 2 * (4 + 2) * 24  # layers x (heads + kv heads) x head_dim
    view = attention_data(model, None, ids, max_values=per_token * 40)
    assert (len(view["samples"]), view["n_tokens"]) == (1, 32) and "kept 1 window" in view["note"]
    view = attention_data(model, None, ids, max_values=per_token * 10)
    assert (len(view["samples"]), view["n_tokens"]) == (1, 10)


def test_without_the_model_every_cell_says_why(folders, tmp_path):
    data = build_report_data(folders["profile"], with_model=False)
    assert not data["viewer"]["available"] and "--no-model" in data["viewer"]["reason"]
    assert all(
        t.startswith("no taxonomy class: ") and "--no-model" in t for row in data["grid"]["classes"] for t in row
    )
    # Geometry keeps its PC0 classes, dynamics its taxonomy.csv.
    geometry = build_report_data(folders["geometry"], with_model=False)
    assert all("PC0 class: " in t for row in geometry["grid"]["classes"] for t in row)
    dynamics = build_report_data(folders["dynamics"], with_model=False)
    assert all(t.startswith("taxonomy class: ") for row in dynamics["grid"]["classes"] for t in row)
    # A model that cannot be loaded: the report is written, the viewer and tooltips say why.
    page = write_report(folders["sweep"], tmp_path / "moved.html", model=str(tmp_path / "gone"))
    data = embedded(page)
    assert "could not be loaded" in data["viewer"]["reason"] and str(tmp_path / "gone") in data["viewer"]["reason"]
    assert all("could not be loaded" in t for row in data["grid"]["classes"] for t in row)


def test_cli_out_option_and_bad_input(folders, tmp_path):
    runner = CliRunner()
    out = tmp_path / "elsewhere.html"
    result = runner.invoke(main, ["report", str(folders["sweep"]), "--out", str(out), "--no-model"])
    assert result.exit_code == 0 and out.is_file(), result.output

    def error(*args: str) -> str:
        result = runner.invoke(main, ["report", *args])
        assert result.exit_code == 1, result.output
        return result.output

    assert "result_dir: " in error(str(tmp_path / "missing")) and "does not exist" in error(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"result_dir: {empty} is not a Spectra result folder (it has no meta.json)" in error(str(empty))
    capture = folders["geometry"] / "qk" / "tiny-llama"
    assert "a capture folder" in error(str(capture))
    assert "is a file" in error(str(out))
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "meta.json").write_text('{"tool": "something else"}')
    assert "not the result folder of a Spectra job" in error(str(unknown))
    (unknown / "meta.json").write_text("{not json")
    assert "is not valid JSON" in error(str(unknown))
    assert "out: " in error(str(folders["sweep"]), "--out", str(tmp_path / "no" / "such" / "dir.html"), "--no-model")
    with pytest.raises(FileNotFoundError, match="result_dir: "):
        write_report(tmp_path / "missing")
    with pytest.raises(ValueError, match="out: .* is a folder"):
        write_report(folders["sweep"], tmp_path, with_model=False)
    assert not list(folders["sweep"].glob(".*.tmp"))


def test_embedded_json_cannot_close_its_script_element():
    text = _script_json({"tokens": ["</script><script>alert(1)</script>", "<!--", "a & b"]})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text)["tokens"][0] == "</script><script>alert(1)</script>"

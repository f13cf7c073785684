"""kind: capture, geometry and plasticity on the engines (spectra.jobs.capture.kind / _geometry / _plasticity):
the local engine against run_capture, spectra geometry and spectra plasticity; a 2-worker local Ray
cluster against the local engine; resume; a worker killed mid-capture; config errors."""

from __future__ import annotations

import json
import os
import shutil
from functools import partial
from pathlib import Path

import pytest
from click.testing import CliRunner

from spectra.capture.store import SIDECAR, merge_captures, read_capture
from spectra.cli import main
from spectra.engine.core import LocalEngine, RayEngine, check_config, load_config, plan, read_stamp, run
from spectra.engine.faults import attempts, die_once
from spectra.jobs.capture.run import run_capture
from spectra.jobs.geometry import run as geometry_job
from spectra.jobs.plasticity import run as plasticity_job
from spectra.models import zoo
from spectra.models.loading import load_model

N_EXAMPLES, PER_SHARD, MAX_LENGTH = 3, 2, 32
CHECKPOINTS = [str(p) for p in zoo.checkpoint_paths("tiny-qwen3")[-2:]]
LABELS = ["tiny-llama", "tiny-qwen3-step-000800", "tiny-qwen3-step-001600"]
SHARDS = [f"shard-{i:05d}" for i in range((N_EXAMPLES + PER_SHARD - 1) // PER_SHARD)]
# capture: every kind and stage, and a random sampler (its draws depend on the example, not the shard)
CAPTURE = {
    "layers": "0,3",
    "capture": "q,k,v",
    "stages": ["post_rope", "pre_rope"],
    "positions": "uniform",
    "bucket_size": 8,
    "seed": 3,
}
HEADS = {"layers": [0, 3], "heads": [0, 5]}  # geometry, plasticity: a few heads keep the analyses quick
PAIRS_PER_CELL = 8  # plasticity: few draws per cell, likewise


def config(kind: str, out: Path, **overrides) -> dict:
    extra = {"capture": CAPTURE, "geometry": HEADS, "plasticity": {**HEADS, "pairs_per_cell": PAIRS_PER_CELL}}[kind]
    return {
        "kind": kind,
        "models": ["tiny-llama"],
        "checkpoints": CHECKPOINTS,
        "n_examples": N_EXAMPLES,
        "max_length": MAX_LENGTH,
        "examples_per_shard": PER_SHARD,
        "out": str(out),
        **extra,
        **overrides,
    }


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _stable_meta(raw: bytes) -> dict:
    """meta.json without what names this run's command and folders (creation time, command line, the
    capture folders' paths)."""
    meta = json.loads(raw)
    for key in ("created", "command_line"):
        meta.pop(key, None)
    for entry in meta.get("inputs", []):
        entry.pop("qk_dir", None)
    return meta


def assert_same_output(a: Path, b: Path, *, skip: tuple[str, ...] = ()) -> None:
    """Every file byte-identical (files under a ``skip`` prefix left out), except meta.json's volatile fields."""
    fa, fb = ({k: v for k, v in files_of(root).items() if not k.startswith(skip)} for root in (a, b))
    assert sorted(fa) == sorted(fb)
    for name in fa:
        if name.endswith("meta.json"):
            assert _stable_meta(fa[name]) == _stable_meta(fb[name]), name
        else:
            assert fa[name] == fb[name], name


def assert_complete(out: Path, labels=LABELS) -> None:
    """Every planned shard once and stamped, each example captured once, no temporary entries left."""
    for label in labels:
        shards = out / label / "shards"
        assert sorted(p.name for p in shards.iterdir()) == sorted([*SHARDS, "merged.json"])
        assert [read_stamp(shards / name)["task_id"] for name in SHARDS] == [f"{label}/{name}" for name in SHARDS]
        sidecar = json.loads((out / label / "capture" / SIDECAR).read_text())
        assert sidecar["n_examples"] == N_EXAMPLES
        q = read_capture(out / label / "capture", 3, 5, "q")
        pairs = list(zip(q.example_ids.tolist(), q.positions.tolist(), strict=True))
        assert len(pairs) == len(set(pairs)) == sidecar["rows"]["l03h05q/data.parquet"]
        assert sorted(set(q.example_ids.tolist())) == list(range(N_EXAMPLES))
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


# ---- the local engine against the single-machine commands -------------------------------------


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory):
    """Each kind with the local engine: the references every other engine must reproduce."""
    root = tmp_path_factory.mktemp("local")
    return {
        kind: (root / kind, run(config(kind, root / kind), LocalEngine(), progress=False, command_line=["x"]))
        for kind in ("capture", "geometry", "plasticity")
    }


def test_capture_equals_run_capture_with_a_random_sampler(local_runs, tmp_path):
    out, result = local_runs["capture"]
    assert list(result.results) == LABELS
    assert result.report.computed == [f"{label}/{name}" for label in LABELS for name in SHARDS]
    assert_complete(out)
    texts = geometry_job.heldout_examples(N_EXAMPLES, MAX_LENGTH)
    for label, model_name in (("tiny-llama", "tiny-llama"), ("tiny-qwen3-step-001600", CHECKPOINTS[-1])):
        model, tokenizer = load_model(model_name)
        whole = run_capture(
            model,
            tokenizer,
            texts,
            tmp_path / label,
            max_length=MAX_LENGTH,
            progress=False,
            layers=[0, 3],
            capture=("q", "k", "v"),
            stage=("post_rope", "pre_rope"),
            positions="uniform",
            bucket_size=8,
            seed=3,
        )
        assert result.results[label].sidecar == whole
        assert_same_output(out / label / "capture", tmp_path / label)  # byte for byte, sidecar included
    assert 0 < whole["rows"]["l00h00q/data.parquet"] < N_EXAMPLES * MAX_LENGTH  # the sampler did drop rows


def test_geometry_equals_spectra_geometry(local_runs, tmp_path):
    out, result = local_runs["geometry"]
    assert list(result.results) == [*LABELS, "geometry"]
    folders = [
        folder
        for model in ("tiny-llama", *CHECKPOINTS)
        for folder in geometry_job.capture_model(
            model, tmp_path / "qk", n_examples=N_EXAMPLES, max_length=MAX_LENGTH, **HEADS
        )
    ]
    for label, folder in zip(LABELS, folders, strict=True):
        assert_same_output(out / label / "capture", folder)
    cli = CliRunner().invoke(
        main,
        [
            "geometry",
            *[a for f in folders for a in ("--qk", str(f))],
            *[a for label in LABELS for a in ("--label", label)],
            "--out",
            str(tmp_path / "g"),
        ],
    )
    assert cli.exit_code == 0, cli.output
    assert_same_output(out / "geometry", tmp_path / "g")
    meta = json.loads((out / "geometry" / "meta.json").read_text())
    assert [entry["step"] for entry in meta["inputs"]] == [None, 800, 1600] and meta["command_line"] == ["x"]


def test_plasticity_equals_spectra_plasticity(local_runs, tmp_path):
    out, result = local_runs["plasticity"]
    assert list(result.results) == [*LABELS, "plasticity"]
    folders = [
        folder
        for model in ("tiny-llama", *CHECKPOINTS)
        for folder in plasticity_job.capture_model(
            model, tmp_path / "qk", n_examples=N_EXAMPLES, max_length=MAX_LENGTH, **HEADS
        )
    ]
    for label, folder in zip(LABELS, folders, strict=True):
        assert_same_output(out / label / "capture", folder)
    assert result.results["tiny-llama"].sidecar["sampler"]["bucket_size"] == MAX_LENGTH // 16
    cli = CliRunner().invoke(
        main,
        [
            "plasticity",
            *[a for f in folders for a in ("--qk", str(f))],
            *[a for label in LABELS for a in ("--label", label)],
            "--pairs-per-cell",
            str(PAIRS_PER_CELL),
            "--quiet",
            "--out",
            str(tmp_path / "p"),
        ],
    )
    assert cli.exit_code == 0, cli.output
    assert_same_output(out / "plasticity", tmp_path / "p")


# ---- resume -----------------------------------------------------------------------------------


def test_rerun_skips_and_keeps_the_merge_and_redoes_a_deleted_shard(local_runs, tmp_path):
    reference = local_runs["capture"][0]
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    files = sorted((out / "tiny-llama" / "capture").rglob("data.parquet"))
    stamps = [p.stat().st_mtime_ns for p in files]
    again = run(config("capture", out), LocalEngine(), progress=False)
    assert again.report.computed == [] and len(again.report.skipped) == len(LABELS) * len(SHARDS)
    assert not any(r.merged for r in again.results.values())  # the same shards: the merged folders are kept
    assert [p.stat().st_mtime_ns for p in files] == stamps
    shutil.rmtree(out / "tiny-llama" / "shards" / "shard-00001")
    leftover = out / "tiny-llama" / "shards" / ".shard-00001.123.deadbeef.tmp"  # a killed attempt's folder
    leftover.mkdir()
    (leftover / "data.parquet").write_bytes(b"PAR1 half")
    third = run(config("capture", out), LocalEngine(), progress=False)
    assert third.report.computed == ["tiny-llama/shard-00001"]
    assert [label for label, r in third.results.items() if r.merged] == ["tiny-llama"]
    assert_complete(out)
    assert_same_output(out, reference)


def test_a_changed_analysis_option_reuses_the_captures(local_runs, tmp_path):
    reference = local_runs["geometry"][0]
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    again = run(config("geometry", out, per_kind=True, n_planes=4), LocalEngine(), progress=False)
    assert again.report.computed == [] and (out / "geometry" / "correlations.csv").is_file()
    assert json.loads((out / "geometry" / "meta.json").read_text())["options"]["per_kind"] is True
    assert_same_output(out, reference, skip=("geometry", "run.json"))
    with pytest.raises(ValueError, match="another configuration"):  # a capture setting changes the shards
        run(config("geometry", out, max_length=16), LocalEngine(), progress=False)


def test_merge_refuses_shards_of_different_captures(local_runs, tmp_path):
    out = local_runs["capture"][0]
    with pytest.raises(ValueError, match="not a shard of the same capture .* differs in model"):
        merge_captures(
            [out / "tiny-llama" / "shards" / "shard-00000", out / "tiny-qwen3-step-000800" / "shards" / "shard-00001"],
            tmp_path / "merged",
        )
    with pytest.raises(FileNotFoundError, match="not a finished Spectra capture folder"):
        merge_captures([out / "tiny-llama" / "shards"], tmp_path / "merged")


# ---- Ray: a local cluster with 2 workers ------------------------------------------------------


def test_ray_two_workers_equal_the_local_engine(ray_cluster, local_runs, tmp_path):
    """plasticity (geometry captures through the same tasks; capture: below, with workers killed on the way)."""
    reference, local = local_runs["plasticity"]
    out = tmp_path / "run"
    result = run(config("plasticity", out), RayEngine(num_workers=2), progress=False, command_line=["y"])
    assert result.report.computed == local.report.computed
    assert os.getpid() not in result.report.pids
    assert_complete(out)
    assert_same_output(out, reference)


def test_ray_worker_killed_mid_capture_is_retried(ray_cluster, local_runs, tmp_path):
    out, markers = tmp_path / "run", tmp_path / "markers"
    doomed = "tiny-llama/shard-00001"
    runner = partial(die_once, marker_dir=str(markers), task_ids={doomed})
    engine = RayEngine(num_workers=2, max_retries=2, runner=runner)
    result = run(config("capture", out, checkpoints=[]), engine, progress=False)
    assert result.report.computed == ["tiny-llama/shard-00000", doomed]
    assert [attempts(markers, task_id) for task_id in result.report.computed] == [1, 2]
    assert_complete(out, ["tiny-llama"])  # the half-written temporary folder is gone, every shard is there once
    assert_same_output(out / "tiny-llama", local_runs["capture"][0] / "tiny-llama")


# ---- planning and configuration -----------------------------------------------------------------


def test_plan_orders_checkpoints_by_step_and_covers_every_example(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    for step, source in ((1000, CHECKPOINTS[1]), (500, CHECKPOINTS[0])):
        (series / f"checkpoint-{step}").symlink_to(source)
    tasks = plan(
        check_config({**config("geometry", tmp_path / "out", models=[], checkpoints=[str(series)]), "n_examples": 5})
    )
    assert [t.id for t in tasks] == [
        f"series-checkpoint-{step}/shard-0000{i}" for step in (500, 1000) for i in range(3)
    ]
    assert [t.samples for t in tasks[:3]] == [(0, 2), (2, 4), (4, 5)]
    assert [example for t in tasks[:3] for example, _ in t.data] == list(range(5))
    assert tasks[0].options["max_length"] == MAX_LENGTH
    assert tasks[0].relpath == "series-checkpoint-500/shards/shard-00000"


def test_data_file_and_max_length_defaults(tmp_path):
    data = tmp_path / "examples.jsonl"
    data.write_text("".join(json.dumps({"id": 10 + i, "text": f"Example number {i}."}) + "\n" for i in range(3)))
    tasks = plan(check_config({"kind": "capture", "models": ["tiny-llama"], "data": str(data), "out": str(tmp_path)}))
    assert [t.data for t in tasks] == [tuple((10 + i, f"Example number {i}.") for i in range(3))]
    assert tasks[0].options["max_length"] == 2048  # spectra capture's 4096, at most the model's context
    plasticity = plan(
        check_config({"kind": "plasticity", "models": ["tiny-llama"], "n_examples": 1, "out": str(tmp_path)})
    )
    assert (plasticity[0].options["max_length"], plasticity[0].options["bucket_size"]) == (2048, 128)


def test_config_errors_name_the_problem(tmp_path):
    base = {"models": ["tiny-llama"], "out": str(tmp_path)}
    for kind, bad, match in (
        ("capture", {"capture": "q,x"}, r"capture: 'q,x'; allowed values are q, k, v"),
        ("capture", {"stages": "after_rope"}, r"stages: 'after_rope'; allowed values are pre_rope, post_rope"),
        ("capture", {"positions": "random"}, r"positions: unknown sampler 'random'"),
        ("capture", {"examples_per_shard": 0}, r"examples_per_shard: expected an integer >= 1; got 0"),
        ("capture", {"data": str(tmp_path / "none.jsonl")}, r"data: .*none.jsonl is not a file"),
        ("capture", {"batch_size": 2}, r"unknown key\(s\) batch_size; allowed keys for kind capture are"),
        ("geometry", {"axis_b": "pca"}, r"axis_b: 'pca'; allowed values are centroid, eigen"),
        ("geometry", {"scatter_head": "2-5"}, r"scatter_head: expected \[layer, head\]"),
        ("geometry", {"hi": 2}, r"hi: expected a number in \[0, 1\]; got 2"),
        ("plasticity", {"max_length": 40}, r"n_buckets: must divide max_length = 40; got 16"),
        ("plasticity", {"covariance": "sparse"}, r"covariance: 'sparse'; allowed values are diagonal, full"),
        ("plasticity", {"max_tokens_per_head": 2}, r"max_tokens_per_head: expected an integer >= 3"),
    ):
        with pytest.raises(ValueError, match=match):
            check_config({"kind": kind, **base, **bad})
    for kind, bad, match in (
        ("capture", {"max_length": 4096}, r"max_length: 4096 exceeds the max_position_embeddings of tiny-llama"),
        ("geometry", {"layers": [9]}, r"layers: \[9\] out of range for tiny-llama"),
        ("capture", {"models": ["no-such-model"]}, r"model: '.*no-such-model' is neither a zoo model"),
    ):
        with pytest.raises(ValueError, match=match):
            plan(check_config({"kind": kind, **base, **bad}))
    (tmp_path / "geometry").mkdir()
    (tmp_path / "geometry" / "config.json").write_text((Path(CHECKPOINTS[0]) / "config.json").read_text())
    with pytest.raises(ValueError, match="labelled 'geometry' would share out/geometry/"):
        plan(check_config({"kind": "geometry", "models": [str(tmp_path / "geometry")], "out": str(tmp_path / "o")}))


def test_cli_run_capture(tmp_path):
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "kind": "capture",
                "models": ["tiny-llama"],
                "n_examples": 2,
                "max_length": 16,
                "layers": [0],
                "out": str(tmp_path / "out"),
            }
        )
    )
    result = CliRunner().invoke(main, ["run", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "1 task(s) computed, 0 skipped" in result.output
    assert "tiny-llama: 2 examples, 10 files, 320 rows -> " in result.output


def test_the_example_configs_plan():
    """configs/runs/{capture,geometry,plasticity}.yaml."""
    root = Path(__file__).parents[2] / "configs" / "runs"
    counts = {}
    for kind in ("capture", "geometry", "plasticity"):
        tasks = plan(check_config(load_config(root / f"{kind}.yaml")))
        assert len({t.id for t in tasks}) == len(tasks) and {t.kind for t in tasks} == {kind}
        counts[kind] = len(tasks)
    assert counts == {"capture": 7 * 4, "geometry": 6 * 2, "plasticity": 7 * 4}

"""``kind: sweep`` on the engines (spectra.jobs.sweep.kind): the local engine against ``run_sweep`` (a
scale sweep with local and propagated shards, and a two-stage qk_asymmetry whose heads come from a
gain map), a 2-worker local Ray cluster against the local engine (while workers are killed
mid-task), resume, and config errors."""

from __future__ import annotations

import json
import os
import shutil
from functools import partial
from pathlib import Path

import pandas as pd
import pytest

from spectra.engine import core as engine
from spectra.engine.core import LocalEngine, RayEngine, check_config, read_stamp, run
from spectra.engine.faults import attempts, die_once
from spectra.jobs.sweep.run import SweepConfig, run_sweep

SMALL = {"context_length": 32, "n_samples": 2, "batch_size": 2, "n_bootstrap": 50, "alphas": [0.5, 1.0, 1.5]}
SCALE = {"experiment": "scale_sweep", "heads": [[2, 0]], "control": [2, 5], "modes": ["local", "propagated"], **SMALL}
QK = {"experiment": "qk_asymmetry", "heads": "from_gain_map", **SMALL}  # modes: propagated, kinds: q, k
SCALE_IDS = ["tiny-llama/local", "tiny-llama/propagated-L002H000", "tiny-llama/propagated-L002H005"]
VOLATILE_META = ("created", "command_line")  # the only things allowed to differ between two runs


def run_config(settings: dict, out: Path, **overrides) -> dict:
    return {"kind": "sweep", "models": ["tiny-llama"], **settings, "out": str(out), **overrides}


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def without_volatile(raw: bytes) -> dict:
    meta = json.loads(raw)
    for key in VOLATILE_META:
        meta.pop(key)
    return meta


def assert_same_output(a: Path, b: Path) -> None:
    """Every file byte-identical, except meta.json's creation time and command line."""
    fa, fb = files_of(a), files_of(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        if name.endswith("meta.json"):
            assert without_volatile(fa[name]) == without_volatile(fb[name]), name
        else:
            assert fa[name] == fb[name], name


def assert_same_as_spectra_sweep(mine: Path, plain: Path) -> None:
    """What ``spectra sweep`` wrote, byte for byte, but the shards: the same rows, plus the task stamp."""
    fa, fb = files_of(mine), files_of(plain)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        if name == "meta.json":
            assert without_volatile(fa[name]) == without_volatile(fb[name])  # same run_hash: --resume accepts it
        elif name.startswith("shards/"):
            pd.testing.assert_frame_equal(pd.read_parquet(mine / name), pd.read_parquet(plain / name))
            assert read_stamp(mine / name)["task_id"] == "tiny-llama/" + Path(name).stem
            assert read_stamp(plain / name) is None
        else:
            assert fa[name] == fb[name], name


# ---- the local engine against spectra sweep ---------------------------------------------------


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory):
    """Both experiments with the local engine: the reference every other engine must reproduce."""
    root = tmp_path_factory.mktemp("local")
    return {
        name: (root / name, run(run_config(settings, root / name), LocalEngine(), progress=False))
        for name, settings in (("scale", SCALE), ("qk", QK))
    }


def test_scale_sweep_writes_what_spectra_sweep_writes(local_runs, tmp_path):
    out, result = local_runs["scale"]
    assert result.report.computed == SCALE_IDS and result.report.skipped == []
    plain = run_sweep(SweepConfig(model="tiny-llama", **SCALE), out=tmp_path / "plain", progress=False)
    assert plain.computed_shards == [Path(i).name + ".parquet" for i in SCALE_IDS]
    assert_same_as_spectra_sweep(out / "tiny-llama", plain.out_dir)
    mine = result.results["tiny-llama"]
    assert mine.summary == plain.summary and "gain_ratio_verdict" in mine.summary
    assert mine.meta["run_hash"] == plain.meta["run_hash"]
    assert sorted(os.listdir(out)) == ["run.json", "tiny-llama"]


def test_two_stage_qk_asymmetry_writes_what_spectra_sweep_writes(local_runs, tmp_path):
    out, result = local_runs["qk"]
    selected = result.results["tiny-llama"].summary["selected_heads"]
    heads = list(dict.fromkeys((row["layer"], row["head"]) for row in selected))
    assert len(heads) >= 2
    # the gain map first, then one propagated shard per head it selected (planned once the gain map was done)
    assert result.report.computed == ["tiny-llama/gain_map-local"] + [
        f"tiny-llama/propagated-L{layer:03d}H{head:03d}" for layer, head in heads
    ]
    assert [t.id for t in result.tasks] == result.report.computed
    assert json.loads((out / "run.json").read_text())["tasks"] == result.report.computed
    plain = run_sweep(SweepConfig(model="tiny-llama", **QK), out=tmp_path / "plain", progress=False)
    assert [Path(i).name + ".parquet" for i in result.report.computed] == plain.computed_shards
    assert_same_as_spectra_sweep(out / "tiny-llama", plain.out_dir)


# ---- resume ------------------------------------------------------------------------------------


def test_rerun_computes_nothing_and_a_deleted_gain_map_is_redone(local_runs, tmp_path):
    reference, first = local_runs["qk"]
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    shards = out / "tiny-llama" / "shards"
    mtimes = {p.name: p.stat().st_mtime_ns for p in shards.iterdir()}
    again = run(run_config(QK, out), LocalEngine(), progress=False)
    assert again.report.computed == [] and again.report.skipped == first.report.computed
    assert {p.name: p.stat().st_mtime_ns for p in shards.iterdir()} == mtimes
    (shards / "gain_map-local.parquet").unlink()  # the first stage: the rerun plans it alone, then the rest again
    (shards / ".propagated-L000H000.parquet.123.deadbeef.tmp").write_bytes(b"half")  # a killed attempt's leftover
    third = run(run_config(QK, out), LocalEngine(), progress=False)
    assert third.report.computed == ["tiny-llama/gain_map-local"]
    assert len(third.report.skipped) == len(first.report.computed) - 1
    assert_same_output(out, reference)


def test_shards_of_another_configuration_are_refused(local_runs, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(local_runs["scale"][0], out)
    with pytest.raises(ValueError, match="local.parquet belongs to another configuration"):
        run(run_config(SCALE, out, alphas=[0.5, 2.0]), LocalEngine(), progress=False)
    (out / "tiny-llama" / "shards" / "propagated-L003H003.parquet").write_bytes(b"PAR1")
    with pytest.raises(ValueError, match="does not plan.*propagated-L003H003"):
        run(run_config(SCALE, out), LocalEngine(), progress=False)


# ---- Ray: a local cluster with 2 workers ---------------------------------------------------------


def test_ray_two_workers_equal_the_local_engine_though_workers_die(ray_cluster, local_runs, tmp_path):
    """Both stages on 2 workers; the first selected head's task loses its worker once, mid-task, while
    the next head's task runs on the other worker."""
    reference, local = local_runs["qk"]
    out, markers = tmp_path / "run", tmp_path / "markers"
    doomed = {local.report.computed[1]}
    runner = partial(die_once, marker_dir=str(markers), task_ids=doomed)
    result = run(run_config(QK, out), RayEngine(num_workers=2, max_retries=2, runner=runner), progress=False)
    assert result.report.computed == local.report.computed
    assert os.getpid() not in result.report.pids
    for task_id in result.report.computed:
        assert attempts(markers, task_id) == (2 if task_id in doomed else 1), task_id
    assert sorted(p.name for p in (out / "tiny-llama" / "shards").iterdir()) == sorted(
        Path(i).name + ".parquet" for i in local.report.computed
    )  # each shard once, no temporary left
    sweep = pd.read_parquet(out / "tiny-llama" / "sweep.parquet")
    assert not sweep.duplicated(["mode", "kind", "layer", "head", "alpha", "sample"]).any()
    assert_same_output(out, reference)


# ---- configuration -------------------------------------------------------------------------------


def test_config_errors_name_the_setting():
    def config(**overrides):
        return run_config({"experiment": "scale_sweep", **overrides}, Path("unused"))

    with pytest.raises(ValueError, match="experiment: the config names no experiment"):
        check_config({"kind": "sweep", "models": "tiny-llama", "out": "x"})
    with pytest.raises(ValueError, match="experiment: unknown 'exp9'; allowed are scale_sweep, gain_map, qk_asymmetry"):
        check_config(config(experiment="exp9"))
    with pytest.raises(ValueError, match="unknown key.*alpha_grid; allowed keys for kind sweep are .*alphas"):
        check_config(config(alpha_grid=[1.0]))
    with pytest.raises(ValueError, match=r"unknown key\(s\) model;"):
        check_config(config(model="tiny-llama"))  # models: [...] names them
    with pytest.raises(ValueError, match="alphas"):
        check_config(config(alphas=[0.5, -1.0]))
    with pytest.raises(ValueError, match="heads: 'from_gain_map' is for experiment qk_asymmetry"):
        check_config(config(heads="from_gain_map"))
    with pytest.raises(ValueError, match=r"heads: expected .* list of \[layer, head\]"):
        check_config(config(heads=[[1, 2, 3]]))
    with pytest.raises(ValueError, match="modes"):
        check_config(config(modes=["global"]))
    with pytest.raises(ValueError, match="n_bootstrap: expected an integer >= 0"):
        check_config(config(n_bootstrap=-1))
    with pytest.raises(ValueError, match="threshold"):
        check_config(config(threshold=2.0))
    with pytest.raises(ValueError, match=r"heads: layer 9 is not a layer of this model; .*\(tiny-llama: 4 layers x 8"):
        engine.plan(config(heads=[[9, 0]]))
    with pytest.raises(ValueError, match="context_length: 100000 exceeds"):
        engine.plan(config(context_length=100_000))


def test_the_example_config_plans(tmp_path):
    """configs/runs/sweep.yaml: exp3b on two models and the checkpoints; the gain maps come first."""
    config = engine.load_config(Path(__file__).parents[2] / "configs" / "runs" / "sweep.yaml")
    tasks = engine.plan({**config, "out": str(tmp_path)})
    assert [t.id.split("/")[1] for t in tasks] == ["gain_map-local"] * len(tasks)
    assert len({t.label for t in tasks}) == len(tasks) >= 3

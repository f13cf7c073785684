"""``kind: dynamics`` on the engines (spectra.jobs.dynamics.kind): planning, config errors, the local engine
against ``spectra dynamics`` (run_dynamics), resume, a 2-worker local Ray cluster against the local
engine, and a worker killed mid-task."""

from __future__ import annotations

import json
import os
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from spectra.data.windows import load_windows
from spectra.engine.core import LocalEngine, RayEngine, check_config, read_stamp, run
from spectra.engine.faults import attempts, die_once
from spectra.jobs.dynamics.kind import describe, plan, series_of
from spectra.jobs.dynamics.run import run_dynamics
from spectra.models import zoo

SMALL = {"context_length": 32, "n_samples": 2, "n_random": 2, "random_block": 8}
STEPS = (0, 400, 1600)
CHECKPOINTS = [str(p) for p in zoo.checkpoint_paths("tiny-qwen3") if int(p.name.removeprefix("step-")) in STEPS]
TASK_IDS = [f"tiny-qwen3/step-{s:06d}" for s in STEPS]
VOLATILE_META = ("created", "command_line")  # the only things allowed to differ between two runs


def config(out: Path, **overrides) -> dict:
    return {"kind": "dynamics", "checkpoints": CHECKPOINTS, **SMALL, "out": str(out), **overrides}


def files_of(root: Path, skip: str | None = None) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not (skip and p.relative_to(root).parts[0] == skip)
    }


def assert_same_output(a: Path, b: Path, skip: str | None = None) -> None:
    """Every file byte-identical, except meta.json's creation time and command line (``skip``: a
    top-level folder of ``a`` and ``b`` left out)."""
    fa, fb = files_of(a, skip), files_of(b, skip)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        if name.endswith("meta.json"):
            ma, mb = json.loads(fa[name]), json.loads(fb[name])
            for key in VOLATILE_META:
                ma.pop(key), mb.pop(key)
            assert ma == mb, name
        else:
            assert fa[name] == fb[name], name


def assert_complete(out: Path) -> None:
    """Every checkpoint's shard once, each holding its step only; no temporary entries left."""
    shards = out / "tiny-qwen3" / "shards"
    assert sorted(p.name for p in shards.iterdir()) == [f"step-{s:06d}" for s in STEPS]
    for step in STEPS:
        stamp = read_stamp(shards / f"step-{step:06d}")
        assert stamp["task_id"] == f"tiny-qwen3/step-{step:06d}"
    import pandas as pd

    series = pd.read_parquet(out / "tiny-qwen3" / "head_series.parquet")
    assert not series.duplicated(["step", "layer", "head", "stat"]).any()
    assert sorted(series["step"].unique()) == list(STEPS)
    assert not list(out.rglob(".*.tmp"))


# ---- planning and config errors -------------------------------------------------------------


def test_plan_a_zoo_series_and_folders_of_one_run(tmp_path):
    tasks = plan(check_config({"kind": "dynamics", "checkpoints": "tiny-qwen3", **SMALL, "out": str(tmp_path)}))
    steps = [0, 100, 200, 400, 800, 1600]  # the checkpoints spectra dynamics --model tiny-qwen3 tracks
    assert [t.id for t in tasks] == [f"tiny-qwen3/step-{s:06d}" for s in steps]
    assert [t.relpath for t in tasks] == [f"tiny-qwen3/shards/step-{s:06d}" for s in steps]
    assert [t.options["step"] for t in tasks] == steps and len({t.fingerprint for t in tasks}) == 6
    _, tokenizer = zoo.load(zoo.checkpoint_paths("tiny-qwen3")[0])
    windows = load_windows(None, tokenizer, 32, 2).numpy()
    assert all(np.array_equal(t.input_ids, windows) and t.samples == (0, 2) for t in tasks)
    # checkpoint folders of one run form one series, named after the run; a folder of checkpoint folders too
    run_folder = tmp_path / "my-run"
    for path in CHECKPOINTS[:2]:
        shutil.copytree(path, run_folder / "checkpoints" / Path(path).name)
    series = series_of(check_config(config(tmp_path, checkpoints=[*CHECKPOINTS[::-1], str(run_folder)])))
    assert [(s.label, [step for step, _ in s.members]) for s in series] == [
        ("tiny-qwen3", list(STEPS)),
        ("my-run", [0, 400]),
    ]
    assert series[0].checkpoints == tuple(CHECKPOINTS[::-1])  # as summary.json records them: config order


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="models: kind dynamics tracks checkpoints over training, not models"):
        check_config({"kind": "dynamics", "models": ["tiny-qwen3"], "out": "x"})
    with pytest.raises(ValueError, match="data: .*held-out text"):
        check_config(config(tmp_path, data="corpus.txt"))
    with pytest.raises(ValueError, match="random_block: expected an integer >= 2; got 1"):
        check_config(config(tmp_path, random_block=1))
    with pytest.raises(ValueError, match="n_random: expected an integer >= 1"):
        check_config(config(tmp_path, n_random=0))
    with pytest.raises(ValueError, match="gamma_heatmap: 'yes'; allowed values are true"):
        check_config(config(tmp_path, gamma_heatmap="yes"))
    with pytest.raises(ValueError, match="unknown key.*samples_per_shard.*allowed keys for kind dynamics"):
        check_config(config(tmp_path, samples_per_shard=2))
    with pytest.raises(ValueError, match="ships no training checkpoints"):
        plan(check_config(config(tmp_path, checkpoints="tiny-llama")))
    with pytest.raises(ValueError, match="the series tiny-qwen3 appear"):
        plan(check_config(config(tmp_path, checkpoints=["tiny-qwen3", CHECKPOINTS[0]])))
    with pytest.raises(ValueError, match="context_length: 100000 exceeds"):
        plan(check_config(config(tmp_path, context_length=100_000)))
    mixed = tmp_path / "mixed"
    shutil.copytree(CHECKPOINTS[0], mixed / "step-000000")
    shutil.copytree(zoo.model_path("tiny-llama"), mixed / "step-000050")
    with pytest.raises(ValueError, match="step-000050 has another architecture than .*step-000000.*model_type"):
        plan(check_config(config(tmp_path, checkpoints=[str(mixed)])))
    llama = tmp_path / "llama"
    shutil.copytree(zoo.model_path("tiny-llama"), llama / "step-000000")
    with pytest.raises(ValueError, match="gamma: llama has no QK-norm"):
        plan(check_config(config(tmp_path, checkpoints=[str(llama)], gamma_heatmap=True)))


# ---- the local engine against spectra dynamics ----------------------------------------------


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The series with the local engine: the reference every other run must reproduce."""
    out = tmp_path_factory.mktemp("local") / "run"
    result = run(config(out), LocalEngine(), progress=False, command_line=["spectra", "run"])
    return out, result


def test_local_engine_writes_what_spectra_dynamics_writes(local_run, tmp_path):
    out, result = local_run
    assert result.report.computed == TASK_IDS and sorted(result.results) == ["tiny-qwen3"]
    assert_complete(out)
    plain = run_dynamics(CHECKPOINTS, tmp_path / "plain", **SMALL, progress=False, command_line=["spectra", "dynamics"])
    mine = out / "tiny-qwen3"
    assert sorted(p.name for p in mine.iterdir()) == sorted([p.name for p in plain.out_dir.iterdir()] + ["shards"])
    assert_same_output(mine, plain.out_dir, skip="shards")  # tables, CSVs, figures, summary.json: the same bytes
    meta, plain_meta = (json.loads((folder / "meta.json").read_text()) for folder in (mine, plain.out_dir))
    assert meta["command_line"] == ["spectra", "run"] and plain_meta["command_line"] == ["spectra", "dynamics"]
    assert meta["settings"] == {
        "context_length": 32,
        "n_samples": 2,
        "add_special_tokens": True,
        "n_random": 2,
        "random_block": 8,
        "batch_size": 8,
    }
    assert result.results["tiny-qwen3"].summary == plain.summary
    line = describe("tiny-qwen3", result.results["tiny-qwen3"])
    assert line.startswith("tiny-qwen3: 3 checkpoints, steps 0-1600; at step 1600: "), line


def test_a_shard_of_a_family_without_qk_norm_gives_the_tables_of_track(tmp_path):
    """The empty γ table (no QK-norm) survives the shard: the merged tables are the bytes track's give."""
    from spectra.heads.dynamics import combine, track
    from spectra.io.atomic import write_parquet
    from spectra.jobs.dynamics.kind import compute, read_shard

    folder = shutil.copytree(zoo.model_path("tiny-llama"), tmp_path / "llama-run" / "step-000005")
    (task,) = plan(check_config(config(tmp_path / "run", checkpoints=[str(folder)])))
    assert task.id == "llama-run/step-000005"
    compute(task)
    merged, plain = combine([read_shard(task.path)[0]]), track([folder], **SMALL)
    assert merged.gamma.empty and merged.steps == plain.steps == [5] and merged.architecture == plain.architecture
    for name in ("head_series", "kv_series", "gamma", "taxonomy"):
        a, b = tmp_path / f"merged-{name}.parquet", tmp_path / f"plain-{name}.parquet"
        write_parquet(a, getattr(merged, name))
        write_parquet(b, getattr(plain, name))
        assert a.read_bytes() == b.read_bytes(), name


def test_rerun_skips_finished_shards_and_redoes_a_deleted_one(local_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(local_run[0], out)
    again = run(config(out), LocalEngine(), progress=False)
    assert again.report.computed == [] and again.report.skipped == TASK_IDS
    shards = out / "tiny-qwen3" / "shards"
    shutil.rmtree(shards / "step-000400")
    (shards / ".step-000400.123.deadbeef.tmp").mkdir()  # a killed attempt's leftover
    third = run(config(out), LocalEngine(), progress=False)
    assert third.report.computed == ["tiny-qwen3/step-000400"]
    assert_complete(out)
    assert_same_output(out, local_run[0])
    with pytest.raises(ValueError, match=r"holds shard\(s\) this run does not plan \(step-000400\)"):
        run(config(out, checkpoints=[CHECKPOINTS[0], CHECKPOINTS[2]]), LocalEngine(), progress=False)


# ---- Ray: a local cluster with 2 workers ----------------------------------------------------


def test_ray_two_workers_equal_the_local_engine_with_a_worker_killed_mid_task(ray_cluster, local_run, tmp_path):
    """One Ray run (starting workers costs seconds): two workers, the first attempt of one checkpoint's
    task computes, leaves a half-written temporary shard and kills its worker; Ray retries it."""
    out, markers = tmp_path / "run", tmp_path / "markers"
    doomed = {"tiny-qwen3/step-000400"}
    engine = RayEngine(num_workers=2, max_retries=2, runner=partial(die_once, marker_dir=str(markers), task_ids=doomed))
    result = run(config(out), engine, progress=False, command_line=["spectra", "run"])
    for task_id in TASK_IDS:
        assert attempts(markers, task_id) == (2 if task_id in doomed else 1), task_id
    assert result.report.computed == TASK_IDS and os.getpid() not in result.report.pids
    assert_complete(out)
    assert_same_output(out, local_run[0])


def test_the_example_config_plans():
    from spectra.engine import core as engine

    config = engine.check_config(engine.load_config(Path(__file__).parents[2] / "configs" / "runs" / "dynamics.yaml"))
    tasks = engine.plan(config)
    assert [t.label for t in tasks] == ["tiny-qwen3"] * 6 and len({t.id for t in tasks}) == 6

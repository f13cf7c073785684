"""The engine layer (spectra.engine, spectra run): planning, the local engine against run_profile,
a 2-worker local Ray cluster against the local engine, resume, and a worker killed mid-task."""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from spectra.cli import main
from spectra.data.windows import load_windows
from spectra.engine.core import (
    KINDS,
    LocalEngine,
    RayEngine,
    check_config,
    plan_profile,
    read_stamp,
    run,
)
from spectra.engine.faults import always_fail, attempts, die_once
from spectra.jobs.profile.run import read_tokens, run_profile
from spectra.models import zoo

CONTEXT, N_SAMPLES, PER_SHARD, N_PERMUTATIONS = 32, 4, 2, 5
CHECKPOINTS = [str(p) for p in zoo.checkpoint_paths("tiny-qwen3")[-2:]]
LABELS = ["tiny-llama", "tiny-qwen3-step-000800", "tiny-qwen3-step-001600"]
VOLATILE_META = ("created", "command_line")  # the only things allowed to differ between two runs


def sweep_config(out: Path, **overrides) -> dict:
    return {
        "kind": "profile",
        "models": ["tiny-llama"],
        "checkpoints": CHECKPOINTS,
        "context_length": CONTEXT,
        "n_samples": N_SAMPLES,
        "samples_per_shard": PER_SHARD,
        "n_permutations": N_PERMUTATIONS,
        "out": str(out),
        **overrides,
    }


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same_output(a: Path, b: Path) -> None:
    """Every file byte-identical, except meta.json's creation time and command line."""
    fa, fb = files_of(a), files_of(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        if name.endswith("meta.json"):
            ma, mb = json.loads(fa[name]), json.loads(fb[name])
            for key in VOLATILE_META:
                ma.pop(key), mb.pop(key)
            assert ma == mb, name
        else:
            assert fa[name] == fb[name], name


def assert_complete(out: Path, labels=LABELS) -> None:
    """Every planned shard once, every (sample, layer, head, token) once, no temporary files left."""
    for label in labels:
        shards = sorted(p.name for p in (out / label / "tokens").iterdir())
        assert shards == [f"shard-{i:05d}.parquet" for i in range(N_SAMPLES // PER_SHARD)], shards
        frame = read_tokens(out / label)
        assert not frame.duplicated(["sample", "layer", "head", "token"]).any()
        assert sorted(frame["sample"].unique()) == list(range(N_SAMPLES))
        assert len(frame) == frame.groupby(["sample"]).size().iloc[0] * N_SAMPLES
    assert not list(out.rglob("*.tmp"))


# ---- planning -------------------------------------------------------------------------------


def test_plan_covers_every_sample_once_with_unique_ids():
    tasks = plan_profile(sweep_config(Path("unused"), n_samples=7, samples_per_shard=3))
    assert len({t.id for t in tasks}) == len(tasks) == 3 * 3
    assert len({t.path for t in tasks}) == len(tasks)
    for label in LABELS:
        mine = [t for t in tasks if t.label == label]
        covered = [s for t in mine for s in range(*t.samples)]
        assert covered == list(range(7))
        assert [len(t.input_ids) for t in mine] == [3, 3, 1]
        assert all(t.input_ids.shape[1] == CONTEXT for t in mine)
    assert {t.model for t in tasks if t.label != "tiny-llama"} == set(CHECKPOINTS)
    assert len({t.fingerprint for t in tasks}) == len(tasks)


def test_plan_all_checkpoints_of_a_zoo_model():
    tasks = plan_profile(
        {
            "kind": "profile",
            "checkpoints": "tiny-qwen3",
            "context_length": CONTEXT,
            "n_samples": 2,
            "samples_per_shard": 2,
            "out": "unused",
        }
    )
    assert [t.label for t in tasks] == [f"tiny-qwen3-{p.name}" for p in zoo.checkpoint_paths("tiny-qwen3")]


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="allowed kinds are " + ", ".join(KINDS)):
        check_config({"kind": "profiling", "out": "x"})
    with pytest.raises(ValueError, match="no 'out' folder"):
        check_config({"kind": "profile", "models": "tiny-llama", "context_length": 8})
    with pytest.raises(ValueError, match="device_map: 'everywhere' is not allowed; allowed are None, 'auto'"):
        check_config(
            {"kind": "profile", "models": "tiny-llama", "context_length": 8, "out": "x", "device_map": "everywhere"}
        )
    with pytest.raises(ValueError, match="unknown key.*batch"):
        check_config({"kind": "profile", "models": "tiny-llama", "context_length": 8, "out": "x", "batch": 3})
    with pytest.raises(ValueError, match="no models and no checkpoints"):
        check_config({"kind": "profile", "context_length": 8, "out": "x"})
    with pytest.raises(ValueError, match="context_length: 100000 exceeds"):
        plan_profile({"kind": "profile", "models": "tiny-llama", "context_length": 100_000, "out": "x"})
    with pytest.raises(ValueError, match=r"layers: \[99\] out of range"):
        plan_profile({"kind": "profile", "models": "tiny-llama", "context_length": 8, "layers": [99], "out": "x"})


# ---- the local engine -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The sweep with the local engine: the reference every other engine must reproduce."""
    out = tmp_path_factory.mktemp("local") / "run"
    result = run(sweep_config(out), LocalEngine(), progress=False)
    return out, result


def test_local_engine_writes_what_run_profile_writes(local_run, tmp_path):
    out, result = local_run
    assert sorted(result.results) == LABELS
    assert result.report.computed == [f"{label}/shard-{i:05d}" for label in LABELS for i in range(2)]
    assert_complete(out)
    model, tokenizer = zoo.load("tiny-llama")
    windows = load_windows(None, tokenizer, CONTEXT, N_SAMPLES)
    plain = run_profile(
        model,
        tokenizer,
        windows,
        tmp_path / "plain",
        model_name="tiny-llama",
        batch_size=PER_SHARD,
        n_samples=N_SAMPLES,
        add_special_tokens=True,  # as load_windows made them, and the kind records
        n_permutations=N_PERMUTATIONS,
        progress=False,
    )
    mine = out / "tiny-llama"
    assert sorted(p.relative_to(mine) for p in mine.rglob("*") if p.is_file()) == sorted(
        p.relative_to(plain.out_dir) for p in plain.out_dir.rglob("*") if p.is_file()
    )
    pd.testing.assert_frame_equal(read_tokens(mine), read_tokens(plain.out_dir))
    pd.testing.assert_frame_equal(
        pd.read_parquet(mine / "head_summary.parquet"), pd.read_parquet(plain.out_dir / "head_summary.parquet")
    )
    assert (mine / "head_summary.csv").read_bytes() == (plain.out_dir / "head_summary.csv").read_bytes()
    assert json.loads((mine / "summary.json").read_text()) == json.loads((plain.out_dir / "summary.json").read_text())
    meta, plain_meta = json.loads((mine / "meta.json").read_text()), dict(plain.meta)
    for key in VOLATILE_META:
        meta.pop(key), plain_meta.pop(key)
    assert meta == json.loads(json.dumps(plain_meta))  # same run_hash: spectra profile --resume accepts the folder
    stamp = read_stamp(mine / "tokens" / "shard-00001.parquet")
    assert stamp["task_id"] == "tiny-llama/shard-00001" and stamp["samples"] == [2, 4]


def test_rerun_skips_finished_shards_and_redoes_a_missing_one(local_run, tmp_path):
    out = tmp_path / "run"
    first = run(sweep_config(out, checkpoints=None), LocalEngine(), progress=False)
    assert len(first.report.computed) == 2 and first.report.skipped == []
    shards = sorted((out / "tiny-llama" / "tokens").glob("shard-*.parquet"))
    stamps = [p.stat().st_mtime_ns for p in shards]
    again = run(sweep_config(out, checkpoints=None), LocalEngine(), progress=False)
    assert again.report.computed == [] and again.report.skipped == ["tiny-llama/shard-00000", "tiny-llama/shard-00001"]
    assert [p.stat().st_mtime_ns for p in shards] == stamps
    shards[1].unlink()
    (shards[0].parent / ".shard-00001.parquet.123.deadbeef.tmp").write_bytes(b"half")  # a killed attempt's leftover
    third = run(sweep_config(out, checkpoints=None), LocalEngine(), progress=False)
    assert third.report.computed == ["tiny-llama/shard-00001"]
    assert_complete(out, ["tiny-llama"])
    assert_same_output(out / "tiny-llama", local_run[0] / "tiny-llama")


def test_a_folder_of_another_configuration_is_refused(tmp_path):
    out = tmp_path / "run"
    run(sweep_config(out, checkpoints=None, n_samples=2), LocalEngine(), progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        run(sweep_config(out, checkpoints=None, n_samples=2, layers=[0]), LocalEngine(), progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no run.json"):
        run(sweep_config(tmp_path / "other", checkpoints=None), LocalEngine(), progress=False)


def test_cli_run_local_and_its_errors(tmp_path):
    import yaml

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**sweep_config(tmp_path / "out", checkpoints=None, n_samples=2)}))
    runner = CliRunner()
    result = runner.invoke(main, ["run", str(config), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "1 task(s) computed, 0 skipped" in result.output and "tiny-llama: 2 samples, 1 shards" in result.output
    result = runner.invoke(main, ["run", str(config), "--quiet"])
    assert "0 task(s) computed, 1 skipped" in result.output
    config.write_text("kind: profiling\ncheckpoints: tiny-qwen3\nout: x\n")
    result = runner.invoke(main, ["run", str(config)])
    assert result.exit_code == 1 and "allowed kinds are profile, capture" in result.output
    config.write_text("kind: nonsense\n")
    result = runner.invoke(main, ["run", str(config)])
    assert (
        result.exit_code == 1
        and "allowed kinds are profile, capture, sweep, dynamics, geometry, plasticity" in result.output
    )
    result = runner.invoke(main, ["run", str(config), "--workers", "2"])
    assert result.exit_code == 2 and "go with --engine ray" in result.output


# ---- Ray: a local cluster with 2 workers ----------------------------------------------------


def test_ray_two_workers_equal_the_local_engine(ray_cluster, local_run, tmp_path):
    out = tmp_path / "run"
    result = run(sweep_config(out), RayEngine(num_workers=2), progress=False)
    assert result.report.computed == local_run[1].report.computed
    assert os.getpid() not in result.report.pids
    assert_complete(out)
    assert_same_output(out, local_run[0])
    again = run(sweep_config(out), RayEngine(num_workers=2), progress=False)
    assert again.report.computed == [] and len(again.report.skipped) == 6


def test_ray_worker_killed_mid_task_is_retried(ray_cluster, local_run, tmp_path):
    out, markers = tmp_path / "run", tmp_path / "markers"
    doomed = {"tiny-llama/shard-00000", "tiny-qwen3-step-001600/shard-00001"}
    engine = RayEngine(num_workers=2, max_retries=2, runner=partial(die_once, marker_dir=str(markers), task_ids=doomed))
    result = run(sweep_config(out), engine, progress=False)
    for task_id in result.report.computed:
        assert attempts(markers, task_id) == (2 if task_id in doomed else 1), task_id
    assert sorted(result.report.computed) == sorted(local_run[1].report.computed)
    assert_complete(out)
    assert_same_output(out, local_run[0])


def test_ray_task_failing_every_retry_is_reported_and_resumable(ray_cluster, local_run, tmp_path):
    out, markers = tmp_path / "run", tmp_path / "markers"
    config = sweep_config(out, checkpoints=None)
    engine = RayEngine(num_workers=2, max_retries=1, runner=partial(always_fail, marker_dir=str(markers)))
    with pytest.raises(
        RuntimeError, match=r"2 task\(s\) failed after 1 retries .*tiny-llama/shard-0000[01]: .*injected"
    ):
        run(config, engine, progress=False)
    assert attempts(markers, "tiny-llama/shard-00000") == 2
    assert not (out / "tiny-llama" / "meta.json").exists()
    result = run(config, RayEngine(num_workers=2), progress=False)
    assert len(result.report.computed) == 2
    assert_same_output(out / "tiny-llama", local_run[0] / "tiny-llama")


def test_the_example_config_plans():
    """configs/runs/profile.yaml (kept out of configs/*.yaml, which holds the sweep experiments)."""
    from spectra.engine import core as engine

    config = engine.load_config(Path(__file__).parents[2] / "configs" / "runs" / "profile.yaml")
    tasks = engine.plan(config)
    assert len(tasks) == 32 and len({t.id for t in tasks}) == 32


def test_a_model_spread_over_devices_profiles_as_the_plain_model(tmp_path):
    """device_map with layers offloaded to disk (the CPU stand-in for layers on several GPUs): the
    same shard rows as the plain model, and the same model identity in the stamp."""
    pytest.importorskip("accelerate")
    device_map = {"model.embed_tokens": "disk", "lm_head": "disk", "model.norm": "cpu", "model.rotary_emb": "cpu"}
    device_map.update({f"model.layers.{i}": "disk" if i % 2 == 0 else "cpu" for i in range(4)})
    base = {
        "kind": "profile",
        "models": ["tiny-llama"],
        "context_length": CONTEXT,
        "n_samples": 2,
        "samples_per_shard": 2,
        "n_permutations": N_PERMUTATIONS,
    }
    plain = run({**base, "out": str(tmp_path / "plain")}, LocalEngine(), progress=False)
    spread = run(
        {
            **base,
            "out": str(tmp_path / "spread"),
            "device_map": device_map,
            "offload_folder": str(tmp_path / "offload"),
        },
        LocalEngine(),
        progress=False,
    )
    pd.testing.assert_frame_equal(
        read_tokens(tmp_path / "plain" / "tiny-llama"), read_tokens(tmp_path / "spread" / "tiny-llama")
    )
    assert read_stamp(plain.tasks[0].path)["model"] == read_stamp(spread.tasks[0].path)["model"]
    assert spread.results["tiny-llama"].meta["run_hash"] == plain.results["tiny-llama"].meta["run_hash"]


class _FakeRay:
    """Just enough of ray's API to run RayEngine in-process and count cluster starts."""

    def __init__(self):
        self.initialized, self.inits, self.shutdowns = False, 0, 0

    def is_initialized(self):
        return self.initialized

    def init(self, **kwargs):
        self.initialized, self.inits = True, self.inits + 1

    def shutdown(self):
        self.initialized, self.shutdowns = False, self.shutdowns + 1

    def put(self, value):
        return value

    def remote(self, **kwargs):
        class Remote:
            def __init__(self, fn):
                self.fn = fn

            def options(self, **kwargs):
                return self

            def remote(self, *args):
                ref = type("Ref", (), {})()  # hashable by identity, like an ObjectRef
                ref.result = self.fn(*args)
                return ref

        return Remote

    def wait(self, refs, num_returns=1):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return ref.result


def test_a_staged_run_starts_one_cluster_and_stops_it(monkeypatch, tmp_path):
    """A qk-asymmetry sweep plans its head tasks after the gain-map task: two execute calls, one cluster."""
    import sys

    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    config = {
        "kind": "sweep",
        "models": ["tiny-llama"],
        "experiment": "qk_asymmetry",
        "alphas": [0.5, 1.0, 2.0],
        "context_length": 16,
        "n_samples": 2,
        "n_bootstrap": 20,
        "out": str(tmp_path / "run"),
    }
    result = run(config, RayEngine(num_workers=2), progress=False)
    assert result.report.computed[0] == "tiny-llama/gain_map-local" and len(result.report.computed) > 1
    assert (fake.inits, fake.shutdowns, fake.initialized) == (1, 1, False)
    run(config, RayEngine(num_workers=2), progress=False)  # nothing to do: no cluster at all
    assert fake.inits == 1

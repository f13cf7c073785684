"""``spectra profile``: token windows in, a resumable result folder of shards, tables and figures out."""

import copy
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

import spectra
from spectra.cli import main
from spectra.data.windows import load_windows
from spectra.jobs.profile import run as profile_job
from spectra.jobs.profile.run import DEFAULT_METRICS, read_tokens, run_profile
from spectra.metrics.summaries import head_summary
from spectra.models import zoo


@pytest.fixture(scope="module")
def llama():
    return zoo.load("tiny-llama")


def run(model, tok, windows, out, **kwargs):
    options = {"model_name": "tiny-llama", "batch_size": 2, "progress": False, "n_permutations": 10}
    return run_profile(model, tok, windows, out, **{**options, **kwargs})


def test_folder_layout_meta_and_shards_equal_profile(llama, tmp_path):
    model, tok = llama
    windows = load_windows(None, tok, 32, 5)
    out = tmp_path / "run"
    result = run(model, tok, windows, out, command_line=["spectra", "profile", "--x"])

    names = {p.name for p in out.iterdir()}
    assert names == {
        "meta.json",
        "tokens",
        "figures",
        "head_summary.parquet",
        "head_summary.csv",
        "summary.json",
        "correlations_pooled.parquet",
        "correlations_per_sample.parquet",
        "consistency.parquet",
        "layer_statistics.parquet",
    }
    assert sorted(p.name for p in (out / "tokens").iterdir()) == [f"shard-0000{i}.parquet" for i in range(3)]
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(
        ["entropy_vs_qnorm.png"] + [f"head_{m}.png" for m in ("entropy", "max_attn", "k_eff", "sink_mass")]
    )

    meta = json.loads((out / "meta.json").read_text())
    assert meta["model"]["name"] == "tiny-llama" and meta["model"]["class"] == type(model).__name__
    assert meta["model"]["config_sha256"] == profile_job.config_hash(model)
    assert meta["run"]["context_length"] == 32 and meta["run"]["n_samples"] == 5 and meta["run"]["batch_size"] == 2
    assert meta["run"]["metrics"] == list(DEFAULT_METRICS) and meta["seed"] == 0
    assert meta["versions"]["torch"] == torch.__version__ and meta["versions"]["spectra"] == spectra.__version__
    assert meta["command_line"] == ["spectra", "profile", "--x"] and len(meta["run_hash"]) == 64

    frames = []
    for i, (lo, hi) in enumerate([(0, 2), (2, 4), (4, 5)]):
        shard = pd.read_parquet(out / "tokens" / f"shard-{i:05d}.parquet")
        expected = spectra.profile(model, windows[lo:hi], metrics=DEFAULT_METRICS, sample_ids=list(range(lo, hi)))
        pd.testing.assert_frame_equal(shard, expected, check_exact=True)
        frames.append(expected)
    tokens = pd.concat(frames, ignore_index=True)
    pd.testing.assert_frame_equal(read_tokens(out), tokens, check_exact=True)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "head_summary.parquet"), head_summary(tokens))
    pooled = pd.read_parquet(out / "correlations_pooled.parquet")
    assert len(pooled) == 32 and {"r_spearman", "p_pearson", "r_partial", "r_pearson_normalized"} <= set(pooled.columns)
    assert pd.read_parquet(out / "correlations_per_sample.parquet")["sample"].nunique() == 5

    summary = json.loads((out / "summary.json").read_text())
    assert summary == result.summary and summary["verdict"] in ("GO", "MARGINAL", "NO-GO")
    assert summary["exp0"]["n_significant"] == int(pooled["significant"].sum())
    assert set(summary["exp0"]["randomization_control"]) == {"pooled", "per_sample"}
    assert list(result.layer_summary.columns) == ["layer", "entropy", "max_attn", "k_eff", "sink_mass"]
    assert not list(out.rglob("*.tmp"))


def test_resume_finishes_an_interrupted_run_without_recomputing(llama, tmp_path, monkeypatch):
    model, tok = llama
    windows = load_windows(None, tok, 32, 5)
    reference = run(model, tok, windows, tmp_path / "reference")

    calls = []
    real_profile = profile_job.profile

    def interrupted(model, ids, **kwargs):
        calls.append(kwargs["sample_ids"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_profile(model, ids, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(profile_job, "profile", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(model, tok, windows, out)
    assert sorted(p.name for p in (out / "tokens").iterdir()) == ["shard-00000.parquet"]
    assert not (out / "summary.json").exists()
    (out / "tokens" / ".shard-00001.parquet.999.tmp").write_bytes(b"half a shard")  # a crash mid-write
    first = out / "tokens" / "shard-00000.parquet"
    os.utime(first, ns=(1_000_000_000, 1_000_000_000))

    with pytest.raises(ValueError, match="--resume"):
        run(model, tok, windows, out)

    calls.clear()
    monkeypatch.setattr(
        profile_job,
        "profile",
        lambda model, ids, **kw: calls.append(kw["sample_ids"]) or real_profile(model, ids, **kw),
    )
    result = run(model, tok, windows, out, resume=True)
    assert calls == [[2, 3], [4]] and result.computed_shards == [1, 2]
    assert first.stat().st_mtime_ns == 1_000_000_000
    assert not list(out.rglob("*.tmp"))
    pd.testing.assert_frame_equal(read_tokens(out), read_tokens(reference.out_dir), check_exact=True)
    for name in ("head_summary.parquet", "correlations_pooled.parquet", "correlations_per_sample.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / name), pd.read_parquet(reference.out_dir / name))
    assert result.summary == reference.summary

    calls.clear()  # a finished run resumes to nothing
    assert run(model, tok, windows, out, resume=True).computed_shards == [] and calls == []


def test_out_holding_another_models_or_configurations_run_is_refused(llama, tmp_path):
    model, tok = llama
    windows = load_windows(None, tok, 32, 3)
    out = tmp_path / "run"
    run(model, tok, windows, out)
    before = sorted(p.name for p in out.rglob("*"))

    qwen, qwen_tok = zoo.load("tiny-qwen3")
    with pytest.raises(ValueError, match=r"^out: .* holds a run of another model/configuration \(model 'tiny-llama'"):
        run(qwen, qwen_tok, load_windows(None, qwen_tok, 32, 3), out, model_name="tiny-qwen3", resume=True)
    other_weights = copy.deepcopy(model)
    with torch.no_grad():
        next(other_weights.parameters()).add_(1e-3)
    with pytest.raises(ValueError, match="^out: .*weights of 'tiny-llama' differ"):
        run(other_weights, tok, windows, out, resume=True)
    with pytest.raises(ValueError, match="^out: .*run settings differ: threshold"):
        run(model, tok, windows, out, threshold=0.8, resume=True)
    with pytest.raises(ValueError, match="^out: .*run settings differ: .*data_sha256"):
        run(model, tok, load_windows(None, tok, 32, 4)[1:], out, resume=True)
    assert sorted(p.name for p in out.rglob("*")) == before

    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="^out: .* holds no meta.json"):
        run(model, tok, windows, stranger)

    result = CliRunner().invoke(
        main,
        [
            "profile",
            "--model",
            "tiny-qwen3",
            "--context-length",
            "32",
            "--n-samples",
            "3",
            "--out",
            str(out),
            "--resume",
            "--quiet",
        ],
    )
    assert result.exit_code == 1 and "Error: out: " in result.output and "another model" in result.output


def test_text_files_folders_and_npz_shards(llama, tmp_path):
    _, tok = llama
    text = zoo.heldout_text()
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "b.txt").write_text(text[:3000])
    (folder / "a.txt").write_text(text[3000:6000])
    ids = [tok(t, add_special_tokens=False).input_ids for t in (text[3000:6000], text[:3000])]  # sorted: a, b
    expected = torch.cat([torch.tensor(i[: len(i) // 40 * 40]).view(-1, 40) for i in ids])
    plain = {"add_special_tokens": False}
    assert torch.equal(load_windows(folder, tok, 40, None, **plain), expected)
    assert torch.equal(load_windows(folder, tok, 40, 3, **plain), expected[:3])
    assert torch.equal(load_windows(folder / "a.txt", tok, 40, None, **plain), expected[: len(ids[0]) // 40])
    # By default every window is the BOS and 39 text tokens.
    bos = torch.cat([torch.tensor(i[: len(i) // 39 * 39]).view(-1, 39) for i in ids])
    bos = torch.cat([torch.full((len(bos), 1), tok.bos_token_id), bos], dim=1)
    assert torch.equal(load_windows(folder, tok, 40, None), bos)

    shards = tmp_path / "npz"
    shards.mkdir()
    rng = np.random.default_rng(0)
    first, short, second = (
        rng.integers(0, 4000, (3, 40)),
        rng.integers(0, 4000, (2, 20)),
        rng.integers(0, 4000, (2, 33)),
    )
    np.savez(shards / "shard_000.npz", input_ids=first)
    np.savez(shards / "shard_001.npz", input_ids=short)
    np.savez(shards / "shard_002.npz", input_ids=second)
    windows = load_windows(shards, None, 32, None)
    assert windows.dtype == torch.int64 and torch.equal(
        windows, torch.from_numpy(np.concatenate([first[:, :32], second[:, :32]]))
    )
    assert torch.equal(load_windows(shards, None, 32, 4), windows[:4])
    assert torch.equal(load_windows(shards / "shard_002.npz", None, 32, None), torch.from_numpy(second[:, :32]))
    np.savez(tmp_path / "bad.npz", tokens=first)
    with pytest.raises(ValueError, match="no 'input_ids'"):
        load_windows(tmp_path / "bad.npz", None, 32, None)
    with pytest.raises(ValueError, match="^data: .*without a tokenizer"):
        load_windows(folder, None, 32, None)
    with pytest.raises(FileNotFoundError, match="^data: "):
        load_windows(tmp_path / "missing.txt", tok, 32, None)

    result = CliRunner().invoke(
        main,
        [
            "profile",
            "--model",
            "tiny-llama",
            "--data",
            str(shards),
            "--context-length",
            "32",
            "--batch-size",
            "3",
            "--layers",
            "0",
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert read_tokens(tmp_path / "out")["sample"].unique().tolist() == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in (tmp_path / "out" / "tokens").iterdir()) == [
        "shard-00000.parquet",
        "shard-00001.parquet",
    ]


def test_context_length_longer_than_the_data_is_a_clear_error(llama, tmp_path):
    _, tok = llama
    data = tmp_path / "short.txt"
    data.write_text("In the beginning God created the heaven and the earth.")
    with pytest.raises(ValueError, match=r"^context-length: 64 tokens is longer than every text of --data .*short.txt"):
        load_windows(data, tok, 64, None)
    np.savez(tmp_path / "short.npz", input_ids=np.zeros((2, 10), dtype=np.int32))
    with pytest.raises(
        ValueError, match=r"^context-length: 64 tokens is longer than every row .*longest has 10 tokens"
    ):
        load_windows(tmp_path / "short.npz", None, 64, None)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["profile", "--model", "tiny-llama", "--data", str(data), "--context-length", "64", "--out", str(out)]
    )
    assert result.exit_code == 1 and "Error: context-length: 64 tokens is longer" in result.output
    beyond = CliRunner().invoke(
        main, ["profile", "--model", "tiny-llama", "--context-length", "4096", "--n-samples", "1", "--out", str(out)]
    )
    assert beyond.exit_code == 1 and "context-length: 4096 exceeds the model's max_position_embeddings" in beyond.output
    assert not out.exists()


def test_cli_config_yaml_supplies_defaults_and_flags_override(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "model: tiny-llama\ncontext-length: 32\nn_samples: 3\nbatch-size: 1\nlayers: [1, 3]\n"
        "metrics: entropy,q_norm\nthreshold: 0.8\n"
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["profile", "--config", str(config), "--batch-size", "2", "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    run_config = meta["run"]
    assert (run_config["context_length"], run_config["n_samples"], run_config["batch_size"]) == (32, 3, 2)
    assert (
        run_config["layers"] == [1, 3]
        and run_config["metrics"] == ["entropy", "q_norm"]
        and run_config["threshold"] == 0.8
    )
    assert meta["model"]["name"] == "tiny-llama" and run_config["data"] is None
    tokens = read_tokens(out)
    assert list(tokens.columns) == ["sample", "layer", "head", "token", "entropy", "q_norm"]
    assert sorted(tokens["layer"].unique()) == [1, 3]
    assert "results: " in result.output and "head_entropy.png" in result.output and "verdict" in result.output

    config.write_text("model: tiny-llama\ncontext-length: 32\nbatchsize: 2\nout_dir_x: y\n")
    unknown = CliRunner().invoke(main, ["profile", "--config", str(config), "--out", str(tmp_path / "other")])
    assert unknown.exit_code == 2 and "unknown key(s) batchsize, out_dir_x" in unknown.output
    assert "--config" in unknown.output and not (tmp_path / "other").exists()
    config.write_text("- just\n- a list\n")
    listed = CliRunner().invoke(main, ["profile", "--config", str(config), "--out", str(tmp_path / "other")])
    assert listed.exit_code == 2 and "mapping of option names" in listed.output

"""Special tokens and the model's ``ignore_first`` in the jobs: on by default, off with
``--no-add-special-tokens`` or ``add_special_tokens: false``, recorded in meta.json (and a capture's
sidecar), part of the run's identity, and honoured by the report's viewer; ``ignore_first`` defaults
to 2 for decoders and 0 for encoders, and meta.json records the value used."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from spectra.capture.store import SIDECAR
from spectra.cli import main
from spectra.engine import check_config
from spectra.jobs.capture.kind import plan as plan_capture
from spectra.jobs.dynamics.kind import plan as plan_dynamics
from spectra.jobs.profile.kind import plan as plan_profile
from spectra.jobs.profile.run import read_tokens
from spectra.jobs.sweep.config import SweepConfig
from spectra.jobs.sweep.kind import plan as plan_sweep
from spectra.report.results import recorded_special_tokens

SMALL = ["--context-length", "16", "--n-samples", "2", "--batch-size", "2", "--layers", "0", "--quiet"]
BOS = 0  # the zoo tokenizers' <|endoftext|>


def profile(tmp_path, name, *args, model="tiny-llama"):
    out = tmp_path / name
    result = CliRunner().invoke(main, ["profile", "--model", model, "--out", str(out), *SMALL, *args])
    assert result.exit_code == 0, result.output
    return json.loads((out / "meta.json").read_text()), out


def test_profile_adds_special_tokens_by_default_and_records_the_choice(tmp_path):
    on, _ = profile(tmp_path, "on")
    off, _ = profile(tmp_path, "off", "--no-add-special-tokens")
    explicit, _ = profile(tmp_path, "explicit", "--add-special-tokens")
    assert on["run"]["add_special_tokens"] is True and off["run"]["add_special_tokens"] is False
    assert explicit["run_hash"] == on["run_hash"] != off["run_hash"]
    assert on["run"]["data_sha256"] != off["run"]["data_sha256"]  # other windows
    assert on["run"]["ignore_first"] == 2  # the decoder default, as used
    assert recorded_special_tokens(on) and not recorded_special_tokens(off)


def test_an_encoder_keeps_its_first_rows_and_an_explicit_ignore_first_wins(tmp_path):
    meta, out = profile(tmp_path, "minilm", model="all-minilm-l6-v2")
    assert meta["run"]["ignore_first"] == 0 and meta["run"]["add_special_tokens"] is True
    tokens = read_tokens(out)
    assert tokens.loc[tokens["token"] == 0, "entropy"].notna().all()  # [CLS] rows are kept
    meta, out = profile(tmp_path, "minilm-1", "--ignore-first", "1", model="all-minilm-l6-v2")
    assert meta["run"]["ignore_first"] == 1
    assert read_tokens(out).query("token == 0")["entropy"].isna().all()


def test_run_configs_take_the_key_and_check_it(tmp_path):
    base = {"models": ["tiny-llama"], "out": str(tmp_path / "x")}
    first = {}
    for special in (True, False):
        tasks = plan_profile(
            check_config(
                {"kind": "profile", **base, "context_length": 16, "n_samples": 2, "add_special_tokens": special}
            )
        )
        first[special] = tasks[0].input_ids[:, 0]
        assert tasks[0].options["add_special_tokens"] is special and tasks[0].options["ignore_first"] == 2
    assert (first[True] == BOS).all() and (first[False] != BOS).all()
    minilm = plan_profile(
        check_config({"kind": "profile", **base, "models": ["all-minilm-l6-v2"], "context_length": 16, "n_samples": 2})
    )
    assert minilm[0].options["ignore_first"] == 0
    sweep = plan_sweep(
        check_config(
            {
                "kind": "sweep",
                **base,
                "experiment": "gain_map",
                "context_length": 16,
                "n_samples": 2,
                "add_special_tokens": False,
            }  # fmt: skip
        )
    )
    assert (sweep[0].input_ids[:, 0] != BOS).all()
    dynamics = plan_dynamics(
        check_config(
            {
                "kind": "dynamics",
                "checkpoints": "tiny-qwen3",
                "out": str(tmp_path / "d"),
                "context_length": 16,
                "n_samples": 2,
            }
        )  # fmt: skip
    )
    assert (dynamics[0].input_ids[:, 0] == BOS).all() and dynamics[0].options["add_special_tokens"] is True
    captures = plan_capture(check_config({"kind": "capture", **base, "n_examples": 2, "add_special_tokens": False}))
    assert captures[0].options["add_special_tokens"] is False
    for kind, extra in (("profile", {"context_length": 16}), ("dynamics", {}), ("capture", {})):
        where = {"checkpoints": "tiny-qwen3", "models": []} if kind == "dynamics" else {}
        with pytest.raises(ValueError, match="^add_special_tokens: expected true or false"):
            check_config({"kind": kind, **base, **where, **extra, "add_special_tokens": "yes"})
    with pytest.raises(ValueError, match="^add_special_tokens: expected true or false"):
        SweepConfig(experiment="gain_map", add_special_tokens="no")
    with pytest.raises(ValueError, match=r"^ignore_first: expected an integer >= 0, or None \(none in a config file\)"):
        SweepConfig(experiment="gain_map", ignore_first=-1)


def test_sweep_records_the_choice_and_the_ignore_first_used(tmp_path):
    config = tmp_path / "sweep.yaml"
    settings = {"experiment": "gain_map", "context_length": 16, "n_samples": 2, "n_bootstrap": 20}
    config.write_text(yaml.safe_dump({**settings, "add_special_tokens": False}))
    out = tmp_path / "sweep"
    result = CliRunner().invoke(main, ["sweep", "--config", str(config), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    run = json.loads((out / "meta.json").read_text())["run"]
    assert run["add_special_tokens"] is False and run["ignore_first"] == 2


def test_capture_sidecar_records_the_tokenisation(tmp_path):
    data = tmp_path / "examples.txt"
    data.write_text("In the beginning God created the heaven and the earth.\n")
    sidecars = {}
    for flag in ("--add-special-tokens", "--no-add-special-tokens"):
        out = tmp_path / flag
        args = ["capture", "--model", "tiny-llama", "--data", str(data), "--out", str(out), "--layers", "0"]
        result = CliRunner().invoke(main, [*args, "--heads", "0", flag])
        assert result.exit_code == 0, result.output
        sidecars[flag] = json.loads((out / SIDECAR).read_text())
    on, off = sidecars["--add-special-tokens"], sidecars["--no-add-special-tokens"]
    assert on["inputs"] == {"max_length": 4096, "add_special_tokens": True}
    assert off["inputs"]["add_special_tokens"] is False
    assert sum(on["rows"].values()) == sum(off["rows"].values()) + 2  # one BOS more for q and for k


@pytest.mark.parametrize("command", ["profile", "demo", "taxonomy", "dynamics", "capture"])
def test_every_command_that_tokenises_text_has_the_option(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert "--add-special-tokens / --no-add-special-tokens" in result.output


def test_the_report_viewer_tokenises_as_the_run_did(tmp_path):
    from spectra.report.html import build_report_data

    for name, args, starts_with_bos in (("on", (), True), ("off", ("--no-add-special-tokens",), False)):
        _, out = profile(tmp_path, name, *args)
        viewer = build_report_data(out, n_samples=1, max_tokens=16)["viewer"]
        assert viewer["available"], viewer
        assert (viewer["samples"][0]["ids"][0] == BOS) is starts_with_bos

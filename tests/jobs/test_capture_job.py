"""``spectra capture``: texts in, a complete capture folder out (or nothing at all)."""

import json

import torch
from click.testing import CliRunner

import spectra
from spectra.cli import main
from spectra.data.examples import read_examples
from spectra.io.parsing import parse_ints
from spectra.models import zoo


def write_examples(tmp_path):
    data = tmp_path / "examples.jsonl"
    data.write_text(
        json.dumps({"id": 41, "text": "In the beginning God created the heaven and the earth."})
        + "\n\n"
        + json.dumps({"id": 42, "text": "And God said, Let there be light: and there was light."})
        + "\n"
    )
    return data


def test_cli_capture_matches_an_in_memory_probe(tmp_path):
    data, out = write_examples(tmp_path), tmp_path / "capture"
    result = CliRunner().invoke(
        main,
        [
            "capture",
            "--model",
            "tiny-qwen3",
            "--data",
            str(data),
            "--out",
            str(out),
            "--layers",
            "1-2",
            "--heads",
            "0,5",
            "--capture",
            "q,k",
            "--stage",
            "pre_rope,post_rope",
            "--positions",
            "uniform",
            "--bucket-size",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "2 examples" in result.output
    meta = spectra.read_sidecar(out)
    assert meta["heads"] == {"1": [0, 5], "2": [0, 5]} and meta["stages"] == ["pre_rope", "post_rope"]
    model, tokenizer = zoo.load("tiny-qwen3")
    probe = spectra.Probe(
        model, layers=[1, 2], heads=[0, 5], stage=("pre_rope", "post_rope"), positions="uniform", bucket_size=3
    )
    with probe, torch.no_grad():
        for example_id, text in read_examples(data):
            probe.set_example_ids([example_id])
            model(tokenizer(text, return_tensors="pt").input_ids)
    for stage in ("pre_rope", "post_rope"):
        disk, memory = spectra.read_capture(out, 2, 1, "k", stage), probe.captured(2, 1, "k", stage)
        assert torch.equal(disk.vectors, memory.vectors) and torch.equal(disk.positions, memory.positions)
        assert set(disk.example_ids.tolist()) == {41, 42}


def test_cli_capture_errors_leave_nothing(tmp_path):
    data, out = write_examples(tmp_path), tmp_path / "capture"
    runner = CliRunner()
    bad_layer = runner.invoke(
        main, ["capture", "--model", "tiny-llama", "--data", str(data), "--out", str(out), "--layers", "7"]
    )
    assert bad_layer.exit_code != 0 and "layers: 7 is not a layer" in bad_layer.output
    beyond = runner.invoke(
        main, ["capture", "--model", "tiny-llama", "--data", str(data), "--out", str(out), "--positions", "2,500"]
    )
    assert beyond.exit_code != 0 and "positions: [500] lie outside the sequence" in beyond.output
    assert not out.exists()
    unknown = runner.invoke(main, ["capture", "--model", "gpt-17", "--data", str(data), "--out", str(out)])
    assert unknown.exit_code != 0 and "neither a zoo model" in unknown.output
    ok = runner.invoke(
        main, ["capture", "--model", "tiny-llama", "--data", str(data), "--out", str(out), "--layers", "0"]
    )
    assert ok.exit_code == 0, ok.output
    again = runner.invoke(
        main, ["capture", "--model", "tiny-llama", "--data", str(data), "--out", str(out), "--layers", "0"]
    )
    assert again.exit_code != 0 and "already holds a finished capture" in again.output


def test_read_examples_and_parse_ints(tmp_path):
    text = tmp_path / "lines.txt"
    text.write_text("first line\n\nsecond line\n")
    assert read_examples(text) == [(0, "first line"), (1, "second line")]
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"txt": "no text field"}\n')
    try:
        read_examples(broken)
    except ValueError as error:
        assert "broken.jsonl:1" in str(error) and "'text'" in str(error)
    else:
        raise AssertionError("a line without 'text' must be rejected")
    assert parse_ints("0,2,5-7") == [0, 2, 5, 6, 7] and parse_ints(None) is None

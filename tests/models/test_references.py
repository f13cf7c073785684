"""Model references: zoo names, local folders and hub ids ``org/name[@revision]`` resolved from a
Hugging Face cache on disk (built here from an embedded zoo model, in the cache's real layout), offline."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from spectra import zoo
from spectra.models.loading import load_model
from spectra.models.zoo.references import hub_cache_dir, parse_hub_id, resolve_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OLDER = "fedcba9876543210fedcba9876543210fedcba98"


def make_hub_cache(cache: Path, repo_id: str = "acme/tiny-llama", commits: dict[str, str] | None = None) -> Path:
    """A hub cache holding ``repo_id``: ``models--org--name/snapshots/<commit>/`` copies of tiny-llama
    and ``refs/<name>`` files holding the commits (default: ``main`` -> COMMIT)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for ref, commit in (commits or {"main": COMMIT}).items():
        snapshot = repo / "snapshots" / commit
        if not snapshot.is_dir():
            shutil.copytree(zoo.model_path("tiny-llama"), snapshot)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return repo


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An offline hub cache in tmp_path (HF_HUB_CACHE and HF_HUB_OFFLINE=1), holding acme/tiny-llama."""
    cache = tmp_path / "hub"
    make_hub_cache(cache, commits={"main": COMMIT, "v0": OLDER})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_zoo_names_and_folders_resolve_to_absolute_folders(tmp_path, monkeypatch):
    zoo_model = resolve_model("tiny-llama")
    assert (zoo_model.kind, zoo_model.repo_id, zoo_model.path) == ("zoo", None, zoo.model_path("tiny-llama"))
    assert resolve_model("all-minilm-l6-v2").path == zoo.minilm_path()
    folder = shutil.copytree(zoo.model_path("tiny-llama"), tmp_path / "mine")
    monkeypatch.chdir(tmp_path)
    local = resolve_model("mine")
    assert (local.kind, local.reference, local.path) == ("folder", "mine", folder.absolute())
    assert local.path.is_absolute()


def test_a_local_folder_wins_over_a_hub_id_of_the_same_spelling(tmp_path, monkeypatch, hub_cache):
    shutil.copytree(zoo.model_path("tiny-llama"), tmp_path / "acme" / "tiny-llama")
    monkeypatch.chdir(tmp_path)
    assert resolve_model("acme/tiny-llama").kind == "folder"


def test_hub_id_loads_from_the_cache_offline(hub_cache):
    resolved = resolve_model("acme/tiny-llama")
    assert (resolved.kind, resolved.repo_id, resolved.revision, resolved.commit_hash) == (
        "hub",
        "acme/tiny-llama",
        "main",
        COMMIT,
    )
    assert resolved.path == hub_cache / "models--acme--tiny-llama" / "snapshots" / COMMIT
    assert resolved.record()["path"] == str(resolved.path)
    model, tokenizer = load_model("acme/tiny-llama")
    reference, _ = zoo.load("tiny-llama")
    assert model.config.num_hidden_layers == reference.config.num_hidden_layers
    assert tokenizer("In the beginning")["input_ids"]


def test_revisions_branch_tag_and_commit_hash(hub_cache):
    assert resolve_model("acme/tiny-llama@main").commit_hash == COMMIT
    assert resolve_model("acme/tiny-llama@v0").commit_hash == OLDER
    assert resolve_model("acme/tiny-llama", revision="v0").commit_hash == OLDER
    assert resolve_model(f"acme/tiny-llama@{OLDER}").path.name == OLDER
    model, _ = load_model(f"acme/tiny-llama@{COMMIT}")
    assert model.config.model_type == "llama"
    with pytest.raises(ValueError, match="names revision 'main' but revision='v0'"):
        resolve_model("acme/tiny-llama@main", revision="v0")


def test_zoo_load_takes_every_name_the_cli_takes(hub_cache):
    minilm, _ = zoo.load("all-minilm-l6-v2")
    assert type(minilm).__name__ == "BertModel"
    hub, _ = zoo.load("acme/tiny-llama@v0")
    assert type(hub).__name__ == "LlamaForCausalLM"


def test_unknown_hub_id_offline_is_a_clear_error(hub_cache):
    with pytest.raises(ValueError) as error:
        load_model("acme/not-there")
    text = str(error.value)
    assert "'acme/not-there'" in text and "hf download acme/not-there" in text and "--allow-download" in text
    with pytest.raises(ValueError, match="revision nope"):
        resolve_model("acme/tiny-llama@nope")
    # HF_HUB_OFFLINE wins over an explicit opt-in: still no download, and it says so
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE is set"):
        resolve_model("acme/not-there", allow_download=True)


def test_neither_zoo_folder_nor_hub_id_lists_what_is_allowed():
    for bad in ("/no/such/model", "not a model", "a/b/c", "tiny-llamaa"):
        with pytest.raises(ValueError, match="is neither a zoo model .*local folder.*hub id org/name"):
            load_model(bad)


def test_cache_location_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hub_cache_dir() == tmp_path / "cache"


def test_parse_hub_id():
    assert parse_hub_id("Qwen/Qwen3-0.6B@refs/pr/1") == ("Qwen/Qwen3-0.6B", "refs/pr/1")
    assert parse_hub_id("org/../x") is None and parse_hub_id("org/name@") is None


def test_a_relative_folder_loads_by_its_absolute_path(tmp_path, monkeypatch):
    shutil.copytree(zoo.model_path("tiny-llama"), tmp_path / "mine")
    monkeypatch.chdir(tmp_path)
    model, _ = load_model("mine")
    assert model.config._name_or_path == str(tmp_path / "mine")  # what captures and config_sha256 record

"""What a model reference names: a zoo model, a local folder or a Hugging Face hub id, resolved to a folder.

One function, :func:`resolve_model`, decides for every entry point (``spectra.models.loading.load_model``,
``zoo.load``, every ``--model`` option, the ``models`` of a run config). A reference is, in this order:

- a zoo name (``tiny-llama``, ... and ``all-minilm-l6-v2``): the folder inside the installed package;
- an existing local folder (relative or absolute; it must hold a ``config.json``): a folder always
  wins over a hub id of the same spelling;
- a hub id ``org/name``, optionally with a revision ``org/name@rev`` (a branch, a tag or a commit hash;
  default ``main``): the snapshot folder in the Hugging Face cache (``HF_HUB_CACHE``, else
  ``HF_HOME``/hub, else ``~/.cache/huggingface/hub``). Nothing is downloaded unless the caller opts in
  with ``allow_download=True``, ``spectra --allow-download <command>`` or ``SPECTRA_ALLOW_DOWNLOAD=1``,
  and never while ``HF_HUB_OFFLINE`` is set.

It lives in the zoo package so that ``zoo.load`` can use it too (the zoo is the lower layer).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spectra.models.zoo.architectures import MODEL_NAMES
from spectra.models.zoo.minilm import minilm_path
from spectra.models.zoo.paths import MODELS_DIR

MINILM = "all-minilm-l6-v2"
#: ``org/name`` with an optional ``@revision``: the hub's own rules for names (letters, digits, ``-_.``).
HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<revision>[^@\s]+))?$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "on", "yes", "true"}
#: The environment variable that allows downloads (what ``spectra --allow-download`` sets).
ALLOW_DOWNLOAD_ENV = "SPECTRA_ALLOW_DOWNLOAD"


@dataclass(frozen=True)
class ResolvedModel:
    """A resolved model reference.

    kind: ``"zoo"`` (an embedded model, all-minilm-l6-v2 included), ``"folder"`` or ``"hub"``.
    reference: the reference as given (what a run calls the model).
    path: the model's folder, absolute (not following symbolic links).
    repo_id, revision, commit_hash: for a hub id, the repository, the revision asked for
        (``main`` when none) and the commit it resolved to; None otherwise.
    """

    kind: str
    reference: str
    path: Path
    repo_id: str | None = None
    revision: str | None = None
    commit_hash: str | None = None

    def __str__(self) -> str:
        return self.reference

    def record(self) -> dict[str, Any]:
        """What ``meta.json`` records about where the model came from (JSON-serialisable)."""
        return {
            "kind": self.kind,
            "path": str(self.path),
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit_hash": self.commit_hash,
        }


def allowed_references() -> str:
    """The sentence an error about an unusable reference ends with."""
    return (
        f"a zoo model ({', '.join(MODEL_NAMES)}, {MINILM}), a local folder with a config.json, "
        "or a Hugging Face hub id org/name[@revision]"
    )


def parse_hub_id(reference: str) -> tuple[str, str | None] | None:
    """``(repo_id, revision)`` of a well-formed hub id, else None.

    Example:
        >>> parse_hub_id("meta-llama/Llama-3.2-1B"), parse_hub_id("org/name@v1.0"), parse_hub_id("/abs/path")
        (('meta-llama/Llama-3.2-1B', None), ('org/name', 'v1.0'), None)
    """
    match = HUB_ID.match(reference)
    if match is None or ".." in match["repo"]:
        return None
    return match["repo"], match["revision"]


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (``HF_HUB_CACHE``, then ``HF_HOME``/hub),
    else huggingface_hub's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids the network (read from the environment now)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    return value.strip().lower() in _TRUE if value is not None else bool(constants.HF_HUB_OFFLINE)


def resolve_model(
    reference: str | os.PathLike,
    *,
    revision: str | None = None,
    allow_download: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> ResolvedModel:
    """The folder a model reference names (see the module's docstring for the rules).

    revision: the hub revision, the same as ``org/name@revision`` (give one or the other, or the same
        twice); only for hub ids.
    allow_download: fetch a hub id missing from the cache (ignored, i.e. no download, while
        ``HF_HUB_OFFLINE`` is set). Off by default: nothing touches the network. ``SPECTRA_ALLOW_DOWNLOAD=1``
        in the environment (what ``spectra --allow-download`` sets) allows it too.
    cache_dir: the hub cache (default: :func:`hub_cache_dir`).

    Example:
        >>> resolve_model("tiny-llama").kind, resolve_model("tiny-llama").path.name
        ('zoo', 'tiny-llama')
        >>> resolve_model("not a model")
        Traceback (most recent call last):
        ...
        ValueError: model: 'not a model' is neither a zoo model (tiny-llama, tiny-qwen3, all-minilm-l6-v2), a local folder with a config.json, or a Hugging Face hub id org/name[@revision]
    """
    text = os.fspath(reference)
    if text in MODEL_NAMES or text == MINILM:
        if revision is not None:
            raise ValueError(f"revision: {text!r} is a zoo model, which has no revisions")
        path = (MODELS_DIR / text) if text in MODEL_NAMES else minilm_path()
        return ResolvedModel("zoo", text, path.absolute())
    folder = Path(text).expanduser()
    if folder.is_dir():
        if revision is not None:
            raise ValueError(f"revision: {text!r} is a local folder, which has no revisions")
        if not (folder / "config.json").is_file():
            raise ValueError(
                f"model: the folder {text!r} holds no config.json; a model reference is {allowed_references()}"
            )
        return ResolvedModel("folder", text, folder.absolute())
    parsed = parse_hub_id(text)
    if parsed is None:
        raise ValueError(f"model: {text!r} is neither {allowed_references()}")
    repo_id, given = parsed
    if given is not None and revision is not None and given != revision:
        raise ValueError(f"revision: {text!r} names revision {given!r} but revision={revision!r} was given too")
    return _resolve_hub(text, repo_id, given or revision, allow_download, cache_dir)


def _resolve_hub(
    reference: str, repo_id: str, revision: str | None, allow_download: bool, cache_dir: str | os.PathLike | None
) -> ResolvedModel:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    asked = revision or "main"
    offline = hub_offline()
    allow_download = allow_download or os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in _TRUE
    try:
        path = Path(snapshot_download(repo_id, revision=asked, cache_dir=cache, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as error:
        if not allow_download or offline:
            why = "HF_HUB_OFFLINE is set" if allow_download else "downloads are off by default"
            raise ValueError(
                f"model: {reference!r} is no local folder, and the hub id {repo_id} (revision {asked}) is not in "
                f"the Hugging Face cache {cache} ({why}). Fetch it with `hf download {repo_id}"
                f"{'' if revision is None else f' --revision {revision}'}` (or `huggingface-cli download`), "
                "or allow downloads where the network is allowed: spectra --allow-download <command> "
                f"(or {ALLOW_DOWNLOAD_ENV}=1; allow_download=True in Python)."
            ) from error
        path = Path(snapshot_download(repo_id, revision=asked, cache_dir=cache))
    if not (path / "config.json").is_file():
        raise ValueError(f"model: the snapshot of {repo_id} at {asked} ({path}) holds no config.json")
    commit = path.name if COMMIT.match(path.name) else None
    return ResolvedModel("hub", reference, path.absolute(), repo_id, asked, commit)


def model_source(reference: str | os.PathLike | None) -> dict[str, Any] | None:
    """What ``meta.json`` records as ``model_source`` for a run on ``reference``: for a local folder or a
    hub id, :meth:`ResolvedModel.record` (kind, absolute path, repo id, revision, commit hash), resolved
    offline; None for a zoo model (its name finds it from any folder) or a name that resolves to nothing
    (a label given by a caller of the Python API).

    Example:
        >>> model_source("tiny-llama") is None, model_source("no such model") is None
        (True, True)
    """
    if reference is None:
        return None
    try:
        resolved = resolve_model(reference)
    except ValueError:
        return None
    return None if resolved.kind == "zoo" else resolved.record()


def recorded_reference(name: str | None, source: Any) -> str | None:
    """The reference that finds a run's model again from any folder: for a hub model, ``org/name@<commit>``;
    for a local folder, its absolute path (as meta.json's ``model_source`` records them); else ``name``.

    Example:
        >>> recorded_reference("acme/m", {"kind": "hub", "repo_id": "acme/m", "commit_hash": "ab" * 20})[:9]
        'acme/m@ab'
        >>> recorded_reference("runs/mine", {"kind": "folder", "path": "/data/runs/mine"})
        '/data/runs/mine'
    """
    if isinstance(source, dict):
        if source.get("kind") == "hub" and source.get("repo_id"):
            commit = source.get("commit_hash")
            return f"{source['repo_id']}@{commit}" if commit else str(source["repo_id"])
        if source.get("kind") == "folder" and source.get("path"):
            return str(source["path"])
    return name

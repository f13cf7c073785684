"""The result folder of every example run config (configs/runs/<kind>.yaml) is identical to the one
recorded in tests/jobs/golden/example_configs.json.

The record was made before the package was reorganised into subpackages; this test is what proves
that reorganisation (and any later refactoring) changed no table, figure, shard or summary.

Two digests per file are recorded:

- ``strict``: the file's bytes, after normalisations that do not depend on the code: the
  ``created`` timestamp and the ``command_line`` of JSON files are dropped, and the run's output
  folder and the package's folder (paths of the embedded models) become ``<out>`` and ``<package>``.
  Compared where the package lives where the record was made.
- ``portable``: the same, but also without the values that hash a model's folder path: a model
  config's ``config_sha256`` holds its ``_name_or_path``, and the ``run_hash`` and the shard
  ``fingerprint`` stamps (JSON files and the ``spectra.task`` metadata of Parquet shards) hash that in
  turn. Parquet files are digested as their Arrow table (every column's data and the other schema
  metadata). Compared everywhere, so a fresh clone in any folder checks every number and figure.

The bytes of Parquet and PNG files depend on pyarrow, matplotlib, numpy, torch and transformers, so
the comparison only holds in the environment that made the record: where any of those versions
differ, the test is skipped with the differing versions named. Re-record (after checking the
outputs by other means) with ``python tests/jobs/test_golden_outputs.py --record``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import spectra

ROOT = Path(__file__).resolve().parents[2]
RECORD = ROOT / "tests" / "jobs" / "golden" / "example_configs.json"
KINDS = ("profile", "capture", "dynamics", "geometry", "plasticity", "sweep")
VERSIONED = ("torch", "transformers", "numpy", "pandas", "pyarrow", "matplotlib", "scipy")
VOLATILE_KEYS = frozenset({"created", "command_line"})
#: Values that hash a model folder's path (through its config's ``_name_or_path``).
LOCATION_KEYS = frozenset({"config_sha256", "run_hash", "fingerprint"})
TASK_METADATA = b"spectra.task"


def _versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in VERSIONED}


def _package_dir() -> str:
    return str(Path(spectra.__file__).resolve().parent)


def _drop(value, keys: frozenset[str]):
    if isinstance(value, dict):
        return {k: _drop(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_drop(v, keys) for v in value]
    return value


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _digests(path: Path, out: Path, package: str) -> tuple[str, str]:
    """(strict, portable) digests of one output file."""
    data = path.read_bytes()
    if path.suffix in (".json", ".csv"):
        text = data.decode().replace(str(out), "<out>").replace(package, "<package>")
        if path.suffix == ".csv":
            return _sha(text.encode()), _sha(text.encode())
        value = _drop(json.loads(text), VOLATILE_KEYS)
        strict = _sha(json.dumps(value, sort_keys=True).encode())
        return strict, _sha(json.dumps(_drop(value, LOCATION_KEYS), sort_keys=True).encode())
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        metadata = dict(table.schema.metadata or {})
        if TASK_METADATA in metadata:
            metadata[TASK_METADATA] = json.dumps(_drop(json.loads(metadata[TASK_METADATA]), LOCATION_KEYS)).encode()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema.with_metadata(metadata)) as writer:
            writer.write_table(table.replace_schema_metadata(metadata))
        return _sha(data), _sha(sink.getvalue().to_pybytes())
    return _sha(data), _sha(data)


def digest_folder(out: Path, package: str) -> dict[str, dict[str, str]]:
    """``{"strict": {relpath: digest}, "portable": {...}}`` of every file under ``out``."""
    out = out.resolve()
    pairs = {str(p.relative_to(out)): _digests(p, out, package) for p in sorted(out.rglob("*")) if p.is_file()}
    return {"strict": {k: v[0] for k, v in pairs.items()}, "portable": {k: v[1] for k, v in pairs.items()}}


def digest_run(kind: str, out: Path) -> dict[str, dict[str, str]]:
    """Runs ``spectra run configs/runs/<kind>.yaml --out OUT`` and digests every file it wrote."""
    subprocess.run(
        [sys.executable, "-m", "spectra", "run", str(ROOT / "configs" / "runs" / f"{kind}.yaml"), "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return digest_folder(out, _package_dir())


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_example_config_output_is_unchanged(kind, tmp_path):
    record = json.loads(RECORD.read_text())
    differing = {k: (v, record["versions"].get(k)) for k, v in _versions().items() if record["versions"].get(k) != v}
    if differing:
        pytest.skip(f"the golden outputs were recorded with other versions (now, recorded): {differing}")
    got = digest_run(kind, tmp_path / kind)
    modes = ["portable"] + (["strict"] if _package_dir() == record["package_dir"] else [])
    for mode in modes:
        want = record[mode][kind]
        assert sorted(got[mode]) == sorted(want), (
            f"files written: missing {sorted(set(want) - set(got[mode]))[:10]}, "
            f"extra {sorted(set(got[mode]) - set(want))[:10]}"
        )
        changed = [name for name in want if got[mode][name] != want[name]]
        assert not changed, f"{mode}: {len(changed)} of {len(want)} files differ from the record, e.g. {changed[:10]}"


def record(folders: dict[str, Path], package: str) -> None:
    """Writes the record from result folders (one per kind) written with the package at ``package``."""
    digests = {kind: digest_folder(folder, package) for kind, folder in folders.items()}
    body = {
        "versions": _versions(),
        "package_dir": package,
        "strict": {kind: d["strict"] for kind, d in digests.items()},
        "portable": {kind: d["portable"] for kind, d in digests.items()},
    }
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps(body, indent=0, sort_keys=True) + "\n")


if __name__ == "__main__":  # python tests/jobs/test_golden_outputs.py --record [--from DIR PACKAGE_DIR]
    import tempfile

    args = sys.argv[1:]
    if args[:1] != ["--record"]:
        sys.exit("usage: python tests/jobs/test_golden_outputs.py --record [--from DIR PACKAGE_DIR]")
    if args[1:2] == ["--from"]:  # result folders DIR/<kind> written earlier, with the package at PACKAGE_DIR
        record({kind: Path(args[2]) / kind for kind in KINDS}, args[3])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            for kind in KINDS:
                digest_run(kind, Path(tmp) / kind)
            record({kind: Path(tmp) / kind for kind in KINDS}, _package_dir())

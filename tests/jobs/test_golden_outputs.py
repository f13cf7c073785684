"""The result folder of every example run config (configs/runs/<kind>.yaml) is byte-identical to the
one recorded in tests/jobs/golden/example_configs.json.

The record was made before the package was reorganised into subpackages; this test is what proves
that reorganisation (and any later refactoring) changed no table, figure, shard or summary. Text
files (.json, .csv) are compared after three normalisations that do not depend on the code:
the ``created`` timestamp and the ``command_line`` of ``meta.json``/``run.json`` are dropped, and
the run's output folder and the package's folder (paths of the embedded models) become
``<out>`` and ``<package>``, because a clone and a temporary folder live elsewhere.

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

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECORD = ROOT / "tests" / "jobs" / "golden" / "example_configs.json"
KINDS = ("profile", "capture", "dynamics", "geometry", "plasticity", "sweep")
VERSIONED = ("torch", "transformers", "numpy", "pandas", "pyarrow", "matplotlib", "scipy")
VOLATILE_KEYS = ("created", "command_line")


def _versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in VERSIONED}


def _package_dir() -> str:
    import spectra

    return str(Path(spectra.__file__).resolve().parent)


def _drop_volatile(value):
    if isinstance(value, dict):
        return {k: _drop_volatile(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_drop_volatile(v) for v in value]
    return value


def _digest(path: Path, out: Path, package: str) -> str:
    data = path.read_bytes()
    if path.suffix in (".json", ".csv"):
        text = data.decode().replace(str(out), "<out>").replace(package, "<package>")
        if path.suffix == ".json":
            text = json.dumps(_drop_volatile(json.loads(text)), sort_keys=True)
        data = text.encode()
    return hashlib.sha256(data).hexdigest()


def digest_run(kind: str, out: Path) -> dict[str, str]:
    """Runs ``spectra run configs/runs/<kind>.yaml --out OUT`` and digests every file it wrote."""
    subprocess.run(
        [sys.executable, "-m", "spectra", "run", str(ROOT / "configs" / "runs" / f"{kind}.yaml"), "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    package = _package_dir()
    out = out.resolve()
    return {str(p.relative_to(out)): _digest(p, out, package) for p in sorted(out.rglob("*")) if p.is_file()}


def _recorded() -> dict:
    return json.loads(RECORD.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_example_config_output_is_unchanged(kind, tmp_path):
    record = _recorded()
    differing = {k: (v, record["versions"].get(k)) for k, v in _versions().items() if record["versions"].get(k) != v}
    if differing:
        pytest.skip(f"the golden outputs were recorded with other versions (now, recorded): {differing}")
    got = digest_run(kind, tmp_path / kind)
    want = record["kinds"][kind]
    assert sorted(got) == sorted(want), (
        f"files written: missing {sorted(set(want) - set(got))[:10]}, extra {sorted(set(got) - set(want))[:10]}"
    )
    changed = [name for name in want if got[name] != want[name]]
    assert not changed, f"{len(changed)} of {len(want)} files differ from the record, e.g. {changed[:10]}"


if __name__ == "__main__":  # python tests/jobs/test_golden_outputs.py --record
    import tempfile

    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/jobs/test_golden_outputs.py --record")
    kinds = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in KINDS:
            kinds[kind] = digest_run(kind, Path(tmp) / kind)
            print(f"{kind}: {len(kinds[kind])} files")
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps({"versions": _versions(), "kinds": kinds}, indent=0, sort_keys=True) + "\n")

"""The verdict of a GPU check: which ops' CUDA kernels passed everything, and the CMake line to paste.

    python tools/gpu/summarize.py WORK_DIR OUT_DIR

Reads what tools/gpu/gpu_check.sh left in WORK_DIR (pytest-*.xml, compare.json, sanitizer-*.log,
bench.json, profile.json, build.txt), appends the verdict to OUT_DIR/summary.txt and writes every
structured result to OUT_DIR/results.json. An op's CUDA kernel is validated when, in this run:
  - its tests in tests/ops/test_cuda_kernels.py ran and none failed, errored or was skipped, and
    test_opcheck_on_cuda passed;
  - compare_ops.py's cuda_kernel path agreed with the CPU op on every case;
  - compute-sanitizer memcheck and racecheck finished with no error in its kernels (an error that
    names no kernel counts against every op).
Standard library only, so it runs wherever the check runs.
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

OPS = ("attn_row_stats", "vec_stats", "plasticity_pairwise")
# The CUDA kernels of each op, as compute-sanitizer names them.
KERNELS = {
    "attn_row_stats": ("attn_row_stats_kernel",),
    "vec_stats": ("vec_stats_kernel",),
    "plasticity_pairwise": ("plasticity_pairwise_kernel", "first_negative_variance_kernel"),
}
SOURCES = {op: (f"cpp/kernels/{op}.cu", f"cpp/ops/{op}_cuda.cu") for op in OPS}


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def pytest_results(work: Path) -> dict[str, dict[str, int]] | None:
    """{test group: {passed, failed, skipped}} from every pytest-*.xml, grouped by op (or "opcheck")."""
    files = sorted(work.glob("pytest-*.xml"))
    if not files:
        return None
    groups: dict[str, dict[str, int]] = {}
    for path in files:
        try:
            root = ET.parse(path).getroot()
        except (ET.ParseError, OSError):
            continue
        for case in root.iter("testcase"):
            name = case.get("name", "")
            group = next(
                (op for op in OPS if name.startswith(f"test_{op}")), "opcheck" if "opcheck" in name else "other"
            )
            outcome = "passed"
            for child in case:
                if child.tag in ("failure", "error"):
                    outcome = "failed"
                elif child.tag == "skipped":
                    outcome = "skipped"
            counts = groups.setdefault(group, {"passed": 0, "failed": 0, "skipped": 0})
            counts[outcome] += 1
    return groups


def sanitizer_results(work: Path) -> dict[str, dict]:
    """{tool: {"ran": bool, "errors": int, "ops": {op: errors}, "unattributed": int}}."""
    out = {}
    for tool in ("memcheck", "racecheck"):
        path = work / f"sanitizer-{tool}.log"
        if not path.exists():
            continue
        text = path.read_text(errors="replace")
        ran = "SANITIZE-RUN-DONE cuda" in text
        total = 0
        for match in re.finditer(r"ERROR SUMMARY: (\d+) error", text):
            total = max(total, int(match.group(1)))
        for match in re.finditer(r"RACECHECK SUMMARY: \d+ hazards? displayed \((\d+) errors?", text):
            total = max(total, int(match.group(1)))
        # Each report is a "========= <problem>" block naming the kernel it happened in.
        blocks = re.split(r"\n========= (?=\S)", text)
        per_op = dict.fromkeys(OPS, 0)
        unattributed = 0
        for block in blocks:
            if not re.search(r"(Invalid|Race|Hazard|Error|error|Uninitialized|Leaked)", block.split("\n", 1)[0]):
                continue
            if "SUMMARY" in block.split("\n", 1)[0]:
                continue
            hit = [op for op, names in KERNELS.items() if any(n in block for n in names)]
            for op in hit:
                per_op[op] += 1
            if not hit:
                unattributed += 1
        if total and not unattributed and not any(per_op.values()):
            unattributed = total  # reported, but in no block this parser recognises
        out[tool] = {"ran": ran, "errors": total, "ops": per_op, "unattributed": unattributed}
    return out


def main() -> int:
    work, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    build = (work / "build.txt").read_text().strip() if (work / "build.txt").exists() else "unknown"
    compare = read_json(work / "compare.json")
    tests = pytest_results(work)
    sanitizer = sanitizer_results(work)
    cuda = bool(compare and compare.get("device") == "cuda")
    lines = ["", "---- CUDA kernel validation (this run)"]
    verdicts = {}
    for op in OPS:
        reasons = []
        if not cuda:
            verdicts[op] = ["no CUDA device"]
            lines.append(f"{op:<20} not validated: no CUDA device (skipped: no CUDA)")
            continue
        if build not in ("direct", "pip"):
            reasons.append(f"build: {build}")
        counts = (tests or {}).get(op)
        if counts is None:
            reasons.append("its tests did not run (or were killed)")
        elif counts["failed"] or counts["skipped"] or not counts["passed"]:
            reasons.append(f"tests {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
        opcheck = (tests or {}).get("opcheck")
        if not opcheck or opcheck["failed"] or not opcheck["passed"]:
            reasons.append("test_opcheck_on_cuda did not pass")
        verdict = ((compare or {}).get("ops", {}).get(op, {}).get("cuda_kernel", {})).get("verdict", "did not run")
        if not verdict.startswith("pass"):
            reasons.append(f"compare_ops: {verdict}")
        for tool in ("memcheck", "racecheck"):
            result = sanitizer.get(tool)
            if not result or not result["ran"]:
                reasons.append(f"{tool} did not finish")
            elif result["ops"][op] or result["unattributed"]:
                reasons.append(f"{tool}: {result['ops'][op] + result['unattributed']} reports")
        verdicts[op] = reasons
        lines.append(f"{op:<20} {'VALIDATED' if not reasons else 'not validated: ' + '; '.join(reasons)}")
    passed = [op for op in OPS if not verdicts[op]]
    if passed:
        files = " ".join(f for op in passed for f in SOURCES[op])
        gpu = (read_json(work / "bench.json") or {}).get("gpu") or (read_json(work / "profile.json") or {}).get(
            "gpu", "a GPU"
        )
        lines.append("Paste into CMakeLists.txt (replacing the set(SPECTRA_CUDA_VALIDATED ...) line):")
        lines.append(f"set(SPECTRA_CUDA_VALIDATED {files})  # passed make gpu-check on {gpu}")
    else:
        lines.append("No op's CUDA kernel passed every check: leave set(SPECTRA_CUDA_VALIDATED) as it is.")
    if compare:
        lines.append(
            "torch path vs the CPU op: "
            + ", ".join(
                f"{op} cuda {compare['ops'][op]['torch_cuda']['verdict']} / cpu {compare['ops'][op]['torch_cpu']['verdict']}"
                for op in OPS
            )
        )
    with open(out_dir / "summary.txt", "a") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    results = {
        "build": build,
        "validated": passed,
        "reasons": verdicts,
        "pytest": tests,
        "compare": compare,
        "sanitizer": sanitizer,
        "bench": read_json(work / "bench.json"),
        "profile": read_json(work / "profile.json"),
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

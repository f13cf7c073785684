"""Every op three ways on the same inputs: the CUDA kernel, the torch path (on CUDA and on the CPU)
and the native CPU op, which is the reference here.

    python tools/gpu/compare_ops.py [--device cuda|cpu] [--quick] [--json PATH]

Ops and cases: attn_row_stats with every mask option (causal, bidirectional, sliding window, key
padding, softcap, query_offset positive and negative, decode rows Tq < Tk, GQA and MHA, head_dim 64
and 128, one 3000-key row block for the k_eff refinement, learned sinks, custom chunked and per-head
masks: on CUDA these last run the torch path under every backend); vec_stats on contiguous and strided
views with a NaN and a zero vector; plasticity_pairwise with shared/per-pair means and
diagonal/full variances. Each in float16, bfloat16, float32 and float64.

Paths, each against the CPU op:
  cuda_kernel  spectra.<op> on CUDA tensors under spectra.backend("native") (the CUDA kernel)
  torch_cuda   spectra.ops.torch_path.<op> on CUDA tensors
  torch_cpu    spectra.ops.torch_path.<op> on the CPU tensors
Real-valued outputs within the tolerances of tests/ops/test_cuda_kernels.py; n_visible exact;
argmax equal or a float64 tie; k_eff equal or every cumulative mass between the two answers within
1e-5 of θ (the op's tie rule). A path that cannot run here (no CUDA, no CUDA kernel in the build,
no torch path yet) is reported as "skipped: <why>", never as a failure.

--device cpu (or no CUDA device) runs the torch_cpu path only: the CPU self-check of this script.
Exit status 1 when any path that ran failed a case.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import sys
import time
import traceback
from functools import partial

import torch

import spectra
from spectra import plasticity
from spectra.ops import reference

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, "fp64": torch.float64}
OPS = ("attn_row_stats", "vec_stats", "plasticity_pairwise")
PATHS = ("cuda_kernel", "torch_cuda", "torch_cpu")
THRESHOLD = 0.9
ATTN_REAL = ("entropy", "entropy_normalized", "max_attn", "sink_mass", "sink_mass_n", "logit_var")
# name -> (batch, heads, kv_heads, tq, tk, dim, mask options)
ATTN_CASES = {
    "causal gqa4": (2, 8, 2, 70, 70, 64, {}),
    "causal mha d128": (1, 4, 4, 70, 70, 128, {}),
    "bidirectional": (2, 8, 2, 70, 70, 64, {"causal": False}),
    "sliding_window 17": (2, 8, 2, 70, 70, 64, {"sliding_window": 17}),
    "bidirectional sliding_window 5": (1, 8, 2, 40, 40, 64, {"causal": False, "sliding_window": 5}),
    "key padding": (2, 8, 2, 70, 70, 64, {"key_valid": "left-pad"}),
    "key padding bidirectional": (2, 8, 2, 70, 70, 64, {"causal": False, "key_valid": "left-pad"}),
    "softcap 5": (2, 8, 2, 70, 70, 64, {"softcap": 5.0}),
    "query_offset 3": (1, 8, 2, 60, 70, 64, {"query_offset": 3}),
    "query_offset -4 (rows without keys)": (1, 8, 2, 60, 70, 64, {"query_offset": -4}),
    "decode rows Tq<Tk (default offset)": (2, 8, 2, 9, 130, 64, {}),
    "gqa8 d128 everything": (
        2,
        32,
        4,
        33,
        90,
        128,
        {"sliding_window": 40, "key_valid": "left-pad", "softcap": 30.0, "query_offset": 50},
    ),
    "long rows 3000 keys": (1, 4, 1, 40, 3000, 64, {}),
    "learned sinks": (2, 8, 2, 70, 70, 64, {"sinks": "spread", "key_valid": "left-pad"}),
    "custom chunked mask": (2, 8, 2, 70, 70, 64, {"visible": "chunks of 16", "key_valid": "left-pad"}),
    "custom per-head mask and sinks": (1, 8, 2, 50, 50, 64, {"visible": "per head", "sinks": "spread"}),
}
QUICK_ATTN = (
    "causal gqa4",
    "bidirectional",
    "sliding_window 17",
    "key padding",
    "softcap 5",
    "query_offset -4 (rows without keys)",
)


class Report:
    """Per (op, path): case counts, failures and the worst differences seen."""

    def __init__(self) -> None:
        self.ops = {op: {path: {"passed": 0, "failed": 0, "failures": [], "worst": {}} for path in PATHS} for op in OPS}
        self.skipped: dict[str, str] = {}
        self.checks: dict[str, str] = {}

    def record(self, op: str, path: str, case: str, problems: list[str], worst: dict[str, float]) -> None:
        entry = self.ops[op][path]
        for name, value in worst.items():
            entry["worst"][name] = max(entry["worst"].get(name, 0.0), value)
        if problems:
            entry["failed"] += 1
            entry["failures"].append(f"{case}: " + "; ".join(problems))
        else:
            entry["passed"] += 1

    def verdict(self, op: str, path: str) -> str:
        if path in self.skipped:
            return f"skipped: {self.skipped[path]}"
        entry = self.ops[op][path]
        if entry["failed"]:
            return f"FAIL {entry['failed']}/{entry['passed'] + entry['failed']}"
        return f"pass {entry['passed']}/{entry['passed']}" if entry["passed"] else "no cases"


def compare_real(got, want, name, rtol, atol, problems, worst) -> None:
    got, want = got.detach().cpu(), want.detach().cpu()
    if got.shape != want.shape or got.dtype != want.dtype:
        problems.append(f"{name}: {got.dtype}{tuple(got.shape)} vs {want.dtype}{tuple(want.shape)}")
        return
    g, w = got.double(), want.double()
    nan_diff = torch.isnan(g) != torch.isnan(w)
    both = ~torch.isnan(g) & ~torch.isnan(w)
    err = (g - w).abs()[both]
    if err.numel():
        worst[f"{name} abs"] = float(err.max())
        worst[f"{name} rel"] = float((err / w[both].abs().clamp(min=1e-30)).max())
    bad = int(nan_diff.sum()) + int((err > atol + rtol * w[both].abs()).sum())
    if bad:
        problems.append(f"{name}: {bad} of {g.numel()} outside rtol {rtol:g} atol {atol:g}")


def truth_attn(q, k, scaling, mask):
    """float64 probabilities of the masked softmax: (keys (B, H, Tq, Tk), outcomes), the outcomes the
    keys and, with learned sinks, the sink as one more column (what k_eff counts)."""
    group = q.shape[1] // k.shape[1]
    logits = q.double() @ k.double().repeat_interleave(group, dim=1).transpose(-1, -2) * scaling
    if mask.get("softcap"):
        logits = mask["softcap"] * torch.tanh(logits / mask["softcap"])
    visible = reference.visible_keys(
        q.shape[2],
        k.shape[2],
        causal=mask.get("causal", True),
        sliding_window=mask.get("sliding_window"),
        query_offset=mask.get("query_offset"),
        key_valid=mask.get("key_valid"),
    ).expand_as(logits)
    if mask.get("visible") is not None:
        visible = visible & mask["visible"].cpu()
    logits = logits.masked_fill(~visible, -math.inf)
    if mask.get("sinks") is None:
        p = torch.softmax(logits, dim=-1)
        return p, p
    column = mask["sinks"].double().cpu().view(1, -1, 1, 1).expand(*logits.shape[:3], 1)
    both = torch.softmax(torch.cat([logits, column], -1), dim=-1)
    return both[..., :-1], both


def compare_attn(got, want, probabilities, threshold, problems, worst, tie_band=1e-5) -> None:
    p, outcomes = probabilities
    for name in ATTN_REAL:
        compare_real(
            getattr(got, name), getattr(want, name), name, 1e-4, 1e-4 if name == "logit_var" else 1e-5, problems, worst
        )
    n_vis = got.n_visible.cpu()
    if not torch.equal(n_vis, want.n_visible):
        problems.append(f"n_visible: {int((n_vis != want.n_visible).sum())} differ")
    empty = (want.n_visible == 0) | torch.isnan(want.entropy)
    g_arg, g_k = got.argmax.cpu(), got.k_eff.cpu()
    if not (torch.equal(g_arg[empty], want.argmax[empty]) and torch.equal(g_k[empty], want.k_eff[empty])):
        problems.append("argmax/k_eff of rows without keys differ")
    live = ~empty
    if p.shape[-1] == 0 or not bool(live.any()):
        return
    picked = p.gather(-1, g_arg.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    arg_ok = (g_arg == want.argmax) | (picked >= p.amax(-1) * (1 - 1e-4) - 1e-7)
    worst["argmax differs (ties) frac"] = float((g_arg != want.argmax)[live].double().mean())
    if not bool(arg_ok[live].all()):
        problems.append(f"argmax: {int((~arg_ok & live).sum())} rows differ beyond float64 ties")
    c_k = want.k_eff
    cumulative = outcomes.sort(dim=-1, descending=True).values.cumsum(-1)
    lo, hi = torch.minimum(g_k, c_k), torch.maximum(g_k, c_k)
    idx = torch.arange(cumulative.shape[-1])
    between = (idx >= (lo - 1).clamp(min=0).unsqueeze(-1)) & (idx < (hi - 1).clamp(min=0).unsqueeze(-1))
    tie_ok = (((cumulative - (threshold - 1e-6)).abs() <= tie_band) | ~between).all(-1)
    worst["k_eff differs (ties) frac"] = float((g_k != c_k)[live].double().mean())
    worst["k_eff max abs diff"] = float((g_k - c_k)[live].abs().max())
    bad = live & ~((g_k == c_k) | tie_ok)
    if bool(bad.any()):
        problems.append(
            f"k_eff: {int(bad.sum())} rows differ beyond ties (e.g. {g_k[bad][:3].tolist()} vs {c_k[bad][:3].tolist()})"
        )


def attn_inputs(spec, dtype, seed):
    batch, heads, kv_heads, tq, tk, dim, opts = spec
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, tq, heads, dim, generator=gen).transpose(1, 2)  # the (B, T, H, D) view a model hands over
    k = torch.randn(batch, kv_heads, tk, dim, generator=gen)
    mask = dict(opts)
    if mask.get("key_valid") == "left-pad":
        valid = torch.ones(batch, tk, dtype=torch.bool)
        for b in range(batch):
            valid[b, : 3 + 5 * b] = False
        mask["key_valid"] = valid
    if mask.get("sinks") == "spread":
        mask["sinks"] = torch.linspace(-2.0, 4.0, heads).to(dtype)
    if mask.get("visible") == "chunks of 16":
        pos = torch.arange(tk)
        mask["visible"] = (pos[-tq:, None] // 16 == pos[None] // 16)[None, None]
    elif mask.get("visible") == "per head":
        mask["visible"] = torch.rand(1, heads, tq, tk, generator=gen) < 0.7
    return (q * 1.5).to(dtype), k.to(dtype), mask


def to(mask: dict, device) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in mask.items()}


def run_path(report, op, path, case, fn, check) -> None:
    """Runs fn() (the path's result), then check(result, problems, worst); an exception is a failure."""
    if path in report.skipped:
        return
    problems: list[str] = []
    worst: dict[str, float] = {}
    try:
        got = fn()
        if path != "torch_cpu":
            torch.cuda.synchronize()
        check(got, problems, worst)
    except Exception as exc:  # noqa: BLE001  (a raising path is a failed case, and the run goes on)
        problems.append(f"{type(exc).__name__}: {str(exc)[:300]}")
    report.record(op, path, case, problems, worst)


def native():
    return spectra.backend("native") if hasattr(spectra, "backend") else contextlib.nullcontext()


def kernel_call(fn, *args, **kw):
    """fn(*args, **kw) on the native backend (on CUDA tensors: the CUDA kernel)."""
    with native():
        return fn(*args, **kw)


def compare_attention(report: Report, torch_path, dname: str, cases: list[str]) -> None:
    dtype = DTYPES[dname]
    for seed, name in enumerate(cases):
        q, k, mask = attn_inputs(ATTN_CASES[name], dtype, seed)
        scaling = q.shape[-1] ** -0.5
        want = kernel_call(spectra.attn_row_stats, q, k, scaling, threshold=THRESHOLD, **mask)
        p = truth_attn(q, k, scaling, mask)
        case = f"{dname} {name}"
        cpu_args = (q, k, scaling)
        on_cuda = not {"cuda_kernel", "torch_cuda"} <= report.skipped.keys()
        cuda_args = (q.cuda(), k.cuda(), scaling) if on_cuda else ()
        cuda_mask = to(mask, "cuda") if on_cuda else {}

        def check(got, problems, worst, want=want, p=p):
            compare_attn(got, want, p, THRESHOLD, problems, worst)

        run_path(
            report,
            "attn_row_stats",
            "cuda_kernel",
            case,
            partial(kernel_call, spectra.attn_row_stats, *cuda_args, threshold=THRESHOLD, **cuda_mask),
            check,
        )
        if torch_path is not None:
            run_path(
                report,
                "attn_row_stats",
                "torch_cuda",
                case,
                partial(torch_path.attn_row_stats, *cuda_args, threshold=THRESHOLD, **cuda_mask),
                check,
            )
            run_path(
                report,
                "attn_row_stats",
                "torch_cpu",
                case,
                partial(torch_path.attn_row_stats, *cpu_args, threshold=THRESHOLD, **mask),
                check,
            )


def compare_vec_stats(report: Report, torch_path, dname: str) -> None:
    dtype = DTYPES[dname]
    gen = torch.Generator().manual_seed(1)
    base = (torch.randn(6, 10, 16, generator=gen, dtype=torch.float64) * 3).to(dtype)
    base[0, 0, 3] = float("nan")
    base[1, 1] = 0  # the zero vector: participation ratio NaN
    views = {
        "contiguous": base,
        "transposed": base.transpose(0, 1),
        "sliced": base[:, ::3, 1::2],
        "bhtd view": base.view(6, 10, 4, 4).permute(0, 2, 1, 3),
        "long rows": (torch.randn(3, 5000, generator=gen, dtype=torch.float64)).to(dtype),
    }
    # The test's rtol (1e-6; 1e-12 in float64), grown with the row length for the long rows.
    rtol = 1e-12 if dtype == torch.float64 else 1e-6
    for vname, view in views.items():
        want = kernel_call(spectra.vec_stats, view)
        tol = rtol * max(1.0, view.shape[-1] / 64)

        def check(got, problems, worst, want=want, tol=tol):
            for stat in ("norm", "max_abs", "participation_ratio"):
                compare_real(getattr(got, stat), getattr(want, stat), stat, tol, 0.0, problems, worst)

        case = f"{dname} {vname}"
        run_path(
            report,
            "vec_stats",
            "cuda_kernel",
            case,
            lambda view=view: kernel_call(spectra.vec_stats, view.cuda()),
            check,
        )
        if torch_path is not None:
            run_path(
                report, "vec_stats", "torch_cuda", case, lambda view=view: torch_path.vec_stats(view.cuda()), check
            )
            run_path(report, "vec_stats", "torch_cpu", case, partial(torch_path.vec_stats, view), check)


def compare_pairwise(report: Report, torch_path, dname: str) -> None:
    dtype = DTYPES[dname]
    gen = torch.Generator().manual_seed(2)
    pairs, d = 37, 24
    w = torch.randn(pairs, d, generator=gen, dtype=torch.float64)
    w[3] = 0  # v = 0 with m = 0: p = 1/2, PP = 1
    a = torch.randn(d, d, generator=gen, dtype=torch.float64)
    means = {
        "shared": torch.randn(d, generator=gen, dtype=torch.float64),
        "per_pair": torch.randn(pairs, d, generator=gen, dtype=torch.float64),
    }
    variances = {
        "diagonal": torch.rand(d, generator=gen, dtype=torch.float64) + 0.05,
        "full": a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64),
    }
    for mname, mean in means.items():
        for vname, var in variances.items():
            inputs = (w.to(dtype), mean.to(dtype), var.to(dtype))
            want = kernel_call(plasticity.pairwise, *inputs)

            def check(got, problems, worst, want=want):
                for stat in ("m", "v", "p", "pp"):
                    compare_real(getattr(got, stat), getattr(want, stat), stat, 1e-10, 1e-12, problems, worst)

            def on_cuda(fn, inputs=inputs):
                return fn(*(t.cuda() for t in inputs))

            case = f"{dname} mean {mname}, var {vname}"
            run_path(
                report,
                "plasticity_pairwise",
                "cuda_kernel",
                case,
                partial(on_cuda, partial(kernel_call, plasticity.pairwise)),
                check,
            )
            if torch_path is not None:
                run_path(
                    report,
                    "plasticity_pairwise",
                    "torch_cuda",
                    case,
                    partial(on_cuda, torch_path.plasticity_pairwise),
                    check,
                )
                run_path(
                    report,
                    "plasticity_pairwise",
                    "torch_cpu",
                    case,
                    partial(torch_path.plasticity_pairwise, *inputs),
                    check,
                )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=list(DTYPES))
    parser.add_argument("--quick", action="store_true", help="a few attention cases (the CPU self-check)")
    parser.add_argument("--json", default=None, help="write the per-op, per-path results here")
    parser.add_argument(
        "--torch-path-module",
        default="spectra.ops.torch_path",
        help="the module with the torch path's attn_row_stats, vec_stats and plasticity_pairwise",
    )
    args = parser.parse_args()
    t0 = time.perf_counter()
    report = Report()
    cuda = args.device == "cuda" and torch.cuda.is_available()
    if not cuda:
        why = "no CUDA" if not torch.cuda.is_available() else "--device cpu"
        report.skipped["cuda_kernel"] = report.skipped["torch_cuda"] = why
    else:
        missing = [op for op in OPS if not torch._C._dispatch_has_kernel_for_dispatch_key(f"spectra::{op}", "CUDA")]
        if missing:
            report.skipped["cuda_kernel"] = f"no CUDA kernel in this build for {', '.join(missing)}"
    torch_path = None
    try:
        torch_path = importlib.import_module(args.torch_path_module)
        missing = [name for name in OPS if not callable(getattr(torch_path, name, None))]
        if missing:
            torch_path = None
            raise ImportError(f"{args.torch_path_module} has no {', '.join(missing)}")
    except Exception as exc:  # noqa: BLE001
        report.skipped["torch_cuda"] = report.skipped["torch_cpu"] = f"no torch path ({type(exc).__name__}: {exc})"
    print(
        f"torch {torch.__version__}, device {'cuda: ' + torch.cuda.get_device_name(0) if cuda else 'cpu'}, "
        f"spectra {spectra.__file__}"
    )
    for path in PATHS:
        if path in report.skipped:
            print(f"{path}: skipped: {report.skipped[path]}")

    # The backend switch: spectra.backend("torch") must route spectra.<op> to the torch path.
    if torch_path is None or not hasattr(spectra, "backend"):
        report.checks["backend switch"] = "skipped: no torch path / spectra.backend in this checkout"
        print("backend switch:", report.checks["backend switch"])
    else:
        try:
            from spectra.ops import backend

            x = torch.randn(3, 5, 16)
            with spectra.backend("torch"):
                inside = backend.current()
                routed = spectra.vec_stats(x)
            with spectra.backend("native"):
                inside_native = backend.current()
            same = torch.equal(routed.norm, torch_path.vec_stats(x).norm)
            report.checks["backend switch"] = (
                f"current() {inside!r} / {inside_native!r}; spectra.vec_stats under backend('torch') "
                f"{'equals' if same else 'DIFFERS from'} torch_path.vec_stats"
            )
        except Exception as exc:  # noqa: BLE001
            report.checks["backend switch"] = f"FAIL {type(exc).__name__}: {exc}"
        print("backend switch:", report.checks["backend switch"])

    cases = [name for name in ATTN_CASES if not args.quick or name in QUICK_ATTN]
    for dname in args.dtypes:
        compare_attention(report, torch_path, dname, cases)
        compare_vec_stats(report, torch_path, dname)
        compare_pairwise(report, torch_path, dname)

    failed = False
    for op in OPS:
        print(f"COMPARE {op:<20} " + "  ".join(f"{path}={report.verdict(op, path)}" for path in PATHS))
        for path in PATHS:
            entry = report.ops[op][path]
            failed |= entry["failed"] > 0
            for line in entry["failures"][:8]:
                print(f"    {path} FAIL {line}")
            if entry["worst"]:
                print(f"    {path} worst: " + ", ".join(f"{k} {v:.3g}" for k, v in sorted(entry["worst"].items())))
    print(f"compare_ops: {time.perf_counter() - t0:.1f} s")
    if args.json:
        out = {
            "device": "cuda" if cuda else "cpu",
            "skipped": report.skipped,
            "checks": report.checks,
            "ops": {
                op: {path: dict(report.ops[op][path], verdict=report.verdict(op, path)) for path in PATHS} for op in OPS
            },
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        sys.exit(2)

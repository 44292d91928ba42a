"""One prepared GPU check (< 5 minutes on an H200): correctness first, then timings only if every check passed.

Correctness (nothing is timed until all of these pass; the failing checks are named and the exit status is 1):
1. The Triton SSD with D and z (the fused skip and gate) against the float64 PyTorch reference, outputs and all
   gradients: the default chunk 64 with d_state 64 and 128, chunk 128 with d_state 128 (the paper sizes), exact
   "ieee" and default TF32 dots, and bf16.
2. The Triton gated RMSNorm (fp32, bf16) against float64, output and all gradients.
3. A training step (forward, backward, AdamW) of ``earthcast.models.backbone.Backbone`` with the paper-wb2 mixer
   sizes, Triton vs reference from the same weights, in fp32 with exact dots and in bf16 autocast; the Triton
   model passes D and z to the fused kernel.

Timings (bf16): SSD forward + backward at L = 1k … 64k, Triton vs the PyTorch chunked SSD vs causal SDPA (flash)
with the same heads and head dim (median of CUDA-event timings, peak memory); a backbone training step, Triton
vs reference; the batched planner beam search vs the looped one.

Run from the repository root as ``bash benchmarks/gpu_check.sh``; it refuses to run with ``TRITON_INTERPRET``
set. Prints ``CHECK`` lines, the timing tables and ``BAR`` lines at the end.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = float(os.environ.get("GPU_CHECK_BUDGET_S", "200"))  # no new timing starts after this
START = time.monotonic()
BARS: list[str] = []


def ensure_earthcast_importable() -> None:
    """Fall back to the pyproject package-dir mapping when earthcast is not installed (no pip needed)."""
    try:
        import earthcast.models.backbone  # noqa: F401

        return
    except ImportError:
        pass
    import importlib.util

    import tomllib  # Python >= 3.11

    sys.path.insert(0, str(ROOT))
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for name, folder in sorted(mapping.items(), key=lambda kv: kv[0].count(".")):
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(
            name, ROOT / folder / "__init__.py", submodule_search_locations=[str(ROOT / folder)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)


def bar(name: str, value: float, op: str, target: float) -> None:
    ok = {">=": value >= target, "<=": value <= target, "==": value == target}[op]
    BARS.append(f"BAR {name} {value:.3g} {op} {target:g} {'PASS' if ok else 'FAIL'}")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def ssd_inputs(
    b: int, L: int, h: int, p: int, g: int, n: int, dtype: torch.dtype, *, d_per_p: bool, with_state: bool
) -> dict:
    """SSD operands on CUDA with D ((h, p) or (h,)), z and dt_bias, plus initial states if ``with_state``."""
    gen = torch.Generator(device="cuda").manual_seed(0)

    def rnd(*shape: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        v = scale * torch.randn(*shape, device="cuda", generator=gen) + shift
        return v.to(dtype).requires_grad_()

    t = {
        "x": rnd(b, L, h, p),
        "dt": rnd(b, L, h),
        "A": (-(0.5 + 3.5 * torch.rand(h, device="cuda", generator=gen))).to(dtype).requires_grad_(),
        "B": rnd(b, L, g, n, scale=n**-0.5),
        "C": rnd(b, L, g, n, scale=n**-0.5),
        "D": rnd(h, p) if d_per_p else rnd(h),
        "z": rnd(b, L, h, p),
        "dt_bias": rnd(h, scale=0.5, shift=-2.0),
    }
    if with_state:
        t["initial_states"] = rnd(b, h, p, n)
    return t


def run_ssd(t: dict, backend: str, chunk: int) -> tuple[torch.Tensor, ...]:
    """y [and the final state when ``t`` has initial states] of ``ssd_scan`` on ``backend``."""
    from earthcast.kernels import ssd_scan

    kw = {k: t[k] for k in ("D", "z", "dt_bias", "initial_states") if k in t}
    out = ssd_scan(t["x"], t["dt"], t["A"], t["B"], t["C"], chunk_size=chunk, backend=backend,
                   return_final_states="initial_states" in t, **kw)  # fmt: skip
    return out if isinstance(out, tuple) else (out,)


def check(name: str, err: float, tol: float, failures: list[str], what: str = "rel_err") -> None:
    ok = err <= tol and math.isfinite(err)
    print(f"CHECK {name:<48} {what} {err:.2e} <= {tol:.0e} {'PASS' if ok else 'FAIL'}")
    if not ok:
        failures.append(name)


# (tag, dtype, dot precision, tolerance, chunk, d_state, D per (head, headdim)): the default chunk 64 with the
# d_state 64 of paper-1deg and the 128 of paper-wb2 (D per head, as the model passes it), chunk 128 with d_state
# 128, the default TF32 dots, and bf16 as trained. All pass D and z, so the fused skip and gate run.
SSD_CASES = [
    ("fp32-ieee c64 n64", torch.float32, "ieee", 1e-4, 64, 64, True),
    ("fp32-ieee c64 n128 Dh", torch.float32, "ieee", 1e-4, 64, 128, False),
    ("fp32-ieee c128 n128", torch.float32, "ieee", 1e-4, 128, 128, True),
    ("fp32-tf32 c64 n128 Dh", torch.float32, "tf32", 1e-2, 64, 128, False),
    ("bf16 c64 n128 Dh", torch.bfloat16, "tf32", 3e-2, 64, 128, False),
]


def ssd_checks(failures: list[str]) -> None:
    """Triton SSD vs the float64 PyTorch reference on the same (rounded) operands: y, final state, every
    gradient. dA and ddt_bias sum one term per token and cancel heavily, so their error per head is measured
    against the L1 mass of those terms (``decay_term_mass``; for ddt_bias, the sum of |ddt|)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from kernel_cases import decay_term_mass

    for tag, dtype, prec, tol, chunk, n, d_per_p in SSD_CASES:
        os.environ["EARTHCAST_TRITON_DOT_PRECISION"] = prec
        t = ssd_inputs(2, 1000, 8, 64, 2, n, dtype, d_per_p=d_per_p, with_state=True)
        ref_in = {k: v.detach().double().requires_grad_() for k, v in t.items()}
        outs, refs = run_ssd(t, "triton", chunk), run_ssd(ref_in, "reference", chunk)
        ws = tuple(torch.randn_like(r) for r in refs)
        names = list(t)
        g_tri = torch.autograd.grad(outs, [t[k] for k in names], [w.to(o.dtype) for o, w in zip(outs, ws)])
        g_ref = dict(zip(names, torch.autograd.grad(list(refs), [ref_in[k] for k in names], ws)))
        check(f"ssd {tag} y", rel(outs[0], refs[0]), tol, failures)
        check(f"ssd {tag} final_states", rel(outs[1], refs[1]), tol, failures)
        mass = {"A": decay_term_mass(ref_in, ws, (0.0, math.inf)), "dt_bias": g_ref["dt"].abs().sum((0, 1))}
        for k, a in zip(names, g_tri):
            if k in mass:
                err = ((a.double() - g_ref[k]).abs() / mass[k]).max().item()
                check(f"ssd {tag} d{k}", err, tol, failures, "err/mass")
            else:
                check(f"ssd {tag} d{k}", rel(a, g_ref[k]), tol, failures)


def rmsnorm_checks(failures: list[str]) -> None:
    from earthcast.kernels import gated_rms_norm

    os.environ["EARTHCAST_TRITON_DOT_PRECISION"] = "tf32"
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 1e-2)):
        for nbg in (False, True):
            x, z = (torch.randn(4096, 1024, device="cuda", dtype=dtype, requires_grad=True) for _ in range(2))
            w = torch.randn(1024, device="cuda", dtype=dtype, requires_grad=True)
            x64, z64, w64 = (v.detach().double().requires_grad_() for v in (x, z, w))
            out = gated_rms_norm(x, w, z, group_size=256, norm_before_gate=nbg, backend="triton")
            ref = gated_rms_norm(x64, w64, z64, group_size=256, norm_before_gate=nbg, backend="reference")
            go = torch.randn_like(ref)
            grads = torch.autograd.grad(out, (x, w, z), go.to(dtype))
            grads_ref = torch.autograd.grad(ref, (x64, w64, z64), go)
            tag = f"rmsnorm {str(dtype)[6:]} norm_before_gate={nbg}"
            check(f"{tag} out", rel(out, ref), tol, failures)
            for k, a, b in zip("xwz", grads, grads_ref):
                check(f"{tag} d{k}", rel(a, b), tol if k != "w" else 10 * tol, failures)


# the paper-wb2 mixer sizes (headdim 64, d_state 128, default chunk 64) on a small field; the cross-scan folds 4
# directions, so the fused path's D/4 per direction and per-direction gate are checked too
CHECK_MODEL = dict(width=256, pattern="AMF MF", heads=4, headdim=64, d_state=128, chunk_size=64, scan="cross")


def train_step(model: torch.nn.Module, x: torch.Tensor, bf16: bool) -> tuple[torch.Tensor, ...]:
    """One AdamW step on the MSE to x. Returns (output, loss, loss after the step, *gradients)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        out = model(x)
    loss = F.mse_loss(out.float(), x)
    loss.backward()
    opt.step()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        after = F.mse_loss(model(x).float(), x)
    return out.detach(), loss.detach(), after, *(p.grad for p in model.parameters())


def train_step_checks(failures: list[str]) -> None:
    """A Backbone training step, Triton vs reference from the same weights (D away from its init of 1): output,
    loss, gradients (fp32: the worst parameter; bf16: all together) and the loss after the AdamW step."""
    from earthcast.models.backbone import Backbone

    torch.manual_seed(0)
    model = Backbone(8, patch_size=4, **CHECK_MODEL)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".D"):
                param.uniform_(0.5, 1.5)
    names = [name for name, _ in model.named_parameters()]
    x = torch.randn(2, 8, 64, 64, device="cuda")
    torch.backends.cudnn.allow_tf32 = False  # the 2-D convs: both paths run them, keep them exact too
    for tag, bf16, prec, tol in (("fp32-ieee", False, "ieee", 1e-4), ("bf16-autocast", True, "tf32", 3e-2)):
        os.environ["EARTHCAST_TRITON_DOT_PRECISION"] = prec
        res = {}
        for backend in ("triton", "reference"):
            net = Backbone(8, patch_size=4, backend=backend, **CHECK_MODEL).cuda()
            net.load_state_dict(model.state_dict())
            res[backend] = train_step(net, x, bf16)
            used = {op for layer in net.kernel_backends().values() for op in layer.values()}
            check(f"train {tag} {backend} kernels only", float(used != {backend}), 0, failures, "wrong")
        tri, ref = res["triton"], res["reference"]
        for i, what in enumerate(("output", "loss", "loss after AdamW step")):
            check(f"train {tag} {what}", rel(tri[i], ref[i]), tol, failures)
        if bf16:
            flat = [torch.cat([g.flatten() for g in r[3:]]) for r in (tri, ref)]
            check(f"train {tag} gradient, all parameters", rel(*flat), 10 * tol, failures)
        else:
            err, name = max((rel(a, b), n) for n, a, b in zip(names, tri[3:], ref[3:]))
            check(f"train {tag} gradient, worst {name}", err, 10 * tol, failures)
    torch.backends.cudnn.allow_tf32 = True


def cuda_time(fn: Callable[[], object], iters: int = 5) -> tuple[float, float]:
    """(median ms, peak MiB above the starting allocation) of fn on the current stream."""
    fn()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), (torch.cuda.max_memory_allocated() - base) / 2**20


def time_length(L: int, h: int, p: int, n: int, chunk: int) -> tuple[tuple[float, float], ...]:
    """(ms, MiB) of bf16 fwd+bwd at length L for the Triton SSD, the PyTorch chunked SSD and causal SDPA.
    The SSD gets D per head, z and dt_bias, as the Mamba2 mixer passes them."""
    t = ssd_inputs(1, L, h, p, 1, n, torch.bfloat16, d_per_p=False, with_state=False)
    gy = torch.randn(1, L, h, p, device="cuda", dtype=torch.bfloat16)
    inputs = list(t.values())
    q, k, v = (
        torch.randn(1, h, L, p, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3)
    )
    go = gy.transpose(1, 2)

    def triton_step() -> object:
        return torch.autograd.grad(run_ssd(t, "triton", chunk)[0], inputs, gy)

    def torch_step() -> object:
        return torch.autograd.grad(run_ssd(t, "reference", chunk)[0], inputs, gy)

    def sdpa_step() -> object:
        return torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, is_causal=True), (q, k, v), go)

    return cuda_time(triton_step), cuda_time(torch_step, 3), cuda_time(sdpa_step)


def timings() -> None:
    h, p, n, chunk = 16, 64, 128, 64
    os.environ["EARTHCAST_TRITON_DOT_PRECISION"] = "tf32"
    print(f"\nbf16 fwd+bwd, batch 1, heads {h}, headdim {p}, d_state {n}, ngroups 1, chunk {chunk}, D and z; "
          "SDPA causal")  # fmt: skip
    print(f"{'L':>6} {'triton ms':>10} {'torch ms':>10} {'sdpa ms':>9} {'torch/tri':>9} {'sdpa/tri':>9} "
          f"{'tri MiB':>8} {'torch MiB':>9} {'sdpa MiB':>8}")  # fmt: skip
    vs_torch, vs_sdpa = [], []
    for L in (1024, 2048, 4096, 8192, 16384, 32768, 65536):
        if time.monotonic() - START > BUDGET_S:
            print(f"{L:>6} skipped: time budget of {BUDGET_S:.0f} s reached")
            continue
        tri, tor, sd = time_length(L, h, p, n, chunk)
        torch.cuda.empty_cache()
        vs_torch.append(tor[0] / tri[0])
        if L >= 8192:
            vs_sdpa.append(sd[0] / tri[0])
        print(f"{L:>6} {tri[0]:>10.2f} {tor[0]:>10.2f} {sd[0]:>9.2f} {tor[0] / tri[0]:>8.1f}x {sd[0] / tri[0]:>8.2f}x "
              f"{tri[1]:>8.0f} {tor[1]:>9.0f} {sd[1]:>8.0f}")  # fmt: skip
    if vs_torch:
        bar("gpu_triton_ssd_vs_torch_chunked_min_speedup", min(vs_torch), ">=", 3)
    if vs_sdpa:
        bar("gpu_triton_ssd_vs_sdpa_min_speedup_ge8k", min(vs_sdpa), ">=", 1)


def time_train_step(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(ms, MiB) of one AdamW training step of ``model`` in bf16 autocast on the MSE to x."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.mse_loss(model(x).float(), x)
        loss.backward()
        opt.step()

    return cuda_time(step)


def backbone_step() -> None:
    """A training step on a 2x8x256x256 field, Triton vs reference."""
    from earthcast.models.backbone import Backbone

    settings = dict(width=512, pattern="AMF MF MF MF", patch_size=4, headdim=64, d_state=128, chunk_size=64)
    print(f"\nbackbone train step: in/out 8 channels, field 2x8x256x256 -> 64x64 tokens, {settings}")
    x = torch.randn(2, 8, 256, 256, device="cuda")
    ms = {}
    for backend in ("triton", "reference"):
        ms[backend], mib = time_train_step(Backbone(8, backend=backend, **settings).cuda(), x)
        torch.cuda.empty_cache()
        print(f"  {backend:>9}: {ms[backend]:.1f} ms/step, peak {mib:.0f} MiB")
    bar("gpu_backbone_step_reference_over_triton", ms["reference"] / ms["triton"], ">=", 1)


def planner_search() -> None:
    """Batched beam search against the looped reference at B = 8, K = 10, H = 4 on 4 samples of 13x64x32,
    with a randomly initialised BeamVQ head on a one-convolution base (the search's cost is the head's)."""
    from earthcast.models.geometry import SphereConv2d
    from earthcast.planners.critics import AgreementCritic
    from earthcast.planners.heads import BeamVQHead, HeadConfig
    from earthcast.planners.search import BeamSearch, looped_beam_search

    torch.manual_seed(0)
    c, n, horizon, width, k = 13, 4, 4, 8, 10
    base = SphereConv2d(c, c, 3).cuda().eval()
    head = BeamVQHead(c, "global", config=HeadConfig(k=k)).cuda().eval()
    critic = AgreementCritic()

    def propose(window: torch.Tensor, t: int) -> torch.Tensor:
        state = window[:, -1]
        return head.propose(state, state + base(state), k)

    def score(cands: torch.Tensor, target: torch.Tensor | None, t: int) -> torch.Tensor:
        return critic(cands)

    window = torch.randn(n, 1, c, 32, 64, device="cuda")
    search = BeamSearch(horizon, width, k)

    def looped() -> None:
        for i in range(n):
            looped_beam_search(propose, score, window[i : i + 1], None, horizon, width, k)

    with torch.no_grad():
        batched_ms, _ = cuda_time(lambda: search(propose, score, window), iters=3)
        looped_ms, _ = cuda_time(looped, iters=1)
    print(f"\nplanner beam search (B={width}, K={k}, H={horizon}, {n} samples): batched {batched_ms:.1f} ms, "
          f"looped {looped_ms:.1f} ms")  # fmt: skip
    bar("gpu_planner_batched_search_speedup_B8", looped_ms / batched_ms, ">=", 5)


def main() -> None:
    if os.environ.get("TRITON_INTERPRET"):
        sys.exit(
            "gpu_check: TRITON_INTERPRET is set, so Triton would interpret the kernels; "
            "unset it to check and time them"
        )
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device visible; run this on the GPU machine")
    ensure_earthcast_importable()
    import triton

    from earthcast.kernels import select_backend

    print(f"torch {torch.__version__}, triton {triton.__version__}, {torch.cuda.get_device_name()}")
    print(f"backend for a CUDA tensor: {select_backend(torch.zeros(1, device='cuda'))}")
    failures: list[str] = []
    checks = [("ssd", ssd_checks), ("rmsnorm", rmsnorm_checks), ("train step", train_step_checks)]
    timed = [("ssd timings", timings), ("backbone timing", backbone_step), ("planner timing", planner_search)]
    for name, fn in checks:  # every check runs, so one report names all that fail
        run_section(name, lambda fn=fn: fn(failures), failures)
    if failures:  # timings of wrong kernels mean nothing
        print(
            f"\ngpu_check: {len(failures)} correctness check(s) failed, so nothing was timed: "
            + ", ".join(failures)
        )
        sys.exit(1)
    print("\nall correctness checks passed; timing")
    for name, fn in timed:
        if time.monotonic() - START > BUDGET_S:
            print(f"\n{name} skipped: time budget of {BUDGET_S:.0f} s reached")
            continue
        run_section(name, fn, failures)
    bar("gpu_kernel_check_failures", len(failures), "==", 0)
    print(f"\ntotal {time.monotonic() - START:.0f} s")
    print("\n".join(BARS))
    if failures:
        sys.exit("gpu_check: failed: " + ", ".join(failures))


def run_section(name: str, fn: Callable[[], None], failures: list[str]) -> None:
    """Run one section; a crash is recorded as a failure and printed, so it cannot hide the other results."""
    t0 = time.monotonic()
    try:
        fn()
    except Exception as err:
        failures.append(f"{name} crashed")
        print(f"\n{name} FAILED with {type(err).__name__}: {err}")
    print(f"[{name}: {time.monotonic() - t0:.0f} s]")


if __name__ == "__main__":
    main()

"""CPU benchmark: naive SSD recurrence vs chunked SSD (PyTorch) vs causal SDPA attention, L = 512 … 16384.

Forward passes under ``torch.no_grad`` (inference), batch 1, one torch thread by default (``--threads``:
timings on a shared 2-core machine are far steadier single-threaded), one run per cell after a warm-up call at the
smallest length; chunked SSD and SDPA take the best of ``--repeats``; the naive recurrence runs once per length
(it is never extrapolated). Peak memory is measured in a separate call: the peak of live bytes of the tensors
the method allocates, tracked per op with a TorchDispatchMode (inputs excluded; scratch memory freed inside
one op is not seen).

    python benchmarks/ssd_cpu.py --quick      # h=2, p=n=32, < 60 s
    python benchmarks/ssd_cpu.py              # h=4, p=n=64

Ends with ``BAR`` lines: chunked SSD >= 10x faster than the naive recurrence at 16k tokens, and chunked SSD
time at 16k <= 40x its time at 512 (linear scaling; 32x is exactly linear).
"""

from __future__ import annotations

import argparse
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from earthcast.kernels import ssd_chunked, ssd_naive


class LiveTensorBytes(TorchDispatchMode):
    """Tracks the bytes of tensor storages created inside the mode (op granularity) and their peak.

    Every op output's storage is counted once while any tensor referencing it lives (weakref finalizers);
    storages of tensors passed as ``external`` (the inputs) are never counted.
    """

    def __init__(self, external: list[torch.Tensor]) -> None:
        super().__init__()
        self.external = {t.untyped_storage().data_ptr() for t in external}
        self.refs: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.current = self.peak = 0

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            del self.refs[key]
            self.current -= self.sizes.pop(key)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key == 0 or key in self.external:
                continue
            if key not in self.refs:
                self.refs[key] = 0
                self.sizes[key] = storage.nbytes()
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
            self.refs[key] += 1
            weakref.finalize(t, self._release, key)
        return out


@dataclass
class Measurement:
    seconds: float
    peak_mib: float


def measure(fn: Callable[[], object], inputs: list[torch.Tensor], repeats: int) -> Measurement:
    """Best wall time of ``repeats`` calls, then one call under ``LiveTensorBytes`` for the peak memory."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    tracker = LiveTensorBytes(inputs)
    with tracker:
        out = fn()
    del out
    return Measurement(best, tracker.peak / 2**20)


def ratio(a: float, b: float, fmt: str = ".2f") -> str:
    return f"{a / b:{fmt}}" if b > 0 else "n/a"


def make_inputs(L: int, h: int, p: int, n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "x": torch.randn(1, L, h, p, generator=g),
        "dt": torch.randn(1, L, h, generator=g) - 1.0,
        "A": -(0.5 + torch.rand(h, generator=g)),
        "B": torch.randn(1, L, 1, n, generator=g),
        "C": torch.randn(1, L, 1, n, generator=g),
    }


def run_methods(t: dict[str, torch.Tensor], chunk: int) -> dict[str, Callable[[], object]]:
    args = (t["x"], t["dt"], t["A"], t["B"], t["C"])
    q = t["x"].transpose(1, 2)  # (b, h, L, p): attention with the SSD's heads and head dim
    return {
        "naive": lambda: ssd_naive(*args),
        "chunked": lambda: ssd_chunked(*args, chunk_size=chunk),
        "sdpa": lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small heads (h=2, p=n=32) so the run takes < 60 s")
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384])
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 keeps timings stable on a shared machine)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    h, p, n = (2, 32, 32) if args.quick else (4, 64, 64)
    console = Console(width=max(Console().width, 150))
    console.print(
        f"SSD on CPU ({torch.get_num_threads()} threads): batch 1, heads {h}, headdim {p}, d_state {n}, "
        f"chunk {args.chunk}; forward only, no grad; times are best of {args.repeats} (naive: 1 run)"
    )
    with torch.no_grad():
        for fn in run_methods(make_inputs(args.lengths[0], h, p, n), args.chunk).values():
            fn()  # warm-up (einsum planning, thread pools)
        results: dict[int, dict[str, Measurement]] = {}
        cols = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}")]
        cols += [TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*cols, console=console) as progress:
            task = progress.add_task("measuring", total=3 * len(args.lengths))
            for L in args.lengths:
                tensors = make_inputs(L, h, p, n)
                methods = run_methods(tensors, args.chunk)
                results[L] = {}
                for name, fn in methods.items():
                    progress.update(task, description=f"{name:>7} L={L}")
                    results[L][name] = measure(
                        fn, list(tensors.values()), 1 if name == "naive" else args.repeats
                    )
                    progress.advance(task)

    table = Table(title="naive recurrence vs chunked SSD vs SDPA (ratios: other / chunked)")
    for col in ("L", "naive ms", "chunked ms", "sdpa ms", "naive/chunked", "sdpa/chunked"):
        table.add_column(col, justify="right")
    for col in ("naive MiB", "chunked MiB", "sdpa MiB", "naive/chunked mem", "sdpa/chunked mem"):
        table.add_column(col, justify="right")
    for L, r in results.items():
        nv, ch, sd = r["naive"], r["chunked"], r["sdpa"]
        table.add_row(
            str(L),
            f"{nv.seconds * 1e3:.1f}",
            f"{ch.seconds * 1e3:.1f}",
            f"{sd.seconds * 1e3:.1f}",
            f"{nv.seconds / ch.seconds:.1f}x",
            f"{sd.seconds / ch.seconds:.2f}x",
            f"{nv.peak_mib:.1f}",
            f"{ch.peak_mib:.1f}",
            f"{sd.peak_mib:.1f}",
            ratio(nv.peak_mib, ch.peak_mib),
            ratio(sd.peak_mib, ch.peak_mib),
        )
    console.print(table)

    lo, hi = min(results), max(results)
    speedup = results[hi]["naive"].seconds / results[hi]["chunked"].seconds
    scaling = results[hi]["chunked"].seconds / results[lo]["chunked"].seconds
    tag = f"{hi // 1024}k" if hi % 1024 == 0 else str(hi)
    print(f"BAR ssd_chunked_vs_naive_{tag} {speedup:.1f} >= 10 {'PASS' if speedup >= 10 else 'FAIL'}")
    print(
        f"BAR ssd_chunked_scaling_{tag}_over_{lo} {scaling:.1f} <= 40 {'PASS' if scaling <= 40 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()

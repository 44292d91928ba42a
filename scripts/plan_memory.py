"""Memory planning for training the paper-size TritonCast models on many GPUs (docs/scaling.md).

    python scripts/plan_memory.py            # prints the Markdown tables pasted into docs/scaling.md

Method. Each model is built under ``FakeTensorMode`` (CPU tensors with shapes and dtypes but no memory) with
the channels of the WB2 configs (69 state, 6 static, 3 forcing channels, one input step) and run forward once
in training mode on one sample, under bf16 autocast as ``precision: bf16-mixed`` trains (CPU autocast; its
op lists are close to CUDA's). A ``torch.autograd.graph.saved_tensors_hooks`` pack hook sees every tensor
autograd keeps for the backward pass; the script counts each underlying storage once (views share their
storage) and leaves out the parameters. That is the activation memory of one sample for one unroll step; it
grows linearly with the batch. With activation checkpointing of each latent-core block
(``configs/scale/fsdp.yaml``) a block keeps only its input, and the backward pass recomputes one block at a
time: memory = everything saved outside the blocks + every block's input + the largest block's own saved
tensors. An unroll of K steps with gradients through all of them keeps K times this unless
``model.checkpoint_steps`` is on (the WB2 configs' default), which keeps only each step's input.

Per GPU (bytes per parameter): float32 weights 4 + float32 gradients 4 + AdamW's two float32 moments 8
= 16 (the weights are the float32 master copy: earthcast.training.strategies keeps them in float32 under
bf16 autocast), + 4 for the EMA copy when the config sets ``ema_decay``. DDP holds all of it on every GPU.
FSDP (FULL_SHARD) holds 1/N of it, plus what is gathered while it runs: the root unit (everything outside
the latent-core blocks, with its gradients, and the EMA copy's part of it) for the whole step, and two block
units (the running one and the prefetched one) with their gradients. Not counted: the CUDA context and
allocator fragmentation (reserve 2-4 GB), DDP's gradient buckets (~2 x 25 MB), data batches.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from earthcast.models.backbone.blocks import Block
from earthcast.models.tritoncast import TritonCast, size_config

N_STATE, N_STATIC, N_FORCING, N_INPUT = 69, 6, 3, 1
"""The WB2 configs' channels: 5 variables x 13 levels + 4 surface fields; land-sea mask, surface geopotential,
sin/cos latitude and longitude; hour of day, day of year, TOA insolation."""
GB = 1e9


@dataclass(frozen=True)
class Case:
    """A model size on a grid, with the per-GPU batch and EMA setting of its config."""

    size: str
    grid: str
    shape: tuple[int, int]  # (H, W)
    geometry: str
    batch: int
    ema: bool


CASES = (
    Case("paper-1deg", "64x32 (configs/wb2_64x32.yaml)", (32, 64), "global", 16, False),
    Case("paper-1deg", "360x181 (1°)", (181, 360), "global_poles", 1, False),
    Case("paper-wb2", "240x121 (configs/wb2_240x121.yaml)", (121, 240), "global_poles", 1, True),
)


@dataclass
class Measured:
    """Parameters and per-sample activation bytes of one case (one unroll step)."""

    params: int
    block_params: int
    largest_block: int
    act: float  # bytes per sample, no checkpointing
    kept: float  # bytes per sample kept through the step when each block is checkpointed
    recompute: float  # bytes per sample of the largest block's recomputation in the backward pass

    def activations(self, checkpointed: bool, unroll: int = 1) -> float:
        """Bytes per sample for an unroll of ``unroll`` steps with gradients through all of them."""
        return unroll * (self.kept if checkpointed else self.act) + (self.recompute if checkpointed else 0)


def measure(case: Case) -> Measured:
    """Count the storages saved for backward in one forward pass of one sample (module docstring)."""
    fake = FakeTensorMode()
    with fake:
        config = size_config(case.size, geometry=case.geometry)
        model = TritonCast(N_STATE, N_STATIC, N_FORCING, N_INPUT, config).train()
        h, w = case.shape
        state = torch.zeros(1, N_INPUT, N_STATE, h, w)
        static = torch.zeros(1, N_STATIC, h, w)
        forcings = torch.zeros(1, N_INPUT + 1, N_FORCING, h, w)
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    param_storages = {p.untyped_storage()._cdata for p in model.parameters()}
    sizes: dict[int, int] = {}  # storage -> bytes
    owner: dict[int, int] = {}  # storage -> block index (-1: outside every block), first saver wins
    block_inputs: dict[int, int] = {}  # storage -> bytes of each block's input
    current = [-1]
    keep: list[torch.Tensor] = []  # keeps the storages alive, so that their ids stay unique

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage()._cdata
        if key not in param_storages and key not in sizes:
            sizes[key], owner[key] = t.untyped_storage().nbytes(), current[0]
            keep.append(t)
        return t

    def enter(index: int):
        def hook(module: torch.nn.Module, args: tuple) -> None:
            current[0] = index
            block_inputs[args[0].untyped_storage()._cdata] = args[0].untyped_storage().nbytes()
            keep.append(args[0])

        return hook

    def leave(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        current[0] = -1

    for i, block in enumerate(blocks):
        block.register_forward_pre_hook(enter(i))
        block.register_forward_hook(leave)
    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
    with fake, hooks, torch.autocast("cpu", dtype=torch.bfloat16):
        model(state, static, forcings)
    inside = [sum(n for k, n in sizes.items() if owner[k] == i) for i in range(len(blocks))]
    outside = {k for k in sizes if owner[k] == -1}
    kept_inputs = sum(n for k, n in block_inputs.items() if k not in outside)
    per_block = [sum(p.numel() for p in b.parameters()) for b in blocks]
    return Measured(
        params=sum(p.numel() for p in model.parameters()),
        block_params=sum(per_block),
        largest_block=max(per_block, default=0),
        act=float(sum(sizes.values())),
        kept=float(sum(sizes[k] for k in outside) + kept_inputs),
        recompute=float(max(inside, default=0)),
    )


def per_gpu(m: Measured, case: Case, strategy: str, gpus: int, checkpointed: bool, unroll: int) -> float:
    """Bytes per GPU for ``strategy`` ("ddp" or "fsdp") on ``gpus`` GPUs (module docstring)."""
    per_param = 16 + (4 if case.ema else 0)
    act = m.activations(checkpointed, unroll) * case.batch
    if strategy == "ddp":
        return per_param * m.params + act
    root = m.params - m.block_params
    gathered = 4 * root * (2 if case.ema else 1) + 4 * root + 2 * 8 * m.largest_block
    return per_param * m.params / gpus + gathered + act


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[8, 64], help="GPU counts of the FSDP columns")
    parser.add_argument("--unroll", type=int, default=4, help="the longest unroll of the curricula (K)")
    args = parser.parse_args()
    began = time.perf_counter()
    rows = [(case, measure(case)) for case in CASES]
    print(
        "| size | grid | parameters | in latent-core blocks | largest block | weights+grads+AdamW (+EMA) "
        "| activations / sample / step | with block checkpointing |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for case, m in rows:
        state = (16 + 4 * case.ema) * m.params / GB
        print(
            f"| {case.size} | {case.grid} | {m.params / 1e6:,.1f} M | {m.block_params / m.params:.0%} "
            f"| {m.largest_block / 1e6:,.1f} M | {state:,.2f} GB{' (EMA)' if case.ema else ''} "
            f"| {m.activations(False) / GB:,.2f} GB | {m.activations(True) / GB:,.2f} GB |"
        )
    print()
    heads = ["DDP (any N)"] + [f"FSDP, {n} GPUs" for n in args.gpus]
    print("| size | grid | batch / GPU | unroll K | block checkpointing | " + " | ".join(heads) + " |")
    print("|---|---|---|---|---|" + "---|" * len(heads))
    for case, m in rows:
        for unroll, ckpt in ((1, False), (1, True), (args.unroll, True)):
            cells = [per_gpu(m, case, "ddp", 1, ckpt, unroll)]
            cells += [per_gpu(m, case, "fsdp", n, ckpt, unroll) for n in args.gpus]
            print(
                f"| {case.size} | {case.grid} | {case.batch} | {unroll} | {'yes' if ckpt else 'no'} | "
                + " | ".join(f"{c / GB:,.1f} GB" for c in cells)
                + " |"
            )
    print(f"\n(measured in {time.perf_counter() - began:.1f} s with fake tensors)")


if __name__ == "__main__":
    main()

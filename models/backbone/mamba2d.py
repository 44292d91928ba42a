"""Mamba2 (SSD) mixer for tokens laid out on a 2-D grid, with non-causal multi-direction scans.

Differences from the causal Mamba2 block: a depthwise 2-D convolution over the (H, W) layout replaces the causal
conv1d, and the selective scan runs along several serialisation orders (see :mod:`.scan_orders`) whose outputs
are summed or averaged. All directions share the parameters and are folded into the batch, so one
:func:`earthcast.kernels.ssd_scan` call covers them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from earthcast.errors import ConfigError
from earthcast.kernels import gated_rms_norm, last_backend, select_backend, ssd_scan
from earthcast.kernels.validate import check_triton_ssd_supported

from .scan_orders import SCAN_ORDERS, scan_inverse_permutations, scan_permutations

MERGE_MODES: tuple[str, ...] = ("sum", "mean")


def mark_no_weight_decay(param: nn.Parameter) -> nn.Parameter:
    """Flag a parameter so :func:`earthcast.models.backbone.param_groups` puts it in the no-decay group."""
    param._no_weight_decay = True  # type: ignore[attr-defined]
    return param


def fold_directions(t: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """Gather (B, L, ...) tokens along each of the K orders in ``perms`` (K, L) -> (B*K, L, ...), batch-major."""
    k, length = perms.shape
    return t[:, perms.reshape(-1)].reshape(t.shape[0] * k, length, *t.shape[2:])


class Mamba2Mixer2d(nn.Module):
    """Bidirectional / cross-scan / Hilbert Mamba2 mixer: (B, L, D) tokens on an (H, W) grid -> (B, L, D).

    Pipeline: ``in_proj`` to [z, x, B, C, dt] -> depthwise ``conv_kernel`` x ``conv_kernel`` 2-D conv over
    x|B|C -> SiLU -> SSD scan along each direction of ``scan`` (folded into the batch) -> merge (sum or mean) ->
    ``+ D * x`` (once, not per direction) -> gated RMSNorm ``norm(y * silu(z))`` -> ``out_proj``.
    On the Triton path the SSD kernel applies the skip and the gate in its epilogue instead (each of the K
    directions adds ``D/K * x`` for ``merge="sum"``, ``D * x`` for ``"mean"``, and multiplies by ``silu(z)``,
    which after the merge equals ``(y + D * x) * silu(z)``), and the RMSNorm runs without a gate.

    Args:
        width: model width D.
        d_state: SSM state size N.
        headdim: head size P; the inner width ``expand * width`` must be divisible by it.
        expand: inner width factor.
        ngroups: groups G sharing B and C (the number of heads must be divisible by G).
        chunk_size: SSD chunk length.
        scan: ``"bidirectional"``, ``"cross"`` or ``"hilbert"``.
        merge: ``"sum"`` or ``"mean"`` of the directions.
        conv_kernel: odd side length of the depthwise 2-D conv.
        A_init_range: A = -exp(A_log) is initialised uniformly in -[lo, hi].
        dt_min, dt_max: softplus(dt + dt_bias) is initialised log-uniformly in [dt_min, dt_max].
        dt_limit: clamp of the step size inside the kernel.
        norm_eps: epsilon of the gated RMSNorm.
        backend: ``None`` (automatic), ``"triton"`` or ``"reference"``; forwarded to the kernels.
    """

    def __init__(
        self,
        width: int,
        *,
        d_state: int = 64,
        headdim: int = 64,
        expand: int = 2,
        ngroups: int = 1,
        chunk_size: int = 64,
        scan: str = "bidirectional",
        merge: str = "sum",
        conv_kernel: int = 3,
        A_init_range: tuple[float, float] = (1.0, 16.0),
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_limit: tuple[float, float] = (0.0, math.inf),
        norm_eps: float = 1e-5,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        d_inner = expand * width
        if d_inner % headdim:
            raise ConfigError(
                f"inner width expand*width = {expand}*{width} = {d_inner} is not divisible by headdim={headdim}; "
                f"choose headdim dividing {d_inner} or change width/expand"
            )
        nheads = d_inner // headdim
        if nheads % ngroups:
            raise ConfigError(
                f"number of SSM heads ({nheads} = {d_inner}/{headdim}) is not divisible by ngroups={ngroups}; "
                f"choose ngroups dividing {nheads}"
            )
        if scan not in SCAN_ORDERS:
            raise ConfigError(f"unknown scan order {scan!r}; choose one of {', '.join(SCAN_ORDERS)}")
        if merge not in MERGE_MODES:
            raise ConfigError(f"unknown merge {merge!r}; choose one of {', '.join(MERGE_MODES)}")
        if conv_kernel < 1 or conv_kernel % 2 == 0:
            raise ConfigError(
                f"conv_kernel must be a positive odd number (same-size padding), got {conv_kernel}"
            )
        if backend == "triton":  # fail at construction, not at the first forward
            check_triton_ssd_supported(headdim, d_state, chunk_size)
        self.width, self.d_inner, self.d_state = width, d_inner, d_state
        self.headdim, self.nheads, self.ngroups = headdim, nheads, ngroups
        self.chunk_size, self.scan, self.merge = chunk_size, scan, merge
        self.dt_limit, self.norm_eps, self.backend = tuple(dt_limit), norm_eps, backend
        self.last_backends: dict[str, str | None] = {}  # op -> backend that ran in the last forward

        conv_channels = d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(width, d_inner + conv_channels + nheads, bias=False)
        self.conv2d = nn.Conv2d(
            conv_channels, conv_channels, conv_kernel, padding=conv_kernel // 2, groups=conv_channels
        )
        self.A_log = mark_no_weight_decay(nn.Parameter(torch.empty(nheads)))
        self.D = mark_no_weight_decay(nn.Parameter(torch.ones(nheads)))
        self.dt_bias = mark_no_weight_decay(nn.Parameter(torch.empty(nheads)))
        self.norm_weight = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, width, bias=False)
        self.reset_ssm_parameters(A_init_range, dt_min, dt_max, dt_init_floor)

    @torch.no_grad()
    def reset_ssm_parameters(
        self, A_init_range: tuple[float, float], dt_min: float, dt_max: float, dt_init_floor: float
    ) -> None:
        """Mamba2 initialisation: A ~ -U[lo, hi]; dt log-uniform in [dt_min, dt_max] stored as the inverse
        softplus in ``dt_bias``; D = 1."""
        lo, hi = A_init_range
        if not 0 < lo <= hi:
            raise ConfigError(f"A_init_range must satisfy 0 < lo <= hi, got {A_init_range}")
        if not 0 < dt_min <= dt_max:
            raise ConfigError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        self.A_log.copy_(torch.empty(self.nheads).uniform_(lo, hi).log())
        u = torch.rand(self.nheads)
        dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_init_floor)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus(dt_bias) == dt
        self.D.fill_(1.0)

    def A(self) -> torch.Tensor:
        """Per-head decay rate A = -exp(A_log), fp32, shape (nheads,)."""
        return -torch.exp(self.A_log.float())

    def project(
        self, x: torch.Tensor, grid: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """In-projection, 2-D conv and SiLU. x: (B, L, D) with L = H*W in raster order.

        Returns z (B, L, h, p), xs (B, L, h, p), B (B, L, g, n), C (B, L, g, n), dt_raw (B, L, h)."""
        b, length, _ = x.shape
        height, width = grid
        if height * width != length:
            raise ConfigError(
                f"grid {height}x{width} has {height * width} cells but the input has {length} tokens"
            )
        z, xbc, dt = self.in_proj(x).split(
            [self.d_inner, self.d_inner + 2 * self.ngroups * self.d_state, self.nheads], dim=-1
        )
        xbc = self.conv2d(xbc.transpose(1, 2).reshape(b, -1, height, width)).flatten(2).transpose(1, 2)
        xs, B, C = F.silu(xbc).split(
            [self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1
        )
        heads = (b, length, self.nheads, self.headdim)
        groups = (b, length, self.ngroups, self.d_state)
        return z.reshape(heads), xs.reshape(heads), B.reshape(groups), C.reshape(groups), dt

    def fuses_skip_and_gate(self, xs: torch.Tensor) -> bool:
        """True when the SSD of ``xs`` runs on the Triton path, whose kernel fuses the D skip and z gate."""
        return select_backend(xs, self.backend, op="ssd_scan") == "triton"

    def scan_directions(
        self,
        xs: torch.Tensor,
        dt: torch.Tensor,
        B: torch.Tensor,
        C: torch.Tensor,
        grid: tuple[int, int],
        z: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the SSD along every direction of ``self.scan`` in one kernel call and merge.

        xs: (B, L, h, p); dt: raw step (B, L, h); B, C: (B, L, g, n); z: gate (B, L, h, p) or None.
        Returns (B, L, h, p): the merged scan without the D skip, or with ``z`` the fused
        ``(merged scan + D * xs) * silu(z)``."""
        b, length = xs.shape[:2]
        perms = scan_permutations(self.scan, grid, xs.device)  # (K, L)
        k = perms.shape[0]
        folded = [fold_directions(t, perms) for t in (xs, dt, B, C)]
        if z is None:
            y = self.ssd(*folded)
        else:  # each direction adds its share of D * x, so the merge adds D * x once; the gate is per token
            skip = self.D / k if self.merge == "sum" else self.D
            y = self.ssd(*folded, D=skip, z=fold_directions(z, perms))
        # Scatter every direction back to raster order: y_k[inv_k[t]] is token t's output along direction k.
        inverse = scan_inverse_permutations(self.scan, grid, xs.device)
        inverse = inverse + length * torch.arange(k, device=xs.device)[:, None]
        y = y.reshape(b, k * length, *y.shape[2:])[:, inverse.reshape(-1)].reshape(b, k, length, *y.shape[2:])
        return y.sum(1) if self.merge == "sum" else y.mean(1)

    def ssd(
        self,
        xs: torch.Tensor,
        dt: torch.Tensor,
        B: torch.Tensor,
        C: torch.Tensor,
        initial_states: torch.Tensor | None = None,
        return_final_states: bool = False,
        *,
        D: torch.Tensor | None = None,
        z: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """One causal SSD scan with this layer's A, dt_bias and dt_limit; skip ``D`` and gate ``z`` if given.

        xs: (B', L, h, p); dt: raw (B', L, h); B, C: (B', L, g, n); initial_states: (B', h, p, n);
        D: (h,); z: (B', L, h, p). Returns y (B', L, h, p) [and the final states (B', h, p, n)]."""
        out = ssd_scan(
            xs, dt, self.A(), B, C, chunk_size=self.chunk_size, D=D, z=z, dt_bias=self.dt_bias,
            dt_softplus=True, dt_limit=self.dt_limit, initial_states=initial_states,
            return_final_states=return_final_states, backend=self.backend,
        )  # fmt: skip
        self.last_backends["ssd_scan"] = last_backend("ssd_scan")
        return out

    def finish(self, y: torch.Tensor, xs: torch.Tensor | None, z: torch.Tensor | None) -> torch.Tensor:
        """D skip, gated RMSNorm and out-projection. y, xs, z: (B, L, h, p) -> (B, L, D).

        ``xs = z = None``: y already holds ``(y + D * xs) * silu(z)`` (the fused path); only norm and project."""
        if xs is not None:
            y = y + self.D.to(y.dtype)[:, None] * xs
        shape = (*y.shape[:2], self.d_inner)
        y = gated_rms_norm(
            y.reshape(shape), self.norm_weight, None if z is None else z.reshape(shape), eps=self.norm_eps,
            group_size=self.d_inner // self.ngroups, norm_before_gate=False, backend=self.backend,
        )  # fmt: skip
        self.last_backends["gated_rms_norm"] = last_backend("gated_rms_norm")
        return self.out_proj(y)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """x: (B, L, D) tokens in raster order of an (H, W) = ``grid`` layout. Returns (B, L, D)."""
        z, xs, B, C, dt = self.project(x, grid)
        if self.fuses_skip_and_gate(xs):
            return self.finish(self.scan_directions(xs, dt, B, C, grid, z), None, None)
        return self.finish(self.scan_directions(xs, dt, B, C, grid), xs, z)

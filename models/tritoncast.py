"""TritonCast: a multigrid V-cycle with a hybrid Mamba2/attention latent dynamical core (arXiv 2505.19432).

One step maps normalised fields at times t-(N-1)Δ … t to the normalised state at t+Δ:

- inputs, folded into channels: the state at the N input times, the static fields, and the forcings at the
  N input times plus the target time;
- a stem conv to ``widths[0]`` channels, the :class:`~earthcast.models.vcycle.VCycle` (restriction with a
  skip at every level, latent core at the coarsest level, gated nested-grid prolongation) and a 1×1 readout;
- ``output="residual"``: x_{t+Δ} = x_t + (tendency_std / state_std) * readout (readout initialised to zero,
  so an untrained model is persistence); ``output="direct"``: x_{t+Δ} = readout.

Named sizes live in :data:`SIZES`; ablations (``"no_core"``, ``"no_skip"``, ``"flat"``) are options.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from earthcast.errors import ConfigError
from earthcast.grids import GEOMETRY_KINDS
from earthcast.models.backbone import count_parameters
from earthcast.models.corrector import GlobalMeanCorrector
from earthcast.models.geometry import Halo, SphereConv2d
from earthcast.models.vcycle import VCycle, backbone_config
from earthcast.models.zonal_filter import PolarMeanWindDamping, ZonalDamping, ZonalFilter
from earthcast.scoring.weights import latitude_weights

OUTPUTS: tuple[str, ...] = ("residual", "direct")
ABLATIONS: tuple[str, ...] = ("none", "no_core", "no_skip", "flat")


@dataclass
class TritonCastConfig:
    """Structure of a TritonCast model (channel counts come from the data, see :class:`TritonCast`).

    Attributes:
        widths: channels per V-cycle level, finest first (``len(widths) - 1`` coarsenings by 2).
        depth: residual sphere blocks per level on the restriction and on the prolongation path.
        core: :class:`~earthcast.models.backbone.BackboneConfig` fields of the latent core (width, pattern,
            heads, d_state, headdim, backend, …).
        output: ``"residual"`` (tendency-scaled increment) or ``"direct"`` (full next state).
        ablation: ``"none"``, ``"no_core"``, ``"no_skip"`` or ``"flat"``.
        geometry: the grid's geometry kind (:data:`earthcast.grids.GEOMETRY_KINDS`), which decides how every
            layer pads (:class:`~earthcast.models.geometry.Halo`); :func:`earthcast.models.registry.build_model`
            takes it from the data's channel manifest.
        core_halo: halo rows/columns around the latent grid for the core's depthwise convolutions.
        upsample: prolongation of the V-cycle (:class:`~earthcast.models.geometry.Upsample`): ``"bilinear"``
            (halo-continued interpolation then a 1×1 conv) or ``"transposed"`` (a stride-2 transposed conv,
            whose checkerboard a free run amplifies).
        polar_filter: reference latitude φ_ref in degrees of the zonal low-pass applied to the predicted
            increment poleward of it (:class:`~earthcast.models.zonal_filter.ZonalFilter`; global grids
            only); None = off.
        max_wavenumber: the highest zonal wavenumber of the predicted increment, at every row (the data's
            spectral truncation, e.g. 18 for the demo atmosphere; global grids only); None = all.
        hyperdiffusion: strength ε of the per-step damping of the predicted state's zonal wavenumber k by
            exp(−ε (k / k_ref)^8), k_ref = ``max_wavenumber`` (or W/2)
            (:class:`~earthcast.models.zonal_filter.ZonalDamping`; global grids only); None = off.
        polar_mean_wind: reference latitude poleward of which the zonal-mean meridional wind of the predicted
            state is multiplied each step by cos φ / cos φ_ref
            (:class:`~earthcast.models.zonal_filter.PolarMeanWindDamping`; global grids only); None = off.
        conserve: state channels whose area-weighted global mean each step holds at the input's
            (:class:`~earthcast.models.corrector.GlobalMeanCorrector`), e.g. ``("surface_pressure",)`` for a
            dry atmosphere. Only for grids without masked points.
    """

    widths: tuple[int, ...] = (32, 64, 128)
    depth: int = 1
    core: dict[str, Any] = field(default_factory=dict)
    output: str = "residual"
    ablation: str = "none"
    geometry: str = "global"
    core_halo: int = 1
    upsample: str = "bilinear"
    polar_filter: float | None = None
    max_wavenumber: int | None = None
    hyperdiffusion: float | None = None
    polar_mean_wind: float | None = None
    conserve: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        self.conserve = tuple(self.conserve)
        spectral = (self.polar_filter, self.max_wavenumber, self.hyperdiffusion, self.polar_mean_wind)
        zonal = any(value is not None for value in spectral)
        if zonal and self.geometry != "global":
            raise ConfigError(
                "polar_filter, max_wavenumber, hyperdiffusion and polar_mean_wind need a global grid (full latitude circles and "
                f"poles), but the grid is {self.geometry!r}; remove them"
            )
        if self.output not in OUTPUTS:
            raise ConfigError(f"unknown output {self.output!r}; choose one of {', '.join(OUTPUTS)}")
        if self.ablation not in ABLATIONS:
            raise ConfigError(f"unknown ablation {self.ablation!r}; choose one of {', '.join(ABLATIONS)}")
        if self.geometry not in GEOMETRY_KINDS:
            raise ConfigError(
                f"unknown geometry {self.geometry!r}; use one of {', '.join(GEOMETRY_KINDS)} (it is normally "
                "taken from the data: remove it from model_settings, or set data.geometry)"
            )
        if self.depth < 1:
            raise ConfigError(f"depth must be >= 1, got {self.depth}")


SIZES: dict[str, TritonCastConfig] = {
    "tiny": TritonCastConfig(
        widths=(16, 32, 48),
        core=dict(width=64, pattern="AMF MF", heads=2, d_state=16, headdim=16, chunk_size=32),
    ),
    "small": TritonCastConfig(
        widths=(48, 96, 160),
        core=dict(width=256, pattern="AMF MF MF MF", heads=4, d_state=32, headdim=32, chunk_size=64),
    ),
    "paper-1deg": TritonCastConfig(
        widths=(160, 320, 512),
        core=dict(width=512, pattern="AMF MF MF MF", heads=8, d_state=64, headdim=64),
    ),
    "paper-wb2": TritonCastConfig(
        widths=(512, 1024, 1536),
        core=dict(
            width=2688, pattern="AMF MF MF MF", repeats=2, heads=21, kv_heads=3, d_state=128, headdim=64
        ),
    ),
}
"""Named sizes. Parameter counts (4 state channels, 1 input step, no statics or forcings) are checked in
tests/test_tritoncast.py: tiny < 1 M, small a few M, paper-1deg ≈ 28 M, paper-wb2 ≈ 1 B."""


def size_config(size: str, **overrides: Any) -> TritonCastConfig:
    """The named size with fields replaced by ``overrides`` (``core`` entries are merged, not replaced)."""
    if size not in SIZES:
        raise ConfigError(f"unknown TritonCast size {size!r}; choose one of {', '.join(SIZES)}")
    base = SIZES[size]
    core = dict(base.core) | dict(overrides.pop("core", None) or {})
    known = {f.name for f in dataclasses.fields(TritonCastConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown TritonCast settings {unknown}; valid ones: {sorted(known)}")
    return dataclasses.replace(base, core=core, **overrides)


class TritonCast(nn.Module):
    """One-step TritonCast predictor on normalised fields.

    Args:
        n_state: state channels C.
        n_static: static channels S.
        n_forcing: forcing channels F.
        n_input: input time steps N.
        config: structure; default ``SIZES["tiny"]``.
        tendency_scale: (C,) tendency_std / state_std for ``output="residual"`` (default ones); stored as a
            buffer, so it travels with the weights.
        vector_channels: indices of state channels that are components of a horizontal vector (u and v of
            the wind or of a current); the stem flips their sign where it folds rows across a pole.
        boundary: the forcings end with a limited-area model's lateral boundary (C channels of the truth in
            the edge strip, then the strip mask; :mod:`earthcast.datasets.boundary`). The prediction in the strip
            is then replaced by that truth at the predicted time, as limited-area models do (neural-lam), so the
            interior evolves under the true boundary and the strip adds no error to the loss.
        latitudes: (H,) row latitudes in degrees, needed by ``config.polar_filter`` and ``config.conserve``
            (area weights); ``width`` the number of longitudes, for the polar filter.
        channel_names: the state channels' names, which ``config.conserve`` refers to.
        meridional_channels: indices of the northward components (v) among ``vector_channels``, which
            ``config.polar_mean_wind`` damps.

    forward(state, static, forcings, time=None):
        state: (B, N, C, H, W) normalised; static: (B, S, H, W) normalised or None;
        forcings: (B, N + 1, F, H, W) (input times then the target time) or None; time is ignored (the
        signature is shared with the baselines). Returns (B, C, H, W), the normalised state at t+Δ.
    """

    def __init__(
        self,
        n_state: int,
        n_static: int = 0,
        n_forcing: int = 0,
        n_input: int = 1,
        config: TritonCastConfig | None = None,
        tendency_scale: Sequence[float] | None = None,
        vector_channels: Sequence[int] = (),
        boundary: bool = False,
        latitudes: Sequence[float] | None = None,
        width: int | None = None,
        channel_names: Sequence[str] | None = None,
        meridional_channels: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.config = cfg = config if config is not None else SIZES["tiny"]
        self.n_state, self.n_static, self.n_forcing, self.n_input = n_state, n_static, n_forcing, n_input
        if boundary and n_forcing < n_state + 1:
            raise ConfigError(
                f"a boundary-forced model needs its last {n_state + 1} forcing channels to be the boundary "
                f"(one per state channel, then the strip mask), but it has {n_forcing} forcing channels"
            )
        self.boundary = boundary
        in_channels = n_input * n_state + n_static + (n_input + 1) * n_forcing
        halo = Halo.for_geometry(cfg.geometry)
        sign = torch.ones(n_input, n_state)
        sign[:, list(vector_channels)] = -1.0
        stem_sign = torch.cat([sign.flatten(), torch.ones(in_channels - n_input * n_state)])
        self.stem = SphereConv2d(
            in_channels, cfg.widths[0], 3, halo=halo, vector_sign=stem_sign if halo.folds else None
        )
        self.vcycle = self.build_body(cfg, halo)
        self.readout = nn.Conv2d(cfg.widths[0], n_state, 1)
        if cfg.output == "residual":
            nn.init.zeros_(self.readout.weight)
            nn.init.zeros_(self.readout.bias)
        scale = torch.ones(n_state) if tendency_scale is None else torch.as_tensor(tendency_scale)
        if scale.shape != (n_state,):
            raise ConfigError(
                f"tendency_scale needs one value per state channel ({n_state}), got {tuple(scale.shape)}"
            )
        self.register_buffer("tendency_scale", scale.float().clone())
        zonal = cfg.polar_filter is not None or cfg.max_wavenumber is not None
        if (zonal or cfg.conserve) and (latitudes is None or width is None):
            raise ConfigError(
                "polar_filter, max_wavenumber and conserve need the grid: pass latitudes= and width="
            )
        self.zonal_filter = (
            ZonalFilter(latitudes, width, cfg.polar_filter, cfg.max_wavenumber) if zonal else None
        )
        self.damping = None
        if cfg.hyperdiffusion is not None:
            if width is None:
                raise ConfigError("hyperdiffusion needs the grid: pass width=")
            self.damping = ZonalDamping(width, cfg.max_wavenumber or width // 2, cfg.hyperdiffusion)
        self.polar_mean_wind = None
        if cfg.polar_mean_wind is not None:
            if latitudes is None:
                raise ConfigError("polar_mean_wind needs the grid: pass latitudes=")
            self.polar_mean_wind = PolarMeanWindDamping(latitudes, cfg.polar_mean_wind, meridional_channels)
        self.corrector = None
        if cfg.conserve:
            names = channel_names if channel_names is not None else [f"channel_{i}" for i in range(n_state)]
            weights = latitude_weights(np.asarray(latitudes), cfg.geometry)
            self.corrector = GlobalMeanCorrector(cfg.conserve, names, weights.tolist())

    def build_body(self, cfg: TritonCastConfig, halo: Halo) -> nn.Module:
        """The field-to-field body between stem and readout: (B, widths[0], H, W) -> same."""
        core = None if cfg.ablation == "no_core" else backbone_config(cfg.core)
        return VCycle(
            cfg.widths,
            cfg.depth,
            core,
            skips=cfg.ablation != "no_skip",
            flat=cfg.ablation == "flat",
            halo=halo,
            core_halo=cfg.core_halo,
            upsample=cfg.upsample,
        )

    def assemble(
        self, state: torch.Tensor, static: torch.Tensor | None, forcings: torch.Tensor | None
    ) -> torch.Tensor:
        """Fold time into channels: (B, N*C + S + (N+1)*F, H, W), with shape checks naming the fix."""
        b, n, c, h, w = state.shape
        if n != self.n_input or c != self.n_state:
            raise ConfigError(
                f"state has {n} steps × {c} channels but the model was built for {self.n_input} × {self.n_state}; "
                "build it with the data's n_input and state channels"
            )
        parts = [state.reshape(b, n * c, h, w)]
        if self.n_static:
            if static is None or static.shape[1] != self.n_static:
                got = None if static is None else tuple(static.shape)
                raise ConfigError(f"expected static (B, {self.n_static}, H, W), got {got}")
            parts.append(static.to(state.dtype))
        if self.n_forcing:
            want = (self.n_input + 1, self.n_forcing)
            if forcings is None or tuple(forcings.shape[1:3]) != want:
                got = None if forcings is None else tuple(forcings.shape)
                raise ConfigError(f"expected forcings (B, {want[0]}, {want[1]}, H, W), got {got}")
            parts.append(forcings.reshape(b, -1, h, w).to(state.dtype))
        return torch.cat(parts, dim=1)

    def forward(
        self,
        state: torch.Tensor,
        static: torch.Tensor | None = None,
        forcings: torch.Tensor | None = None,
        time: torch.Tensor | None = None,
    ) -> torch.Tensor:
        out = self.readout(self.vcycle(self.stem(self.assemble(state, static, forcings))))
        last = state[:, -1]
        if self.config.output == "residual":
            out = last + self.tendency_scale.to(out.dtype)[:, None, None] * out
        if self.zonal_filter is not None:
            out = last.to(out.dtype) + self.zonal_filter(out - last.to(out.dtype))
        if self.damping is not None:
            out = self.damping(out)
        if self.polar_mean_wind is not None:
            out = self.polar_mean_wind(out)
        if self.corrector is not None:
            out = self.corrector(out, last)
        if self.boundary:
            assert forcings is not None  # checked in assemble
            target = forcings[:, -1].to(out.dtype)  # (B, F, H, W) at the predicted time
            strip = target[:, -1:] > 0.5
            out = torch.where(strip, target[:, -self.n_state - 1 : -1], out)
        return out

    def aux_loss(self) -> torch.Tensor:
        """MoE balancing loss of the last forward pass (add it to the training loss)."""
        aux = getattr(self.vcycle, "aux_loss", None)
        return aux() if aux is not None else torch.zeros(())


def parameter_count(
    size: str, n_state: int = 4, n_static: int = 0, n_forcing: int = 0, n_input: int = 1, **overrides: Any
) -> int:
    """Parameters of a named size, counted on the ``meta`` device (no memory is allocated)."""
    with torch.device("meta"):
        model = TritonCast(n_state, n_static, n_forcing, n_input, size_config(size, **overrides))
    return count_parameters(model)

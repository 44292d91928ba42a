"""Two-layer quasi-geostrophic ocean eddies (pyqg-jax), written in WB2 layout with ocean variable names.

A doubly periodic β-plane channel driven by an imposed vertical shear of the mean zonal flow (U₁ − U₂) is
baroclinically unstable; bottom (Ekman) drag in the lower layer and a spectral filter remove the energy, and
the model settles into a statistically stationary field of mesoscale eddies. See docs/physics_data.md.

The β-plane is labelled with a regional lat/lon grid: 64×64 cells of 0.25° centred at 32°N in the western
North Atlantic (24.125…39.875°N, 290.125…305.875°E). Latitude spacing is 0.25° of arc (27.8 km); longitude
spacing is 0.25° at the central latitude (23.6 km), the tangent-plane metric of the β-plane approximation.
A rectangular "island" (34–37°N, 296–300°E) is masked: every variable is NaN there and ``land_sea_mask`` is 1.
The mask is applied to the output only; the dynamics are those of the open periodic ocean, so the store
declares ``grid_geometry: periodic`` (models wrap it in both directions; areas are uniform).

JAX and pyqg-jax are imported only when a :class:`QGOceanModel` is built.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from earthcast.datasets.sim._lazy import require
from earthcast.errors import DataError
from earthcast.grids import GEOMETRY_ATTR

GENERATOR_VERSION = "qg-ocean-2"
"""Bumped whenever the generated data would change; part of the demo cache key."""

EARTH_RADIUS_M = 6.371e6
EARTH_ROTATION_RATE = 7.292e-5  # s⁻¹
GRAVITY = 9.81  # m s⁻²

_VARIABLE_ATTRS: dict[str, dict[str, str]] = {
    "sla": {"units": "m", "long_name": "Sea level anomaly (f0 * upper-layer streamfunction / g)"},
    "ugos": {"units": "m s**-1", "long_name": "Absolute geostrophic velocity, eastward (upper layer)"},
    "vgos": {"units": "m s**-1", "long_name": "Absolute geostrophic velocity, northward (upper layer)"},
    "uo": {"units": "m s**-1", "long_name": "Layer-mean eastward velocity"},
    "vo": {"units": "m s**-1", "long_name": "Layer-mean northward velocity"},
    "land_sea_mask": {"units": "(0 - 1)", "long_name": "Land-sea mask (1 land, 0 ocean)"},
}
SURFACE_VARIABLES = ("sla", "ugos", "vgos")
LAYER_VARIABLES = ("uo", "vo")


@dataclass(frozen=True)
class QGOceanConfig:
    """Settings of the two-layer QG run (SI units unless named otherwise).

    Attributes:
        n_lat, n_lon: grid points (= model grid points; no regridding).
        spacing_deg: grid spacing in degrees of latitude (and of longitude at ``center_lat``).
        center_lat: latitude of the β-plane tangent point (sets f₀ = 2Ω sin φ₀ and β = 2Ω cos φ₀ / R).
        west_lon: western edge of the box, degrees east.
        deformation_radius_m: first baroclinic Rossby radius of deformation.
        upper_layer_depth_m: H₁; the lower layer is H₁ / ``layer_depth_ratio`` thick.
        layer_depth_ratio: δ = H₁ / H₂.
        upper_layer_velocity: imposed mean flow U₁ (the lower layer's U₂ is 0).
        bottom_drag_days: e-folding time 1/r_ek of the linear bottom drag on the lower layer.
        time_step_seconds: AB3 time step.
        spinup_days: days integrated from small random PV before the first output.
        output_hours: output spacing (24 = daily snapshots).
        land_patch: (lat_min, lat_max, lon_min, lon_max) in degrees of the masked island.
        start_time: date of the first output (fake calendar).
        seed: selects the random initial PV.
    """

    n_lat: int = 64
    n_lon: int = 64
    spacing_deg: float = 0.25
    center_lat: float = 32.0
    west_lon: float = 290.0
    deformation_radius_m: float = 40e3
    upper_layer_depth_m: float = 1000.0
    layer_depth_ratio: float = 0.5
    upper_layer_velocity: float = 0.15
    bottom_drag_days: float = 20.0
    time_step_seconds: float = 3600.0
    spinup_days: int = 1095
    output_hours: int = 24
    land_patch: tuple[float, float, float, float] = (34.0, 37.0, 296.0, 300.0)
    start_time: str = "2017-01-01T00:00"
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.output_hours * 3600) % self.time_step_seconds:
            raise DataError(
                f"time_step_seconds={self.time_step_seconds} must divide output_hours={self.output_hours} "
                "(in seconds); e.g. 3600 s for daily output."
            )
        if 86400 % self.time_step_seconds:
            raise DataError(
                f"time_step_seconds={self.time_step_seconds} must divide a day (86400 s), e.g. 3600."
            )
        if not 0.0 < abs(self.center_lat) < 80.0:
            raise DataError(f"center_lat={self.center_lat} must be off the equator and below 80°, e.g. 32.0.")

    @property
    def steps_per_output(self) -> int:
        return int(self.output_hours * 3600 // self.time_step_seconds)

    @property
    def f0(self) -> float:
        """Coriolis parameter at the tangent point, s⁻¹."""
        return float(2 * EARTH_ROTATION_RATE * np.sin(np.deg2rad(self.center_lat)))

    @property
    def beta(self) -> float:
        """Meridional gradient of the Coriolis parameter, m⁻¹ s⁻¹."""
        return float(2 * EARTH_ROTATION_RATE * np.cos(np.deg2rad(self.center_lat)) / EARTH_RADIUS_M)

    @property
    def latitude(self) -> np.ndarray:
        """(n_lat,) cell-centre latitudes, ascending, degrees north."""
        south = self.center_lat - self.n_lat * self.spacing_deg / 2
        return south + (np.arange(self.n_lat) + 0.5) * self.spacing_deg

    @property
    def longitude(self) -> np.ndarray:
        """(n_lon,) cell-centre longitudes, ascending, degrees east in 0…360."""
        return (self.west_lon + (np.arange(self.n_lon) + 0.5) * self.spacing_deg) % 360.0

    @property
    def domain_m(self) -> tuple[float, float]:
        """(L, W): zonal and meridional extent of the periodic domain in metres."""
        metres_per_deg = np.deg2rad(1.0) * EARTH_RADIUS_M
        zonal = self.n_lon * self.spacing_deg * metres_per_deg * np.cos(np.deg2rad(self.center_lat))
        return float(zonal), float(self.n_lat * self.spacing_deg * metres_per_deg)

    @property
    def layer_mid_depths_m(self) -> np.ndarray:
        """(2,) mid-depths of the two layers in metres."""
        h1 = self.upper_layer_depth_m
        return np.array([h1 / 2, h1 + h1 / self.layer_depth_ratio / 2])

    def land_mask(self) -> np.ndarray:
        """(n_lat, n_lon) bool, True inside the land patch."""
        lat_min, lat_max, lon_min, lon_max = self.land_patch
        lat, lon = self.latitude[:, None], self.longitude[None, :]
        return (lat >= lat_min) & (lat <= lat_max) & (lon >= lon_min) & (lon <= lon_max)


def _x64(jax: Any) -> contextlib.AbstractContextManager:
    """pyqg-jax inverts PV in float64 internally, which needs JAX's 64-bit mode (scoped, not global)."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # JAX < 0.6

    return enable_x64(True)


class QGOceanModel:
    """A compiled two-layer QG integrator producing daily ocean fields on the regional grid.

    Args:
        config: run settings.
        block_outputs: outputs per compiled call of :meth:`run_block`.
    """

    def __init__(self, config: QGOceanConfig, *, block_outputs: int = 73) -> None:
        jax = require("jax")
        pyqg_jax = require("pyqg_jax")
        self.config = config
        self.block_outputs = block_outputs
        length, width = config.domain_m
        self.model = pyqg_jax.steppers.SteppedModel(
            pyqg_jax.qg_model.QGModel(
                nx=config.n_lon,
                ny=config.n_lat,
                L=length,
                W=width,
                rek=1.0 / (config.bottom_drag_days * 86400.0),
                f=config.f0,
                g=GRAVITY,
                beta=config.beta,
                rd=float(config.deformation_radius_m),
                delta=float(config.layer_depth_ratio),
                H1=float(config.upper_layer_depth_m),
                U1=float(config.upper_layer_velocity),
                U2=0.0,
                precision=pyqg_jax.state.Precision.SINGLE,
            ),
            pyqg_jax.steppers.AB3Stepper(dt=float(config.time_step_seconds)),
        )
        self._jax = jax
        self._mask = config.land_mask()
        step = self.model.step_model

        def advance(state: Any, steps: int) -> Any:
            return jax.lax.scan(lambda s, _: (step(s), None), state, None, length=steps)[0]

        def block(state: Any) -> tuple[Any, dict[str, Any]]:
            def one(s: Any, _: Any) -> tuple[Any, dict[str, Any]]:
                return advance(s, config.steps_per_output), self._diagnose(s)

            return jax.lax.scan(one, state, None, length=block_outputs)

        self._advance_day = jax.jit(lambda s: advance(s, 86400 // int(config.time_step_seconds)))
        self._block = jax.jit(block)

    def _diagnose(self, stepper_state: Any) -> dict[str, Any]:
        """Dimensional ocean fields of one state: surface (H, W) and per-layer (2, H, W), float32."""
        jnp = self._jax.numpy
        cfg = self.config
        full = self.model.get_full_state(stepper_state)
        background = jnp.asarray([cfg.upper_layer_velocity, 0.0], dtype=full.u.dtype)[:, None, None]
        u, v = full.u + background, full.v
        fields = {"sla": cfg.f0 * full.p[0] / GRAVITY, "ugos": u[0], "vgos": v[0], "uo": u, "vo": v}
        return {k: x.astype(jnp.float32) for k, x in fields.items()}

    def initial_state(self) -> Any:
        """Small random upper-layer PV (pyqg's standard initial condition), seeded."""
        with _x64(self._jax):
            return self.model.create_initial_state(self._jax.random.key(self.config.seed))

    def spin_up(self, state: Any, days: int, on_days: Callable[[float], None] | None = None) -> Any:
        """Integrate ``days`` whole days without output, reporting each day to ``on_days``."""
        with _x64(self._jax):
            for _ in range(days):
                state = self._advance_day(state)
                if on_days is not None:
                    self._jax.block_until_ready(state)
                    on_days(1.0)
        return state

    def run_block(self, state: Any) -> tuple[Any, dict[str, np.ndarray]]:
        """Integrate ``block_outputs`` outputs (the first is ``state`` itself); land points become NaN."""
        with _x64(self._jax):
            state, fields = self._block(state)
        out = {k: np.array(v) for k, v in fields.items()}  # writable host copies
        for array in out.values():
            array[..., self._mask] = np.nan
        return state, out

    def times(self, first: int, count: int) -> np.ndarray:
        """datetime64[ns] of outputs ``first … first+count-1``."""
        start = pd.Timestamp(self.config.start_time).to_datetime64().astype("datetime64[ns]")
        return start + (np.arange(first, first + count) * self.config.output_hours).astype("timedelta64[h]")

    def block_dataset(self, fields: dict[str, np.ndarray], first: int) -> xr.Dataset:
        """Wrap block outputs as a dataset with dims (time, [depth,] latitude, longitude)."""
        cfg = self.config
        count = fields["sla"].shape[0]
        data_vars: dict[str, Any] = {
            name: (("time", "latitude", "longitude"), fields[name], _VARIABLE_ATTRS[name])
            for name in SURFACE_VARIABLES
        }
        data_vars.update(
            {
                name: (("time", "depth", "latitude", "longitude"), fields[name], _VARIABLE_ATTRS[name])
                for name in LAYER_VARIABLES
            }
        )
        coords = {
            "time": ("time", self.times(first, count)),
            "depth": ("depth", cfg.layer_mid_depths_m, {"units": "m", "positive": "down"}),
            "latitude": ("latitude", cfg.latitude, {"units": "degrees_north"}),
            "longitude": ("longitude", cfg.longitude, {"units": "degrees_east"}),
        }
        return xr.Dataset(data_vars, coords=coords)

    def static_dataset(self) -> xr.Dataset:
        """The land-sea mask (1 inside the land patch, 0 elsewhere), without a time dimension."""
        mask = self._mask.astype(np.float32)
        return xr.Dataset(
            {"land_sea_mask": (("latitude", "longitude"), mask, _VARIABLE_ATTRS["land_sea_mask"])}
        )

    def attrs(self) -> dict[str, Any]:
        """Global attributes describing the model, forcing, grid and spin-up."""
        cfg = self.config
        return {
            "title": "Two-layer quasi-geostrophic ocean eddies (earthcast embedded demo data)",
            "source": "pyqg-jax QGModel: doubly periodic beta-plane, pseudo-spectral, AB3 time stepping",
            "forcing": (
                f"imposed mean shear U1-U2={cfg.upper_layer_velocity} m/s (baroclinic instability); "
                f"linear bottom drag 1/({cfg.bottom_drag_days} d) on the lower layer; spectral filter"
            ),
            "parameters": (
                f"f0={cfg.f0:.4e} 1/s, beta={cfg.beta:.4e} 1/(m s), Rd={cfg.deformation_radius_m:g} m, "
                f"H1={cfg.upper_layer_depth_m:g} m, H1/H2={cfg.layer_depth_ratio:g}, "
                f"dt={cfg.time_step_seconds:g} s"
            ),
            "grid": (
                f"{cfg.n_lat}x{cfg.n_lon} cells of {cfg.spacing_deg} deg centred at {cfg.center_lat}N; "
                "longitude spacing uses the metric at the central latitude (beta-plane)"
            ),
            "land_patch": "lat {}..{}, lon {}..{} masked to NaN in the output only".format(*cfg.land_patch),
            GEOMETRY_ATTR: "periodic",
            "spinup_days": int(cfg.spinup_days),
            "calendar_note": f"fake calendar: first output at {cfg.start_time}, {cfg.output_hours}-hourly",
            "generator_version": GENERATOR_VERSION,
            "generator_config": repr(asdict(cfg)),
        }


def generate_qg_ocean(
    config: QGOceanConfig,
    n_outputs: int,
    *,
    block_outputs: int = 73,
    on_days: Callable[[float], None] | None = None,
) -> Iterator[xr.Dataset]:
    """Spin up, then yield ``n_outputs`` outputs as consecutive datasets (the first with statics, attrs)."""
    if n_outputs < 1:
        raise DataError(f"n_outputs={n_outputs} must be at least 1.")
    model = QGOceanModel(config, block_outputs=block_outputs)
    state = model.spin_up(model.initial_state(), config.spinup_days, on_days)
    days_per_output = config.output_hours / 24.0
    for first in range(0, n_outputs, block_outputs):
        state, fields = model.run_block(state)
        count = min(block_outputs, n_outputs - first)
        ds = model.block_dataset({k: v[:count] for k, v in fields.items()}, first)
        if first == 0:
            ds = xr.merge([ds, model.static_dataset()])
            ds.attrs = model.attrs()
        if on_days is not None:
            on_days(count * days_per_output)
        yield ds

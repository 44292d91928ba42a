"""Held–Suarez (1994) dry atmosphere on dinosaur's spectral primitive-equation core, written in WB2 layout.

The model is a T21 spectral dynamical core with 10 equidistant sigma levels, a flat aquaplanet and the
Held–Suarez relaxation forcing (Newtonian cooling to a zonally symmetric equilibrium temperature and Rayleigh
friction in the boundary layer), stepped with the IMEX SIL3 Runge–Kutta scheme. See docs/physics_data.md.

Output, computed inside the compiled scan so that only target-grid fields leave JAX:

* horizontal: the model's spectral coefficients are evaluated exactly at the WB2 target points (Legendre
  functions at the target latitudes, Fourier series at the target longitudes). For a T21 field this is the
  exact value of the model's own representation, not an approximation; winds come from vorticity and
  divergence through the streamfunction and velocity potential;
* vertical: per target column, T, u and v are linear in ln(p) between sigma-level centres (p = σ·pₛ), with
  linear extrapolation if a target level lies outside the column's centres; geopotential is integrated
  hydrostatically (trapezoid in ln p, as the model itself does) from the model's value at the centre below.

JAX and dinosaur are imported only when a :class:`HeldSuarezModel` is built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from earthcast.datasets.sim._lazy import require
from earthcast.datasets.sim.vertical import hydrostatic_geopotential, interp_in_log_sigma
from earthcast.errors import DataError
from earthcast.grids import wb2_grid

GENERATOR_VERSION = "held-suarez-1"
"""Bumped whenever the generated data would change; part of the demo cache key."""

_GAUSSIAN_NODES = {21: 16, 31: 24, 42: 32}
"""Gaussian nodes between equator and pole for the supported triangular truncations (T21, T31, T42)."""

_VARIABLE_ATTRS: dict[str, dict[str, str]] = {
    "geopotential": {"units": "m**2 s**-2", "long_name": "Geopotential"},
    "temperature": {"units": "K", "long_name": "Temperature"},
    "u_component_of_wind": {"units": "m s**-1", "long_name": "U component of wind"},
    "v_component_of_wind": {"units": "m s**-1", "long_name": "V component of wind"},
    "surface_pressure": {"units": "Pa", "long_name": "Surface pressure"},
    "land_sea_mask": {"units": "(0 - 1)", "long_name": "Land-sea mask (aquaplanet: no land)"},
    "geopotential_at_surface": {"units": "m**2 s**-2", "long_name": "Geopotential at surface (flat)"},
}
PRESSURE_LEVEL_VARIABLES = ("geopotential", "temperature", "u_component_of_wind", "v_component_of_wind")
SURFACE_VARIABLES = ("surface_pressure",)
STATIC_VARIABLES = ("land_sea_mask", "geopotential_at_surface")


@dataclass(frozen=True)
class HeldSuarezConfig:
    """Settings of the Held–Suarez run.

    Attributes:
        max_wavenumber: triangular truncation (21 → T21 on a 64x32 Gaussian grid; 31 and 42 also work).
        layers: number of equidistant sigma levels.
        time_step_minutes: model time step; must divide ``output_hours``.
        spinup_days: days integrated from the isothermal rest state before the first output.
        output_hours: spacing of the output (6 h, as WB2).
        pressure_levels_hpa: output pressure levels in hPa, ascending.
        grid_name: WB2 output grid; only grids without pole rows (winds are singular at the poles).
        start_time: the fake calendar date of the first output (Held–Suarez has no seasons or calendar).
        seed: selects the random surface-pressure perturbation that breaks the initial symmetry.
    """

    max_wavenumber: int = 21
    layers: int = 10
    time_step_minutes: int = 60
    spinup_days: int = 200
    output_hours: int = 6
    pressure_levels_hpa: tuple[int, ...] = (100, 200, 250, 300, 500, 700, 850)
    grid_name: str = "64x32_equiangular_conservative"
    start_time: str = "2017-01-01T00:00"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_wavenumber not in _GAUSSIAN_NODES:
            raise DataError(
                f"max_wavenumber={self.max_wavenumber} is not supported; "
                f"use one of {sorted(_GAUSSIAN_NODES)}."
            )
        if (self.output_hours * 60) % self.time_step_minutes:
            raise DataError(
                f"time_step_minutes={self.time_step_minutes} must divide output_hours={self.output_hours} "
                "(in minutes); e.g. use a 60-minute step for 6-hourly output."
            )
        levels = list(self.pressure_levels_hpa)
        if levels != sorted(set(levels)) or not all(0 < p < 1000 for p in levels):
            raise DataError(
                f"pressure_levels_hpa={self.pressure_levels_hpa} must be strictly ascending hPa values in "
                "(0, 1000), e.g. (250, 500, 850)."
            )
        if wb2_grid(self.grid_name).latitude.max() >= 90.0:
            raise DataError(
                f"Grid {self.grid_name!r} has pole rows, where winds are undefined; use a grid without poles "
                "such as '64x32_equiangular_conservative' and regrid afterwards if you need poles."
            )

    @property
    def steps_per_output(self) -> int:
        """Model steps between two outputs."""
        return self.output_hours * 60 // self.time_step_minutes

    @property
    def steps_per_day(self) -> int:
        """Model steps per simulated day."""
        return 24 * 60 // self.time_step_minutes


class HeldSuarezModel:
    """A compiled Held–Suarez integrator producing WB2-grid fields.

    Args:
        config: run settings.
        block_outputs: outputs produced per compiled call of :meth:`run_block` (memory per block:
            block_outputs × (4·levels + 1) × H × W × 4 bytes).
    """

    def __init__(self, config: HeldSuarezConfig, *, block_outputs: int = 120) -> None:
        jax = require("jax")
        require("dinosaur")
        from dinosaur import (
            coordinate_systems,
            held_suarez,
            primitive_equations,
            primitive_equations_states,
            scales,
            sigma_coordinates,
            spherical_harmonic,
            time_integration,
            xarray_utils,
        )

        self.config = config
        self.block_outputs = block_outputs
        self.grid = wb2_grid(config.grid_name)
        units = scales.units
        horizontal = spherical_harmonic.Grid.construct(
            max_wavenumber=config.max_wavenumber, gaussian_nodes=_GAUSSIAN_NODES[config.max_wavenumber]
        )
        self.coords = coordinate_systems.CoordinateSystem(
            horizontal=horizontal, vertical=sigma_coordinates.SigmaCoordinates.equidistant(config.layers)
        )
        self.specs = primitive_equations.PrimitiveEquationsSpecs.from_si()
        init_fn, aux = primitive_equations_states.isothermal_rest_atmosphere(
            self.coords, self.specs, p0=1e5 * units.pascal, p1=5e3 * units.pascal
        )
        self._init_fn = init_fn
        self.reference_temperature = aux[xarray_utils.REF_TEMP_KEY]
        orography = primitive_equations.truncated_modal_orography(aux[xarray_utils.OROGRAPHY], self.coords)
        dynamics = primitive_equations.PrimitiveEquations(
            self.reference_temperature, orography, self.coords, self.specs
        )
        forcing = held_suarez.HeldSuarezForcingSigma(
            coords=self.coords,
            physics_specs=self.specs,
            reference_temperature=self.reference_temperature,
            p0=1e5 * units.pascal,
        )
        dt = self.specs.nondimensionalize(config.time_step_minutes * units.minute)
        step = time_integration.imex_rk_sil3(time_integration.compose_equations([dynamics, forcing]), dt)
        # Scale-selective damping of the top ~20% of total wavenumbers (dinosaur's Held–Suarez settings).
        step = time_integration.step_with_filters(
            step,
            [time_integration.exponential_step_filter(horizontal, dt, tau=0.0087504, order=1.5, cutoff=0.8)],
        )
        self.output_grid = self._output_grid(spherical_harmonic, horizontal)
        self._uv = spherical_harmonic.vor_div_to_uv_nodal
        self._geopotential = primitive_equations.get_geopotential_on_sigma
        self._scale = {
            "temperature": float(self.specs.dimensionalize(1.0, units.degK).m),
            "velocity": float(self.specs.dimensionalize(1.0, units.meter / units.second).m),
            "geopotential": float(self.specs.dimensionalize(1.0, units.meter**2 / units.second**2).m),
            "pressure": float(self.specs.dimensionalize(1.0, units.pascal).m),
        }
        self._advance_day = jax.jit(time_integration.repeated(step, config.steps_per_day))
        self._trajectory = jax.jit(
            time_integration.trajectory_from_step(
                step,
                outer_steps=block_outputs,
                inner_steps=config.steps_per_output,
                start_with_input=True,
                post_process_fn=self._diagnose,
            )
        )
        self._jax = jax

    def _output_grid(self, spherical_harmonic: Any, horizontal: Any) -> Any:
        """A dinosaur grid with the model's wavenumbers whose nodes are the WB2 target points."""
        n_lat, n_lon = self.grid.shape
        out = spherical_harmonic.Grid(
            longitude_wavenumbers=horizontal.longitude_wavenumbers,
            total_wavenumbers=horizontal.total_wavenumbers,
            longitude_nodes=n_lon,
            latitude_nodes=n_lat,
            latitude_spacing="equiangular",
            spherical_harmonics_impl=horizontal.spherical_harmonics_impl,
            radius=horizontal.radius,
        )
        lon, sin_lat = out.nodal_axes
        lat_err = np.abs(np.rad2deg(np.arcsin(sin_lat)) - self.grid.latitude).max()
        lon_err = np.abs(np.rad2deg(lon) - self.grid.longitude).max()
        if max(lat_err, lon_err) > 1e-9:
            raise DataError(
                f"Grid {self.grid.name!r} is not an equiangular no-pole grid starting at longitude 0 "
                f"(max node error {max(lat_err, lon_err):.3g}°); use e.g. '64x32_equiangular_conservative'."
            )
        return out

    def _diagnose(self, state: Any) -> dict[str, Any]:
        """Map a modal model state to dimensional WB2 fields on the target grid (runs inside the scan).

        Returns:
            ``{name: (P, H, W)}`` for pressure-level variables and ``{"surface_pressure": (H, W)}``, float32.
        """
        jnp = self._jax.numpy
        cfg, g, s = self.config, self.output_grid, self._scale
        temperature = g.to_nodal(state.temperature_variation) + self.reference_temperature[:, None, None]
        u, v = self._uv(g, state.vorticity, state.divergence)
        surface_pressure = jnp.exp(g.to_nodal(state.log_surface_pressure))  # (1, X, Y), nondimensional
        geopotential = self._geopotential(
            temperature,
            nodal_orography=jnp.zeros(g.nodal_shape),
            sigma=self.coords.vertical,
            gravity_acceleration=self.specs.g,
            ideal_gas_constant=self.specs.R,
        )
        p_target = np.asarray(cfg.pressure_levels_hpa, dtype=np.float64) * 100.0 / s["pressure"]
        log_sigma_target = jnp.log(p_target[:, None, None] / surface_pressure)
        log_sigma = np.log(np.asarray(self.coords.vertical.centers, dtype=np.float64))
        on_levels = {
            "geopotential": hydrostatic_geopotential(
                jnp, geopotential, temperature, log_sigma, log_sigma_target, self.specs.R
            )
            * s["geopotential"],
            "temperature": interp_in_log_sigma(jnp, temperature, log_sigma, log_sigma_target)
            * s["temperature"],
            "u_component_of_wind": interp_in_log_sigma(jnp, u, log_sigma, log_sigma_target) * s["velocity"],
            "v_component_of_wind": interp_in_log_sigma(jnp, v, log_sigma, log_sigma_target) * s["velocity"],
        }
        out = {name: jnp.swapaxes(field, -1, -2) for name, field in on_levels.items()}
        out["surface_pressure"] = jnp.swapaxes(surface_pressure[0] * s["pressure"], -1, -2)
        return {k: x.astype(jnp.float32) for k, x in out.items()}

    def initial_state(self) -> Any:
        """Isothermal (288 K) rest atmosphere with a seeded surface-pressure perturbation."""
        return self._init_fn(rng_key=self._jax.random.PRNGKey(self.config.seed))

    def spin_up(self, state: Any, days: int, on_days: Callable[[float], None] | None = None) -> Any:
        """Integrate ``days`` whole days without output, reporting each day to ``on_days``."""
        for _ in range(days):
            state = self._advance_day(state)
            if on_days is not None:
                self._jax.block_until_ready(state)
                on_days(1.0)
        return state

    def run_block(self, state: Any) -> tuple[Any, dict[str, np.ndarray]]:
        """Integrate ``block_outputs`` outputs; the first output is ``state`` itself.

        Returns:
            (state after the block, ``{name: (block_outputs, [P,] H, W) float32}``).
        """
        state, fields = self._trajectory(state)
        return state, {k: np.asarray(v) for k, v in fields.items()}

    def times(self, first: int, count: int) -> np.ndarray:
        """datetime64[ns] of outputs ``first … first+count-1`` on the fake calendar."""
        start = pd.Timestamp(self.config.start_time).to_datetime64().astype("datetime64[ns]")
        return start + (np.arange(first, first + count) * self.config.output_hours).astype("timedelta64[h]")

    def block_dataset(self, fields: dict[str, np.ndarray], first: int) -> xr.Dataset:
        """Wrap block outputs (``first`` = index of its first output) as a WB2-layout dataset."""
        count = next(iter(fields.values())).shape[0]
        data_vars = {
            name: (("time", "level", "latitude", "longitude"), fields[name], _VARIABLE_ATTRS[name])
            for name in PRESSURE_LEVEL_VARIABLES
        }
        data_vars.update(
            {
                name: (("time", "latitude", "longitude"), fields[name], _VARIABLE_ATTRS[name])
                for name in SURFACE_VARIABLES
            }
        )
        return xr.Dataset(data_vars, coords=self.coords_for(self.times(first, count)))

    def coords_for(self, times: np.ndarray) -> dict[str, Any]:
        """WB2 coordinates: time, level (int64 hPa, ascending), latitude, longitude (float64, ascending)."""
        return {
            "time": ("time", times),
            "level": ("level", np.asarray(self.config.pressure_levels_hpa, dtype=np.int64), {"units": "hPa"}),
            "latitude": ("latitude", self.grid.latitude, {"units": "degrees_north"}),
            "longitude": ("longitude", self.grid.longitude, {"units": "degrees_east"}),
        }

    def static_dataset(self) -> xr.Dataset:
        """Static fields without a time dimension: all-ocean land-sea mask, flat surface geopotential."""
        zeros = np.zeros(self.grid.shape, dtype=np.float32)
        return xr.Dataset(
            {name: (("latitude", "longitude"), zeros, _VARIABLE_ATTRS[name]) for name in STATIC_VARIABLES}
        )

    def attrs(self) -> dict[str, Any]:
        """Global attributes describing the model, forcing, resolution and spin-up."""
        cfg = self.config
        return {
            "title": "Held-Suarez dry dynamical-core climate (earthcast embedded demo data)",
            "source": "dinosaur spectral primitive equations on sigma levels (NeuralGCM dynamical core)",
            "forcing": (
                "Held & Suarez (1994): Newtonian cooling to T_eq(lat, p) (k_a=1/40 d, k_s=1/4 d, dT_y=60 K, "
                "dtheta_z=10 K), Rayleigh friction k_f=1/d below sigma_b=0.7; flat aquaplanet, no seasons"
            ),
            "resolution": (
                f"T{cfg.max_wavenumber}, {cfg.layers} equidistant sigma levels, "
                f"dt={cfg.time_step_minutes} min, IMEX SIL3 + exponential filter"
            ),
            "spinup_days": int(cfg.spinup_days),
            "regridding": (
                "exact spectral evaluation at the target points; sigma->pressure linear in ln(p) per column "
                "(geopotential integrated hydrostatically from the sigma level below)"
            ),
            "calendar_note": f"fake calendar: first output at {cfg.start_time}, {cfg.output_hours}-hourly",
            "generator_version": GENERATOR_VERSION,
            "generator_config": repr(asdict(cfg)),
        }


def generate_held_suarez(
    config: HeldSuarezConfig,
    n_outputs: int,
    *,
    block_outputs: int = 120,
    on_days: Callable[[float], None] | None = None,
) -> Iterator[xr.Dataset]:
    """Spin up, then yield ``n_outputs`` 6-hourly outputs as consecutive WB2-layout datasets.

    The first block also carries the static fields and the global attributes, so it can be written with
    ``write_wb2_store`` and the rest appended along ``time``. Memory stays at one block.

    Args:
        config: run settings.
        n_outputs: total number of output times.
        block_outputs: outputs per block (the last block is truncated).
        on_days: called with the number of model days just simulated (for progress bars).
    """
    if n_outputs < 1:
        raise DataError(f"n_outputs={n_outputs} must be at least 1.")
    model = HeldSuarezModel(config, block_outputs=block_outputs)
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

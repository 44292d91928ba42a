"""Names for ``earthcast data convert``: ERA5/CDS short names -> WeatherBench2 (ARCO-ERA5) long names.

ERA5 netCDF downloads from the Climate Data Store and GRIB files opened with cfgrib use the same short names
(cfgrib's ``cfVarName``: ``t2m``, ``u10``, ``z``, …). WB2 uses the ARCO-ERA5 long names. Copernicus Marine
(CMEMS) ocean names (``zos``, ``uo``, ``vo``, ``thetao``, ``so``, …) are standard CMIP names and stay as they are.
"""

from __future__ import annotations

import xarray as xr

ERA5_NAMES: dict[str, str] = {
    # Single levels: instantaneous fields.
    "t2m": "2m_temperature",
    "d2m": "2m_dewpoint_temperature",
    "u10": "10m_u_component_of_wind",
    "v10": "10m_v_component_of_wind",
    "si10": "10m_wind_speed",
    "u100": "100m_u_component_of_wind",
    "v100": "100m_v_component_of_wind",
    "msl": "mean_sea_level_pressure",
    "sp": "surface_pressure",
    "sst": "sea_surface_temperature",
    "skt": "skin_temperature",
    "siconc": "sea_ice_cover",
    "ci": "sea_ice_cover",
    "sd": "snow_depth",
    "tcc": "total_cloud_cover",
    "lcc": "low_cloud_cover",
    "mcc": "medium_cloud_cover",
    "hcc": "high_cloud_cover",
    "tcw": "total_column_water",
    "tcwv": "total_column_water_vapour",
    "blh": "boundary_layer_height",
    "cape": "convective_available_potential_energy",
    "i10fg": "instantaneous_10m_wind_gust",
    "swvl1": "volumetric_soil_water_layer_1",
    "stl1": "soil_temperature_level_1",
    "swh": "significant_height_of_combined_wind_waves_and_swell",
    "mwd": "mean_wave_direction",
    "mwp": "mean_wave_period",
    # Single levels: accumulations (metres of water or J m**-2 over the hour ending at the valid time).
    "tp": "total_precipitation",
    "cp": "convective_precipitation",
    "lsp": "large_scale_precipitation",
    "e": "evaporation",
    "tisr": "toa_incident_solar_radiation",
    "ssr": "surface_net_solar_radiation",
    "ssrd": "surface_solar_radiation_downwards",
    "str": "surface_net_thermal_radiation",
    "strd": "surface_thermal_radiation_downwards",
    "ttr": "top_net_thermal_radiation",
    "slhf": "surface_latent_heat_flux",
    "sshf": "surface_sensible_heat_flux",
    "mtpr": "mean_total_precipitation_rate",
    "fg10": "10m_wind_gust_since_previous_post_processing",
    "mx2t": "maximum_2m_temperature_since_previous_post_processing",
    "mn2t": "minimum_2m_temperature_since_previous_post_processing",
    # Invariant fields.
    "lsm": "land_sea_mask",
    "slt": "soil_type",
    "sdor": "standard_deviation_of_orography",
    "slor": "slope_of_sub_gridscale_orography",
    "anor": "angle_of_sub_gridscale_orography",
    "isor": "anisotropy_of_sub_gridscale_orography",
    "cvh": "high_vegetation_cover",
    "cvl": "low_vegetation_cover",
    "tvh": "type_of_high_vegetation",
    "tvl": "type_of_low_vegetation",
    "cl": "lake_cover",
    "dl": "lake_depth",
    # Pressure levels (also: z, vo below).
    "t": "temperature",
    "u": "u_component_of_wind",
    "v": "v_component_of_wind",
    "q": "specific_humidity",
    "w": "vertical_velocity",
    "r": "relative_humidity",
    "d": "divergence",
    "pv": "potential_vorticity",
    "cc": "fraction_of_cloud_cover",
    "clwc": "specific_cloud_liquid_water_content",
    "ciwc": "specific_cloud_ice_water_content",
    "crwc": "specific_rain_water_content",
    "cswc": "specific_snow_water_content",
    "o3": "ozone_mass_mixing_ratio",
}
"""Short names renamed wherever they occur (ERA5 single and pressure levels)."""

PRESSURE_LEVEL_NAMES: dict[str, str] = {"z": "geopotential", "vo": "vorticity"}
"""Short names renamed only on pressure levels: ``z`` on a single level is the surface geopotential
(below), and ``vo`` on depth levels is the CMEMS northward sea-water velocity, which keeps its name."""

SINGLE_LEVEL_NAMES: dict[str, str] = {"z": "geopotential_at_surface"}
"""Short names renamed only without a vertical coordinate (ERA5 single levels)."""

STATIC_VARIABLES = frozenset(
    {
        "land_sea_mask",
        "geopotential_at_surface",
        "soil_type",
        "standard_deviation_of_orography",
        "slope_of_sub_gridscale_orography",
        "angle_of_sub_gridscale_orography",
        "anisotropy_of_sub_gridscale_orography",
        "high_vegetation_cover",
        "low_vegetation_cover",
        "type_of_high_vegetation",
        "type_of_low_vegetation",
        "lake_cover",
        "lake_depth",
    }
)
"""Time-invariant ERA5 fields. The CDS repeats them at every requested time; WB2 stores them without a time
dimension, so the converter keeps their first time step."""

PRESSURE_DIMS = ("pressure_level", "isobaricInhPa", "level", "plev")
"""Vertical dimensions in hPa (new CDS netCDF, cfgrib, old CDS netCDF, CMIP)."""

DEPTH_DIMS = ("depth",)
"""Vertical dimensions in metres below the surface (CMEMS)."""

TIME_DIMS = ("valid_time", "time")
"""Time dimensions, preferred first: the valid time (new CDS netCDF, cfgrib with ``time_dims``) is what WB2
calls ``time``."""

KEPT_ATTRS = ("units", "long_name", "standard_name")
"""Variable attributes carried into the store; GRIB bookkeeping attributes (``GRIB_*``) are dropped."""


def wb2_variable_names(ds: xr.Dataset) -> dict[str, str]:
    """Old -> new names for the data variables of one input that have a WB2 long name.

    A variable on pressure levels gets :data:`PRESSURE_LEVEL_NAMES`, one with no vertical dimension gets
    :data:`SINGLE_LEVEL_NAMES`, and every variable gets :data:`ERA5_NAMES`; unknown names (CMEMS, or names
    that are already long) are kept.
    """
    mapping: dict[str, str] = {}
    for name, da in ds.data_vars.items():
        name = str(name)
        on_pressure = any(d in da.dims for d in PRESSURE_DIMS)
        on_depth = any(d in da.dims for d in DEPTH_DIMS)
        if on_pressure and name in PRESSURE_LEVEL_NAMES:
            mapping[name] = PRESSURE_LEVEL_NAMES[name]
        elif not (on_pressure or on_depth) and name in SINGLE_LEVEL_NAMES:
            mapping[name] = SINGLE_LEVEL_NAMES[name]
        elif name in ERA5_NAMES:
            mapping[name] = ERA5_NAMES[name]
    return mapping

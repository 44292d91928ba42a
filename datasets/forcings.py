"""Analytic forcing and static fields: time encodings, encoded coordinates and top-of-atmosphere insolation.

Insolation follows Spencer (1971) for the solar declination, the equation of time and the Earth–Sun
distance factor, with a solar constant of 1361 W m⁻². It is returned divided by the solar constant, so the
channel is already O(1) and needs no statistics.
"""

from __future__ import annotations

import numpy as np

from earthcast.errors import DataError

SOLAR_CONSTANT_W_M2 = 1361.0

FORCING_CHANNELS: dict[str, str] = {
    "sin_hour_of_day": "1",
    "cos_hour_of_day": "1",
    "sin_day_of_year": "1",
    "cos_day_of_year": "1",
    "toa_incident_solar_flux": "W m**-2 / 1361",
}
"""Forcing channel name -> units (all dimensionless or scaled)."""

COORDINATE_STATICS: dict[str, str] = {
    "sin_latitude": "1",
    "cos_latitude": "1",
    "sin_longitude": "1",
    "cos_longitude": "1",
}
"""Static channels computed from the grid, name -> units."""

FORCING_GROUPS: dict[str, tuple[str, ...]] = {
    "hour_of_day": ("sin_hour_of_day", "cos_hour_of_day"),
    "day_of_year": ("sin_day_of_year", "cos_day_of_year"),
    "toa_insolation": ("toa_incident_solar_flux",),
    "latitude": ("sin_latitude", "cos_latitude"),
    "longitude": ("sin_longitude", "cos_longitude"),
}
"""Short names usable in configs, expanded to their channels."""


def _fractional_year(times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(day of year starting at 1, UTC hour, Spencer's fractional-year angle γ in radians), each (T,)."""
    t = np.asarray(times, dtype="datetime64[ns]")
    year_start = t.astype("datetime64[Y]")
    day = (t - year_start).astype("timedelta64[ns]").astype(np.float64) / 86400e9  # days since Jan 1, 00 UTC
    hour = np.mod(day, 1.0) * 24.0
    year = year_start.astype(np.int64) + 1970
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    days_in_year = np.where(leap, 366.0, 365.0)
    gamma = 2.0 * np.pi / days_in_year * (np.floor(day) + (hour - 12.0) / 24.0)
    return np.floor(day) + 1.0, hour, gamma


def toa_insolation(times: np.ndarray, latitude: np.ndarray, longitude: np.ndarray) -> np.ndarray:
    """Instantaneous top-of-atmosphere incident solar flux divided by the solar constant.

    Args:
        times: (T,) datetime64 UTC instants.
        latitude: (H,) degrees north.
        longitude: (W,) degrees east.

    Returns:
        (T, H, W) float32, S/S0 where S is in W m⁻² (zero at night, ~1.03 at perihelion noon overhead sun).
    """
    _, hour, g = _fractional_year(times)
    decl = (
        0.006918
        - 0.399912 * np.cos(g)
        + 0.070257 * np.sin(g)
        - 0.006758 * np.cos(2 * g)
        + 0.000907 * np.sin(2 * g)
        - 0.002697 * np.cos(3 * g)
        + 0.00148 * np.sin(3 * g)
    )
    eqtime_min = 229.18 * (
        0.000075
        + 0.001868 * np.cos(g)
        - 0.032077 * np.sin(g)
        - 0.014615 * np.cos(2 * g)
        - 0.040849 * np.sin(2 * g)
    )
    distance = (
        1.000110
        + 0.034221 * np.cos(g)
        + 0.001280 * np.sin(g)
        + 0.000719 * np.cos(2 * g)
        + 0.000077 * np.sin(2 * g)
    )
    lat = np.deg2rad(np.asarray(latitude, dtype=np.float64))[None, :, None]
    lon = np.asarray(longitude, dtype=np.float64)[None, None, :]
    solar_minutes = hour[:, None, None] * 60.0 + eqtime_min[:, None, None] + 4.0 * lon
    hour_angle = np.deg2rad(solar_minutes / 4.0 - 180.0)
    d = decl[:, None, None]
    cos_zenith = np.sin(lat) * np.sin(d) + np.cos(lat) * np.cos(d) * np.cos(hour_angle)
    return (distance[:, None, None] * np.clip(cos_zenith, 0.0, None)).astype(np.float32)


def forcing_fields(
    names: list[str], times: np.ndarray, latitude: np.ndarray, longitude: np.ndarray
) -> np.ndarray:
    """Forcing channels at the given times.

    Returns:
        (T, len(names), H, W) float32.
    """
    doy, hour, _ = _fractional_year(times)
    shape = (len(times), latitude.size, longitude.size)
    out = np.empty((len(times), len(names), latitude.size, longitude.size), dtype=np.float32)
    scalar = {
        "sin_hour_of_day": np.sin(2 * np.pi * hour / 24.0),
        "cos_hour_of_day": np.cos(2 * np.pi * hour / 24.0),
        "sin_day_of_year": np.sin(2 * np.pi * (doy - 1) / 365.25),
        "cos_day_of_year": np.cos(2 * np.pi * (doy - 1) / 365.25),
    }
    for i, name in enumerate(names):
        if name == "toa_incident_solar_flux":
            out[:, i] = toa_insolation(times, latitude, longitude)
        elif name in scalar:
            out[:, i] = np.broadcast_to(scalar[name][:, None, None], shape)
        else:
            raise DataError(f"Unknown forcing channel {name!r}; known: {sorted(FORCING_CHANNELS)}.")
    return out


def coordinate_statics(names: list[str], latitude: np.ndarray, longitude: np.ndarray) -> np.ndarray:
    """Encoded-coordinate static channels, (len(names), H, W) float32."""
    lat = np.deg2rad(latitude)[:, None] * np.ones((1, longitude.size))
    lon = np.deg2rad(longitude)[None, :] * np.ones((latitude.size, 1))
    fields = {
        "sin_latitude": np.sin(lat),
        "cos_latitude": np.cos(lat),
        "sin_longitude": np.sin(lon),
        "cos_longitude": np.cos(lon),
    }
    unknown = [n for n in names if n not in fields]
    if unknown:
        raise DataError(f"Unknown coordinate static channels {unknown}; known: {sorted(fields)}.")
    return np.stack([fields[n] for n in names]).astype(np.float32)

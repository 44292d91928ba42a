"""Online aggregators fed by the rollout generator, resumable, and saved as ``{stem}_aggregates.nc``.

Quantities (all from the written physical float32 fields, accumulated in float64; stopped members excluded):

- ``global_mean`` (time, [number], prediction_timedelta, [level]): WB2 area-weighted mean of each init and
  member at each lead (NaN points such as masked land are skipped; a stopped member is NaN).
- ``zonal_mean`` (prediction_timedelta, [level], latitude): the mean over longitude, averaged over inits and
  members, per lead (the coordinate ``samples`` counts the (init, member)s of each lead, here and in the
  spectrum group).
- ``zonal_energy_spectrum`` (prediction_timedelta = the aggregate leads, [level], latitude,
  zonal_wavenumber): WB2 ``ZonalEnergySpectrum`` averaged over inits and members.
- ``zonal_energy_spectrum_mean``: the same spectrum averaged over every lead, init and member.
- ``time_mean`` / ``time_std`` ([level], latitude, longitude): mean and population standard deviation over
  every lead, init and member (running sums of x and x²).

Each group of the netCDF file is a dataset with the forecast store's variable names:
``xr.open_dataset(path, group="time_mean")``.

Resume without double counting: every accumulator lives in a memory-mapped ``.npy`` file under the run's
state directory and is written by assignment, never in place. Per-(init, lead) series are assigned once.
Running sums keep two slots: step g (counted over batches and leads) reads the sum through step g − 1 from
slot (g − 1) mod 2 and assigns the sum through g to slot g mod 2, so a step redone after a kill starts from
the same sum. Per-lead sums use the same two slots by batch parity. Files survive a killed process (the page
cache keeps them), not a power cut.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from earthcast.datasets.channels import ChannelManifest
from earthcast.errors import ConfigError
from earthcast.rollout.generator import RolloutStep
from earthcast.rollout.writer import level_axis, level_positions, variable_layout
from earthcast.scoring.spectrum import EARTH_RADIUS_M
from earthcast.scoring.weights import latitude_weights


def zonal_power(x: torch.Tensor, latitude: np.ndarray) -> torch.Tensor:
    """WB2 zonal energy spectrum of x (..., H, W) along longitude: (..., H, W // 2 + 1) float64."""
    coeffs = torch.fft.rfft(x.double(), dim=-1, norm="forward")
    power = coeffs.real**2 + coeffs.imag**2
    power[..., 1:] *= 2.0
    circumference = torch.from_numpy(np.cos(np.deg2rad(latitude)) * 2 * np.pi * EARTH_RADIUS_M)
    return power * circumference.to(power.device)[:, None]


DESCRIPTIONS = {
    "global_mean": "WB2 area-weighted mean over the valid points of each init, member and lead",
    "zonal_mean": "mean over longitude, averaged over inits and members, per lead",
    "zonal_energy_spectrum": "WB2 ZonalEnergySpectrum averaged over inits and members at the aggregate leads",
    "zonal_energy_spectrum_mean": "WB2 ZonalEnergySpectrum averaged over every lead, init and member",
    "time_mean": "mean over every lead, init and member",
    "time_std": "population standard deviation over every lead, init and member",
}
"""Group name -> what it holds (the ``description`` attribute of each group)."""


class OnlineAggregates:
    """Accumulators of one run, memory-mapped under ``directory``.

    Args:
        directory: the run's state directory.
        manifest: channels and grid.
        n_inits, members, n_steps, n_batches: run shape.
        spectrum_steps: 0-based lead indices where spectra are kept.
        create: make fresh files (else open the existing ones for a resume).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        manifest: ChannelManifest,
        *,
        n_inits: int,
        members: int,
        n_steps: int,
        spectrum_steps: list[int],
        create: bool,
    ) -> None:
        self.dir, self.manifest = Path(directory), manifest
        self.n_steps, self.spectrum_steps = n_steps, list(spectrum_steps)
        self.lat = np.asarray(manifest.latitude, np.float64)
        self.weights = torch.from_numpy(latitude_weights(self.lat, manifest.grid_geometry))[:, None]
        c, (h, w) = len(manifest.state), manifest.grid_shape
        k = w // 2 + 1
        shapes = {
            "global_mean": ((n_inits, members, n_steps, c), np.float32, np.nan),
            "zonal_sum": ((n_steps, 2, c, h), np.float64, 0.0),
            "zonal_count": ((n_steps, 2), np.float64, 0.0),
            "spectrum_sum": ((len(self.spectrum_steps), 2, c, h, k), np.float64, 0.0),
            "spectrum_count": ((len(self.spectrum_steps), 2), np.float64, 0.0),
            "running": ((2, 3, c, h, w), np.float64, 0.0),  # slots × (Σx, Σx², Σ spectrum padded to W)
            "running_count": ((2,), np.float64, 0.0),
        }
        if k > w:
            raise ConfigError("the grid needs at least 2 longitudes for a zonal spectrum")
        self.arrays: dict[str, np.ndarray] = {}
        for name, (shape, dtype, fill) in shapes.items():
            path = self.dir / f"{name}.npy"
            if create:
                arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
                arr[...] = fill
            else:
                arr = np.load(path, mmap_mode="r+")
            self.arrays[name] = arr
        self._running = np.zeros((3, c, h, w))
        self._running_count = 0.0

    def resume(self, batch: int, next_step: int) -> None:
        """Load the running sums through the step before (batch, next_step)."""
        g = batch * self.n_steps + next_step
        if g == 0:
            self._running[...], self._running_count = 0.0, 0.0
        else:
            self._running[...] = self.arrays["running"][(g - 1) % 2]
            self._running_count = float(self.arrays["running_count"][(g - 1) % 2])

    def _per_lead(self, name: str, row: int, batch: int, value: np.ndarray, count: float) -> None:
        sums, counts = self.arrays[f"{name}_sum"], self.arrays[f"{name}_count"]
        previous = (sums[row, (batch - 1) % 2], counts[row, (batch - 1) % 2]) if batch else (0.0, 0.0)
        sums[row, batch % 2] = previous[0] + value
        counts[row, batch % 2] = previous[1] + count

    def update(self, step: RolloutStep, batch: int, inits: slice) -> None:
        """Add one written step of batch ``batch`` (whose inits are ``inits`` on the time axis)."""
        fields = step.fields.detach().double().cpu()  # (B, M, C, H, W)
        valid = torch.isfinite(fields)
        w = self.weights * valid
        num = (torch.where(valid, fields, 0.0) * self.weights).sum((-2, -1))
        self.arrays["global_mean"][inits, :, step.index] = (num / w.sum((-2, -1))).numpy()
        live = fields[step.alive.cpu()]  # (n_alive, C, H, W)
        count = float(live.shape[0])
        self._per_lead("zonal", step.index, batch, torch.nanmean(live, dim=-1).sum(0).numpy(), count)
        c, h, w = live.shape[1:]
        power = (
            zonal_power(live, self.lat).sum(0)
            if count
            else torch.zeros(c, h, w // 2 + 1, dtype=torch.float64)
        )
        if step.index in self.spectrum_steps:
            self._per_lead("spectrum", self.spectrum_steps.index(step.index), batch, power.numpy(), count)
        self._running[0] += live.sum(0).numpy()
        self._running[1] += (live**2).sum(0).numpy()
        self._running[2, ..., : power.shape[-1]] += power.numpy()
        self._running_count += count
        g = batch * self.n_steps + step.index
        self.arrays["running"][g % 2] = self._running
        self.arrays["running_count"][g % 2] = self._running_count

    def _split(self, values: np.ndarray, dims: tuple[str, ...], coords: dict) -> xr.Dataset:
        """(..., C, *rest) -> one variable per store variable; ``dims`` name the axes with C as ``level``."""
        axis = dims.index("level")
        layouts = variable_layout(self.manifest)
        levels = level_axis(layouts)
        data = {}
        for lay in layouts:
            if lay.levels is None:
                part = np.take(values, lay.channels[0], axis=axis)
                data[lay.name] = (dims[:axis] + dims[axis + 1 :], part, {"units": lay.units})
                continue
            shape = list(values.shape)
            shape[axis] = len(levels)
            part = np.full(shape, np.nan, dtype=values.dtype)
            index = [slice(None)] * values.ndim
            index[axis] = level_positions(lay, levels)  # type: ignore[call-overload]
            part[tuple(index)] = np.take(values, list(lay.channels), axis=axis)
            data[lay.name] = (dims, part, {"units": lay.units})
        if levels:
            coords = coords | {"level": np.asarray(levels, np.int64)}
        return xr.Dataset(data, coords=coords)

    def datasets(
        self, init_times: np.ndarray, leads: np.ndarray, members: int | None, n_batches: int
    ) -> dict[str, xr.Dataset]:
        """The finished aggregates, one dataset per group (after the last step of the last batch)."""
        lon = np.asarray(self.manifest.longitude, np.float64)
        n_k = lon.size // 2 + 1
        final = (n_batches - 1) % 2
        space = {"latitude": self.lat, "longitude": lon}
        with np.errstate(invalid="ignore", divide="ignore"):
            series = self.arrays["global_mean"]
            if not members:
                series = series[:, 0]
            dims = (
                ("time", "number", "prediction_timedelta", "level")
                if members
                else ("time", "prediction_timedelta", "level")
            )
            coords = {"time": init_times, "prediction_timedelta": leads}
            if members:
                coords["number"] = np.arange(members)
            out = {"global_mean": self._split(np.asarray(series), dims, coords)}
            counts = np.array(self.arrays["zonal_count"][:, final])
            zonal = self.arrays["zonal_sum"][:, final] / counts[:, None, None]
            out["zonal_mean"] = self._split(
                zonal, ("prediction_timedelta", "level", "latitude"),
                {"prediction_timedelta": leads, "latitude": self.lat, "samples": ("prediction_timedelta", counts)},
            )  # fmt: skip
            spec_coords = self._spectrum_coords(lon)
            sums, counts = (
                self.arrays["spectrum_sum"][:, final],
                np.array(self.arrays["spectrum_count"][:, final]),
            )
            out["zonal_energy_spectrum"] = self._split(
                sums / counts[:, None, None, None],
                ("prediction_timedelta", "level", "latitude", "zonal_wavenumber"),
                spec_coords
                | {
                    "prediction_timedelta": leads[self.spectrum_steps],
                    "samples": ("prediction_timedelta", counts),
                },
            )
            g = n_batches * self.n_steps - 1
            running, count = self.arrays["running"][g % 2], float(self.arrays["running_count"][g % 2])
            out["zonal_energy_spectrum_mean"] = self._split(
                running[2, ..., :n_k] / count, ("level", "latitude", "zonal_wavenumber"), spec_coords
            )
            mean = running[0] / count
            out["time_mean"] = self._split(mean, ("level", "latitude", "longitude"), space)
            var = np.maximum(running[1] / count - mean**2, 0.0)
            out["time_std"] = self._split(np.sqrt(var), ("level", "latitude", "longitude"), space)
        for name, ds in out.items():
            ds.attrs.update(aggregate=name, description=DESCRIPTIONS[name], samples=count)
        return out

    def _spectrum_coords(self, lon: np.ndarray) -> dict:
        """zonal_wavenumber, frequency (zonal_wavenumber, latitude) [1/m] and wavelength [m] as in WB2."""
        n_k = lon.size // 2 + 1
        spacing = np.cos(np.deg2rad(self.lat)) * 2 * np.pi * EARTH_RADIUS_M * (lon[1] - lon[0]) / 360.0
        frequency = np.fft.rfftfreq(lon.size)[:, None] / spacing[None, :]
        with np.errstate(divide="ignore"):
            wavelength = 1 / frequency
        return {
            "latitude": self.lat,
            "zonal_wavenumber": np.arange(n_k),
            "frequency": (("zonal_wavenumber", "latitude"), frequency, {"units": "1 / m"}),
            "wavelength": (("zonal_wavenumber", "latitude"), wavelength, {"units": "m"}),
        }

    def flush(self) -> None:
        """Write the memory maps back to their files."""
        for arr in self.arrays.values():
            if isinstance(arr, np.memmap):
                arr.flush()


def write_aggregates(datasets: dict[str, xr.Dataset], path: str | os.PathLike) -> None:
    """Write the groups into one netCDF file, atomically (temporary file, then rename)."""
    final = Path(path)
    tmp = final.with_name(f".{final.name}.partial")
    tmp.unlink(missing_ok=True)
    for i, (name, ds) in enumerate(datasets.items()):
        ds.to_netcdf(tmp, mode="w" if i == 0 else "a", group=name, engine="netcdf4")
    os.replace(tmp, final)

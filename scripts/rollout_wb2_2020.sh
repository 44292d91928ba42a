#!/usr/bin/env bash
# The WeatherBench2 protocol: inits every 12 h through 2020 (00 and 12 UTC, 732 inits), 10-day leads,
# written in WB2's by-init layout (time = init, prediction_timedelta, [level], latitude, longitude) and
# ready for `earthcast score` (or weatherbench2's own evaluation).
#
#   scripts/rollout_wb2_2020.sh CHECKPOINT ERA5_STORE [OUT] [MEMBERS]
#
#   CHECKPOINT  a .ckpt written by `earthcast fit`
#   ERA5_STORE  the truth store (e.g. a local copy of gs://weatherbench2/datasets/era5/1959-2022-6h-64x32_equiangular_conservative.zarr);
#               it must hold the n_input steps ending at every init (2020-01-01T00 minus (n_input-1) steps onwards)
#   OUT         output store (default: wb2_2020.zarr)
#   MEMBERS     ensemble members (default 1; >1 adds a `number` dim, member 0 is the unperturbed control)
#
# Rerunning the same command after an interruption resumes where it stopped. Afterwards score it with:
#   earthcast score --forecast OUT --truth ERA5_STORE --climatology CLIM.zarr --out results.nc
# (the truth must cover every valid time, i.e. run to 2021-01-10).
set -euo pipefail

CKPT=${1:?usage: $0 CHECKPOINT ERA5_STORE [OUT] [MEMBERS]}
DATA=${2:?usage: $0 CHECKPOINT ERA5_STORE [OUT] [MEMBERS]}
OUT=${3:-wb2_2020.zarr}
MEMBERS=${4:-1}

# 8 inits per batch: each model call advances 8 forecasts (x MEMBERS) by one 6-hour step.
# Spectra are kept at the WB2 headline leads of 1, 3, 5 and 10 days.
earthcast rollout \
  --checkpoint "$CKPT" \
  --data "$DATA" \
  --inits 2020-01-01T00:2020-12-31T12:12h \
  --lead 10d \
  --members "$MEMBERS" \
  --out "$OUT" \
  --batch_size 8 \
  --aggregate_leads 1d 3d 5d 10d \
  --device "${DEVICE:-cpu}"

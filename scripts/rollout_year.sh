#!/usr/bin/env bash
# A year-long rollout: one init (or a few), 365 days of leads, written step by step to a WB2 by-init Zarr.
#
#   scripts/rollout_year.sh CHECKPOINT TRUTH_STORE [OUT] [INITS]
#
#   CHECKPOINT   a .ckpt written by `earthcast fit` (e.g. lightning_logs/version_0/checkpoints/last.ckpt)
#   TRUTH_STORE  the store the initial conditions come from (e.g. the store the model was trained on)
#   OUT          output store (default: year_rollout.zarr)
#   INITS        init times, START:END:FREQ or a comma list (default: 2020-01-01T00)
#
# Memory stays flat over the 1460 six-hourly steps: only the last n_input states are held. The online
# aggregates (global-mean series, zonal means, zonal energy spectra, time mean/std) land in
# OUT_aggregates.nc. If the run is interrupted (crash, kill -9, preemption), run the same command again:
# it resumes at the first unwritten lead and the store ends bit-identical to an uninterrupted run.
# Plot the global-mean series afterwards with:
#   earthcast plot series --forecast OUT --truth TRUTH_STORE --out plots/
set -euo pipefail

CKPT=${1:?usage: $0 CHECKPOINT TRUTH_STORE [OUT] [INITS]}
DATA=${2:?usage: $0 CHECKPOINT TRUTH_STORE [OUT] [INITS]}
OUT=${3:-year_rollout.zarr}
INITS=${4:-2020-01-01T00}

# --aggregate_leads: keep zonal energy spectra after 1, 10, 30, 90 and 365 days.
# --blowup_bound: stop a run whose normalised state leaves |z| <= 50 and report where (exit status 3).
earthcast rollout \
  --checkpoint "$CKPT" \
  --data "$DATA" \
  --inits "$INITS" \
  --lead 365d \
  --out "$OUT" \
  --batch_size 1 \
  --aggregate_leads 1d 10d 30d 90d 365d \
  --blowup_bound 50 \
  --device "${DEVICE:-cpu}"

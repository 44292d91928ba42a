"""earthcast.planners: BeamVQ and SFP on one toolkit, wrapping any earthcast forecaster.

Toolkit: :mod:`~earthcast.planners.codebook` (top-K VQ), :mod:`~earthcast.planners.heads` (candidate
generators), :mod:`~earthcast.planners.search` (batched beam search), :mod:`~earthcast.planners.rewards` and
:mod:`~earthcast.planners.critics` (truth rewards and inference critics), :mod:`~earthcast.planners.aggregate`,
:mod:`~earthcast.planners.selftrain` (pseudo-labels with a leakage guard). Methods: :mod:`~earthcast.planners.beamvq`
and :mod:`~earthcast.planners.sfp` (Lightning modules), planned rollouts in :mod:`~earthcast.planners.inference`.
See ``docs/planners.md``.
"""

"""The rollout generator: one coordinate-carrying :class:`RolloutStep` per lead, memory flat in lead length.

Only the N most recent normalised states of each (init, member) are held. Forcings are computed
analytically at each valid time (a limited-area model's lateral boundary is read from the truth store there);
statics come from the truth store. Writers and online aggregators consume the steps; the restart record saves
``RolloutStep.state`` to continue bit-identically.

Ensembles: member 0 is the unperturbed control unless ``Ensemble.perturb_control``; every other member adds
``amplitude`` × N(0, 1) noise in normalised units to its initial condition (the same noise field on all N
input steps), drawn from a generator seeded by (seed, init time, member), so members do not depend on the
batch composition.

Blow-ups: a NaN/Inf or ``|z| > blowup_bound`` (normalised units) stops that (init, member): its fields are
NaN from that step on, its state is zeroed (so it cannot spoil the batch) and a :class:`BlowUp` names the
step, channel and location. A non-finite initial condition is reported as step 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch

from earthcast.datasets.boundary import manifest_forcings
from earthcast.datasets.time_axis import advance_times
from earthcast.errors import ConfigError
from earthcast.rollout.initial import TruthSource
from earthcast.rollout.model import StepModel


@dataclass(frozen=True)
class Ensemble:
    """Initial-condition perturbations: ``members`` members, Gaussian noise of ``amplitude`` (normalised
    units), per-member seeds derived from ``seed``; member 0 is unperturbed unless ``perturb_control``."""

    members: int = 1
    amplitude: float = 0.0
    seed: int = 0
    perturb_control: bool = False

    def noise(self, init_ns: int, member: int, shape: tuple[int, ...]) -> torch.Tensor | None:
        """(C, H, W) float32 perturbation of one (init, member) on the CPU, or None for the control."""
        if (member == 0 and not self.perturb_control) or self.amplitude == 0.0:
            return None
        key = np.random.SeedSequence([self.seed, int(np.int64(init_ns).view(np.uint64)), member])
        gen = torch.Generator().manual_seed(int(key.generate_state(1, np.uint64)[0]))
        return self.amplitude * torch.randn(shape, generator=gen, dtype=torch.float32)


@dataclass(frozen=True)
class BlowUp:
    """Where an (init, member) stopped: step (1-based lead index, 0 = initial condition), channel, location."""

    init_time: str
    member: int
    step: int
    lead_hours: float
    channel: str
    latitude: float
    longitude: float
    value: float
    reason: str

    def describe(self) -> str:
        """One line for the report."""
        where = "initial condition" if self.step == 0 else f"step {self.step} (lead {self.lead_hours:g} h)"
        return (
            f"init {self.init_time} member {self.member}: {self.reason} in {self.channel!r} at {where}, "
            f"latitude {self.latitude:.4g}, longitude {self.longitude:.4g} (value {self.value:.4g})"
        )

    def to_dict(self) -> dict:
        """Plain dict (restart record, store attributes)."""
        return asdict(self)


@dataclass(frozen=True)
class InitialConditions:
    """Inputs of one batch: init_times (B,) datetime64[ns]; states (B, N, C, H, W) float32 physical;
    static (S, H, W) float32 physical; mask (H, W) bool, True where valid, or None (nothing masked);
    truth: the truth store, read at every step for the lateral boundary of a limited-area model
    (``manifest.boundary_width > 0``; unused otherwise)."""

    init_times: np.ndarray
    states: torch.Tensor
    static: torch.Tensor
    mask: torch.Tensor | None = None
    truth: TruthSource | None = None


@dataclass
class RolloutState:
    """What continues a batch: window (B·M, N, C, H, W) normalised states (flat index b·M + m), alive
    (B, M) bool, next_step (0-based index of the next lead to compute)."""

    window: torch.Tensor
    alive: torch.Tensor
    next_step: int


@dataclass(frozen=True)
class RolloutStep:
    """One lead of a batch.

    Attributes:
        index: 0-based lead index; lead = (index + 1) × model step.
        lead: timedelta64[ns] (for a calendar step, in mean months; ``valid_times`` are the true times).
        init_times, valid_times: (B,) datetime64[ns].
        fields: (B, M, C, H, W) float32 physical units, NaN for stopped members and masked points.
        alive: (B, M) bool after this step.
        blowups: the (init, member)s that stopped at this step (or at step 0, reported with the first step).
        state: the state after this step (for the restart record).
    """

    index: int
    lead: np.timedelta64
    init_times: np.ndarray
    valid_times: np.ndarray
    fields: torch.Tensor
    alive: torch.Tensor
    blowups: tuple[BlowUp, ...]
    state: RolloutState


def _find_blowups(
    z: torch.Tensor,
    live: torch.Tensor,
    mask: torch.Tensor | None,
    bound: float,
    model: StepModel,
    init_times: np.ndarray,
    members: int,
    step: int,
) -> tuple[torch.Tensor, list[BlowUp]]:
    """Flat (B·M,) bool of live samples that blow up in z (B·M, C, H, W), and their reports."""
    bad = ~(z.abs() <= bound)  # True for NaN, ±Inf and |z| > bound alike
    if mask is not None:
        bad &= mask
    bad &= live[:, None, None, None]
    dead = bad.flatten(1).any(dim=1)
    reports: list[BlowUp] = []
    if not bool(dead.any()):
        return dead, reports
    names, lat, lon = model.manifest.names("state"), model.manifest.latitude, model.manifest.longitude
    hours = step * model.manifest.time_step_hours
    for flat in torch.nonzero(dead).flatten().tolist():
        c, i, j = (int(v) for v in torch.nonzero(bad[flat])[0])
        value = float(z[flat, c, i, j])
        reason = "NaN" if np.isnan(value) else ("Inf" if np.isinf(value) else f"|z| > {bound:g}")
        reports.append(
            BlowUp(
                str(init_times[flat // members])[:19], flat % members, step, hours, names[c],
                float(lat[i]), float(lon[j]), value, reason,
            )
        )  # fmt: skip
    return dead, reports


def initial_state(
    model: StepModel, ic: InitialConditions, ensemble: Ensemble, blowup_bound: float
) -> tuple[RolloutState, list[BlowUp]]:
    """Normalise, mask, expand to members and perturb the initial conditions of a batch.

    Returns the state at step 0 and the (init, member)s whose initial condition is already non-finite or
    beyond the bound.
    """
    m = ensemble.members
    z = model.normalizer.normalize_state(ic.states.to(model.device, torch.float32))
    if ic.mask is not None:  # masked points are 0 in normalised units (the channel mean), as in training
        z = torch.where(ic.mask.to(z.device), z, torch.zeros((), device=z.device))
    z = z.repeat_interleave(m, dim=0)  # (B·M, N, C, H, W)
    init_ns = ic.init_times.astype("datetime64[ns]").astype(np.int64)
    for flat in range(z.shape[0]):
        noise = ensemble.noise(int(init_ns[flat // m]), flat % m, tuple(z.shape[2:]))
        if noise is not None:
            if ic.mask is not None:
                noise = noise * ic.mask
            z[flat] += noise.to(z.device)[None]
    live = torch.ones(z.shape[0], dtype=torch.bool, device=z.device)
    mask = None if ic.mask is None else ic.mask.to(z.device)
    dead = torch.zeros_like(live)
    reports: list[BlowUp] = []
    for n in range(z.shape[1]):
        d, r = _find_blowups(z[:, n], live & ~dead, mask, blowup_bound, model, ic.init_times, m, 0)
        dead |= d
        reports += r
    z[dead] = 0.0
    return RolloutState(z, (~dead).reshape(-1, m), 0), reports


def _forcing_frame(
    model: StepModel, init_times: np.ndarray, j: int, truth: TruthSource | None
) -> torch.Tensor:
    """(B, F, H, W) physical forcings at init + j × step, calendar-aware (one call per frame, so a resumed run
    computes them alike); a limited-area model's boundary channels come from the truth at those times."""
    times = advance_times(init_times, j, model.manifest.model_step)
    state = None
    if model.manifest.boundary_width:
        if truth is None:
            raise ConfigError(
                f"this limited-area model (boundary_width={model.manifest.boundary_width}) takes its lateral "
                "boundary from the truth at every step: pass InitialConditions(..., truth=TruthSource.open("
                "store, model.manifest))"
            )
        state = truth.boundary_states(times)
    return torch.from_numpy(manifest_forcings(model.manifest, times, state))


def generate(
    model: StepModel,
    ic: InitialConditions,
    n_steps: int,
    *,
    ensemble: Ensemble | None = None,
    blowup_bound: float = 50.0,
    resume: RolloutState | None = None,
) -> Iterator[RolloutStep]:
    """Yield leads ``resume.next_step`` (or 0) … ``n_steps − 1`` of one batch of inits.

    Args:
        model: the loaded model step.
        ic: initial conditions of the batch (its states are unused when resuming).
        n_steps: total leads of the run.
        ensemble: members and perturbations (default: one unperturbed member).
        blowup_bound: largest allowed |z| in normalised units (``inf`` checks only NaN/Inf).
        resume: the state saved after the last written step of this batch.
    """
    ensemble = ensemble or Ensemble()
    m, n = ensemble.members, model.n_input
    pending: list[BlowUp] = []
    # inference mode (no autograd bookkeeping) is entered per step, never held across a yield
    with torch.inference_mode():
        if resume is None:
            state, pending = initial_state(model, ic, ensemble, blowup_bound)
        else:
            state = RolloutState(
                resume.window.to(model.device), resume.alive.to(model.device), resume.next_step
            )
        static = model.normalizer.normalize_static(ic.static.to(model.device, torch.float32))
    init_times = ic.init_times.astype("datetime64[ns]")
    mask = None if ic.mask is None else ic.mask.to(model.device)
    valid_points = None if mask is None else mask.float()
    static = static.expand(len(init_times) * m, *static.shape)
    first = state.next_step + 1 - n
    frames = [_forcing_frame(model, init_times, j, ic.truth) for j in range(first, state.next_step + 1)]
    window, alive = state.window, state.alive.clone()
    for k in range(state.next_step, n_steps):
        with torch.inference_mode():
            frames.append(_forcing_frame(model, init_times, k + 1, ic.truth))
            valid = advance_times(init_times, k + 1, model.manifest.model_step)
            live = alive.flatten()
            if bool(live.any()):
                forcings = model.normalizer.normalize_forcings(
                    torch.stack(frames, dim=1).to(model.device), valid_points
                )
                forcings = forcings.repeat_interleave(m, dim=0)
                valid_ns = torch.from_numpy(valid.astype(np.int64)).to(model.device).repeat_interleave(m)
                nxt = model.step_once(window, static, forcings, valid_ns)
            else:
                nxt = torch.zeros_like(window[:, -1])
            dead, reports = _find_blowups(nxt, live, mask, blowup_bound, model, init_times, m, k + 1)
            alive = (live & ~dead).reshape(alive.shape)
            everyone = bool(alive.all())
            if mask is not None:  # normalised 0 on masked points, exactly as the training batches hold them
                nxt = torch.where(mask, nxt, torch.zeros((), device=nxt.device))
            if not everyone:
                nxt = torch.where(
                    alive.flatten()[:, None, None, None], nxt, torch.zeros((), device=nxt.device)
                )
            fields = model.normalizer.denormalize_state(nxt).reshape(len(init_times), m, *nxt.shape[1:])
            if mask is not None or not everyone:
                keep = alive[:, :, None, None, None] if mask is None else alive[:, :, None, None, None] & mask
                fields = torch.where(keep, fields, torch.full((), float("nan"), device=fields.device))
            window = torch.cat([window[:, 1:], nxt[:, None]], dim=1)
            frames.pop(0)
            out = RolloutStep(
                index=k,
                lead=(k + 1) * model.step,
                init_times=init_times,
                valid_times=valid,
                fields=fields,
                alive=alive.clone(),
                blowups=tuple(pending + reports),
                state=RolloutState(window, alive.clone(), k + 1),
            )
        yield out
        pending = []

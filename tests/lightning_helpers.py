"""A quiet CPU Lightning Trainer for tests: no logger, checkpoints, progress bar, summary or sanity check."""

from __future__ import annotations

from typing import Any

import lightning as L


def quiet_trainer(**kwargs: Any) -> L.Trainer:
    """``L.Trainer`` on the CPU with test-friendly defaults; ``kwargs`` override them."""
    defaults: dict[str, Any] = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return L.Trainer(**(defaults | kwargs))


class Killed(RuntimeError):
    """Stands in for a job killed by the scheduler (raised by :class:`KillAfterStep`)."""


class KillAfterStep(L.Callback):
    """Stops the run abruptly (an exception, so nothing more is saved) once ``step`` optimizer steps are done,
    as a killed job would: the newest checkpoint on disk is whatever was written before."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.step:
            raise Killed(f"killed after step {trainer.global_step}")

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

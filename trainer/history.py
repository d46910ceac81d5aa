"""What a run records for its report, saved in every checkpoint so a resumed run reports
the whole run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)  # one record per epoch
    snapshot_probs: dict[int, torch.Tensor] = field(default_factory=dict)  # cycle -> val softmax
    snapshot_seconds: float = 0.0  # copying, exporting, verifying and writing snapshots
    train_seconds: float = 0.0  # wall time of the epochs so far, across resumptions

    def record_epoch(
        self,
        epoch: int,
        train_loss: float,
        val_error: float,
        val_nll: float,
        lr: float,
        seconds: float,
    ) -> None:
        """Epoch `epoch` (counted from 1) has ended, its last step at rate `lr`."""
        self.epochs.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_error": val_error,
                "val_nll": val_nll,
                "lr": lr,
                "seconds": seconds,
            }
        )

    def state(self) -> dict[str, Any]:
        """Plain data and tensors, as `torch.load(weights_only=True)` reads them back."""
        return {
            "epochs": [dict(record) for record in self.epochs],
            "snapshot_probs": dict(self.snapshot_probs),
            "snapshot_seconds": self.snapshot_seconds,
            "train_seconds": self.train_seconds,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> History:
        return cls(
            epochs=[dict(record) for record in state["epochs"]],
            snapshot_probs={int(k): v for k, v in state["snapshot_probs"].items()},
            snapshot_seconds=float(state["snapshot_seconds"]),
            train_seconds=float(state["train_seconds"]),
        )

"""The run's history survives a checkpoint unchanged."""

from __future__ import annotations

import io

import torch

from trainer.history import History


def test_history_round_trips_through_a_weights_only_checkpoint() -> None:
    history = History(snapshot_seconds=1.5, train_seconds=20.25)
    history.record_epoch(1, 0.9, 0.25, 0.7, 0.05, 3.0)
    history.record_epoch(2, 0.5, 0.125, 0.4, 0.0125, 2.5)
    history.snapshot_probs[1] = torch.softmax(torch.randn(4, 3), dim=-1)

    buffer = io.BytesIO()
    torch.save({"history": history.state()}, buffer)
    buffer.seek(0)
    restored = History.from_state(torch.load(buffer, weights_only=True)["history"])

    assert restored.epochs == history.epochs
    assert restored.epochs[1] == {
        "epoch": 2,
        "train_loss": 0.5,
        "val_error": 0.125,
        "val_nll": 0.4,
        "lr": 0.0125,
        "seconds": 2.5,
    }
    assert list(restored.snapshot_probs) == [1]
    assert torch.equal(restored.snapshot_probs[1], history.snapshot_probs[1])
    assert (restored.snapshot_seconds, restored.train_seconds) == (1.5, 20.25)


def test_the_saved_state_is_a_copy() -> None:
    history = History()
    history.record_epoch(1, 0.9, 0.25, 0.7, 0.05, 3.0)
    state = history.state()
    history.record_epoch(2, 0.5, 0.125, 0.4, 0.0125, 2.5)
    history.epochs[0]["lr"] = 1.0
    assert state["epochs"] == [
        {
            "epoch": 1,
            "train_loss": 0.9,
            "val_error": 0.25,
            "val_nll": 0.7,
            "lr": 0.05,
            "seconds": 3.0,
        }
    ]

"""The schedule classes on their own: the Lipschitz rate and its measurement, and the
reactive schedules' plain state, which resuming restores."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
import torch
from torch import nn

from trainer.nets import Normalized
from trainer.rates import (
    CosineRestarts,
    Lipschitz,
    LRSchedule,
    Plateau,
    Warmup,
    lipschitz_lr,
    measure_lipschitz,
)


class Linear(nn.Module):
    """A network whose penultimate activations are its (flattened) input."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))  # type: ignore[no-any-return]


def linear_model(channels: int = 1, size: int = 2, classes: int = 10) -> Normalized:
    return Normalized(
        Linear(channels * size * size, classes), torch.zeros(channels), torch.ones(channels)
    )


def through_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """What `torch.load(weights_only=True)` gives back for a saved schedule state."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded: dict[str, Any] = torch.load(buffer, weights_only=True)
    return loaded


def test_lipschitz_rate_matches_yedida_saha() -> None:
    # K = (k-1)·K_z/(k·m); lr = 1/K
    assert lipschitz_lr(64.0, 10, 128, 5.0, 0.0) == pytest.approx(1 / ((9 * 64.0) / (10 * 128)))
    # with weight decay the authors add 1e-4·max‖W‖
    expected = 1 / ((9 * 64.0) / (10 * 128) + 1e-4 * 5.0)
    assert lipschitz_lr(64.0, 10, 128, 5.0, 5e-4) == pytest.approx(expected)


def test_measure_lipschitz_takes_the_largest_batch_norm_and_weight_norm() -> None:
    model = linear_model()
    x = torch.zeros(5, 1, 2, 2)
    x[1] = 3.0  # batch 0 (rows 0-1): norm 6; batch 1 (rows 2-3): norm 2; batch 2 (row 4): 4
    x[2, 0, 0, 0] = 2.0
    x[4] = 2.0
    with torch.no_grad():
        model.fc.weight.fill_(0.5)  # 10×4 entries of 0.5: Frobenius norm √10
        model.fc.bias.zero_()
    model.train()
    kz, max_w = measure_lipschitz(model, x, batch_size=2)
    assert kz == pytest.approx(6.0)
    assert max_w == pytest.approx(math.sqrt(10))
    assert model.training  # left as it was found
    assert not model.fc._forward_hooks  # the hook is removed


def test_lipschitz_recomputes_the_rate_every_epoch() -> None:
    model = linear_model()
    x = torch.ones(8, 1, 2, 2)
    schedule = Lipschitz(classes=10, batch_size=4, weight_decay=0.0, iterations_per_epoch=2)
    for epoch, scale in enumerate((1.0, 2.0, 4.0)):  # the activations grow between epochs
        schedule.begin_epoch(epoch, model, x * scale)
    expected = [1 / (9 * (4.0 * scale) / (10 * 4)) for scale in (1.0, 2.0, 4.0)]
    rates = [schedule.lr_at(step) for step in range(6)]
    assert rates == pytest.approx([expected[0]] * 2 + [expected[1]] * 2 + [expected[2]] * 2)
    assert schedule.diverged(3, math.nan).startswith("the Lipschitz rate diverged in epoch 3")


def test_lipschitz_resumes_with_the_rates_of_the_epochs_done() -> None:
    model = linear_model()
    x = torch.ones(8, 1, 2, 2)
    full = Lipschitz(classes=10, batch_size=4, weight_decay=1e-4, iterations_per_epoch=2)
    for epoch in range(3):
        full.begin_epoch(epoch, model, x * (epoch + 1))
    saved = Lipschitz(classes=10, batch_size=4, weight_decay=1e-4, iterations_per_epoch=2)
    for epoch in range(2):
        saved.begin_epoch(epoch, model, x * (epoch + 1))
    resumed = Lipschitz(classes=10, batch_size=4, weight_decay=1e-4, iterations_per_epoch=2)
    resumed.load_state(through_checkpoint(saved.state()))
    resumed.begin_epoch(2, model, x * 3)
    assert [resumed.lr_at(s) for s in range(6)] == [full.lr_at(s) for s in range(6)]
    with pytest.raises(RuntimeError, match="without the rates before it"):
        Lipschitz(10, 4, 0.0, 2).begin_epoch(1, model, x)


def drive(schedule: LRSchedule, losses: list[float], ipe: int, start_epoch: int = 0) -> None:
    for epoch in range(start_epoch, len(losses)):
        schedule.end_epoch((epoch + 1) * ipe, losses[epoch])


@pytest.mark.parametrize("warmup", [0, 6])
def test_plateau_resumed_from_its_state_continues_the_curve(warmup: int) -> None:
    """Stopped after epoch 6 with a bad epoch pending, rebuilt and restored from its plain
    state, the schedule cuts where the uninterrupted one does."""
    losses = [1.0, 0.8, 0.8, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]
    ipe = 3

    def fresh() -> LRSchedule:
        rule = Plateau(lr=0.1, patience=1, factor=0.1)
        return Warmup(0.1, warmup, rule) if warmup else rule

    full = fresh()
    drive(full, losses, ipe)
    stopped = fresh()
    drive(stopped, losses[:6], ipe)
    state = through_checkpoint(stopped.state())
    assert state == {"best": 0.7, "bad_epochs": 1, "reductions": [12 - warmup]}
    resumed = fresh()
    resumed.load_state(state)
    drive(resumed, losses, ipe, start_epoch=6)
    steps = range(len(losses) * ipe)
    assert [resumed.lr_at(s) for s in steps] == [full.lr_at(s) for s in steps]
    assert [full.lr_at(s) for s in (11, 12, 21, 27)] == pytest.approx([0.1, 0.01, 0.001, 1e-4])


def test_plateau_needs_the_validation_loss() -> None:
    with pytest.raises(RuntimeError, match="needs the validation loss"):
        Plateau(0.1, 1, 0.1).end_epoch(3, None)


def test_warmup_holds_back_the_rule_until_it_is_over() -> None:
    rule = Plateau(lr=0.1, patience=0, factor=0.5)
    schedule = Warmup(0.1, 4, rule)
    schedule.end_epoch(2, 1.0)  # inside the warmup: not seen by the rule
    assert rule.best == math.inf
    schedule.end_epoch(4, 1.0)  # the warmup's last epoch: the rule's step 0
    schedule.end_epoch(6, 1.0)  # no improvement, patience 0: cut from step 6 on
    assert rule.reductions == [2]
    assert schedule.lr_at(5) == pytest.approx(0.1) and schedule.lr_at(6) == pytest.approx(0.05)
    assert schedule.state() == rule.state()
    assert schedule.lr_at(0) == pytest.approx(0.1 / 4)


def test_closed_form_schedules_carry_no_state() -> None:
    cosine = CosineRestarts(0.1, 10, 2, 0.001)
    assert cosine.state() == {}
    assert cosine.lr_at(0) == 0.1
    assert cosine.lr_at(10) == 0.1  # restart after T_0
    assert cosine.lr_at(30) == 0.1  # and after T_0 + 2·T_0
    assert cosine.diverged(2, math.inf) == "training diverged in epoch 2 (loss inf): lower --lr"

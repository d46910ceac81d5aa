"""Each schedule's learning rate against its paper's formula, and the snapshot plan."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from trainer.config import TrainConfig, build_config
from trainer.errors import UserError
from trainer.schedules import (
    Lipschitz,
    LRSchedule,
    Plan,
    build_schedule,
    current_lr,
    lipschitz_lr,
    make_plan,
)


def _optimizer(lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)


def lr_curve(
    cfg: TrainConfig,
    plan: Plan,
    val_losses: list[float] | None = None,
    schedule: LRSchedule | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    start_epoch: int = 0,
) -> list[float]:
    """The rate of every optimizer step, driven exactly as the training loop drives it."""
    optimizer = optimizer or _optimizer(cfg.lr)
    schedule = schedule or build_schedule(cfg, plan, optimizer, 10, lambda: (1.0, 1.0))
    rates = []
    for epoch in range(start_epoch, plan.epochs):
        schedule.on_epoch_start(epoch)
        for _ in range(plan.iterations_per_epoch):
            rates.append(current_lr(optimizer))
            optimizer.step()
            schedule.on_iteration_end()
        schedule.on_epoch_end(val_losses[epoch] if val_losses else 1.0)
    return rates


def config(**values: Any) -> TrainConfig:
    return build_config({}, values)


def test_sgdr_follows_loshchilov_hutter_with_t_mult_2() -> None:
    ipe, eta_max, eta_min = 10, 0.2, 0.001
    cfg = config(schedule="sgdr", epochs=70, t0=10, t_mult=2, lr=eta_max, lr_min=eta_min)
    plan = make_plan(cfg, ipe)
    assert plan.cycles == 3
    assert plan.snapshot_steps == (100, 300, 700)  # periods of 10, 20, 40 epochs
    rates = lr_curve(cfg, plan)
    assert len(rates) == 700

    def paper(step: int) -> float:
        epoch = step / ipe  # T_cur in fractional epochs
        start, period = 0.0, 10.0
        while epoch >= start + period:
            start, period = start + period, period * 2
        t_cur = epoch - start
        return eta_min + 0.5 * (eta_max - eta_min) * (1 + math.cos(math.pi * t_cur / period))

    for step in [0, 1, 5, 50, 99, 100, 101, 150, 299, 300, 450, 699]:
        assert rates[step] == pytest.approx(paper(step), rel=1e-9, abs=1e-12), step
    # Restarts go back to η_max; the last iteration of each period is the lowest of it.
    assert rates[100] == pytest.approx(eta_max) and rates[300] == pytest.approx(eta_max)
    for end in plan.snapshot_steps:
        assert rates[end - 1] == min(rates[end - 10 : end])


def test_sgdr_derives_t0_from_the_budget() -> None:
    plan = make_plan(config(schedule="sgdr", epochs=150, cycles=4, t_mult=2), 3)
    assert plan.t0_epochs == 10
    assert plan.snapshot_steps == (30, 90, 210, 450)


def test_snapshot_schedule_follows_huang_et_al() -> None:
    alpha0, cycles, ipe, epochs = 0.2, 4, 7, 12
    cfg = config(schedule="snapshot", epochs=epochs, cycles=cycles, lr=alpha0)
    plan = make_plan(cfg, ipe)
    total = epochs * ipe
    length = math.ceil(total / cycles)
    rates = lr_curve(cfg, plan)
    for t in range(1, total + 1):  # the paper counts iterations from 1
        expected = alpha0 / 2 * (math.cos(math.pi * ((t - 1) % length) / length) + 1)
        assert rates[t - 1] == pytest.approx(expected, rel=1e-9, abs=1e-12), t
    # One snapshot per cycle, at the cycle's last iteration.
    assert plan.snapshot_steps == tuple(length * i for i in range(1, cycles + 1))


def test_step_schedule_divides_by_ten_at_half_and_three_quarters() -> None:
    cfg = config(schedule="step", epochs=8, cycles=4, lr=0.1)
    plan = make_plan(cfg, 5)
    rates = lr_curve(cfg, plan)
    assert rates[0] == rates[19] == pytest.approx(0.1)
    assert rates[20] == rates[29] == pytest.approx(0.01)
    assert rates[30] == rates[39] == pytest.approx(0.001)
    # NoCycle: M snapshots at evenly spaced epochs of the same run.
    assert plan.snapshot_steps == (10, 20, 30, 40)


def test_plateau_reduces_after_patience_epochs_without_improvement() -> None:
    cfg = config(schedule="plateau", epochs=10, cycles=2, lr=0.1, plateau_patience=2)
    plan = make_plan(cfg, 3)
    losses = [1.0, 0.9, 0.9, 0.9, 0.9, 0.5, 0.5, 0.5, 0.5, 0.5]
    per_epoch = lr_curve(cfg, plan, val_losses=losses)[:: plan.iterations_per_epoch]
    # Best at epoch 1; epochs 2-4 do not improve: after the third (patience 2) the rate drops.
    assert per_epoch == pytest.approx([0.1] * 5 + [0.01] * 4 + [0.001])
    assert plan.snapshot_steps == (15, 30)


def test_lipschitz_rate_matches_yedida_saha() -> None:
    # K = (k-1)·K_z/(k·m); lr = 1/K
    assert lipschitz_lr(64.0, 10, 128, 5.0, 0.0) == pytest.approx(1 / ((9 * 64.0) / (10 * 128)))
    # with weight decay the authors add 1e-4·max‖W‖
    expected = 1 / ((9 * 64.0) / (10 * 128) + 1e-4 * 5.0)
    assert lipschitz_lr(64.0, 10, 128, 5.0, 5e-4) == pytest.approx(expected)


def test_lipschitz_recomputes_the_rate_every_epoch() -> None:
    cfg = config(schedule="lipschitz", epochs=3, cycles=1, batch_size=32, weight_decay=0.0)
    plan = make_plan(cfg, 2)
    measurements = iter([(10.0, 1.0), (20.0, 1.0), (40.0, 1.0)])
    optimizer = _optimizer(cfg.lr)
    schedule = build_schedule(cfg, plan, optimizer, 10, lambda: next(measurements))
    assert isinstance(schedule, Lipschitz)
    rates = lr_curve(cfg, plan, schedule=schedule, optimizer=optimizer)
    expected = [1 / (9 * kz / (10 * 32)) for kz in (10.0, 20.0, 40.0)]
    assert rates == pytest.approx([expected[0]] * 2 + [expected[1]] * 2 + [expected[2]] * 2)


def test_linear_warmup_precedes_the_cycles() -> None:
    cfg = config(schedule="snapshot", epochs=6, cycles=2, lr=0.1, warmup_epochs=2)
    plan = make_plan(cfg, 5)
    rates = lr_curve(cfg, plan)
    warm = plan.warmup_iterations
    assert warm == 10
    assert rates[:warm] == pytest.approx(
        [0.1 * (1 / warm + (1 - 1 / warm) * i / warm) for i in range(warm)]
    )
    # Then Huang's cycles over the remaining 20 iterations, two cycles of 10.
    cycle = [0.05 * (math.cos(math.pi * i / 10) + 1) for i in range(10)]
    assert rates[warm:] == pytest.approx(cycle * 2)
    assert plan.snapshot_steps == (20, 30)


def test_resuming_from_state_dict_reproduces_the_curve() -> None:
    """Rebuilt from scratch and restored from state_dict mid-period (T_mult = 2), the
    scheduler continues exactly where the uninterrupted one would have."""
    cfg = config(schedule="sgdr", epochs=70, t0=10, t_mult=2, lr=0.1)
    plan = make_plan(cfg, 4)
    full = lr_curve(cfg, plan)

    optimizer = _optimizer(cfg.lr)
    schedule = build_schedule(cfg, plan, optimizer, 10, lambda: (1.0, 1.0))
    for _ in range(23 * plan.iterations_per_epoch):  # 23 epochs: inside the second period
        optimizer.step()
        schedule.on_iteration_end()
    saved_schedule, saved_optimizer = schedule.state_dict(), optimizer.state_dict()

    fresh_optimizer = _optimizer(cfg.lr)
    fresh = build_schedule(cfg, plan, fresh_optimizer, 10, lambda: (1.0, 1.0))
    fresh_optimizer.load_state_dict(saved_optimizer)
    fresh.load_state_dict(saved_schedule)
    rest = lr_curve(cfg, plan, schedule=fresh, optimizer=fresh_optimizer, start_epoch=23)
    assert full[23 * plan.iterations_per_epoch :] == rest


@pytest.mark.parametrize(
    ("values", "ipe", "message"),
    [
        (
            {"schedule": "snapshot", "epochs": 1, "cycles": 20},
            10,
            "larger than the number of training iterations",
        ),
        (
            {"schedule": "snapshot", "epochs": 10, "cycles": 3},
            7,
            "do not split into 3 equal cycles",
        ),
        ({"schedule": "sgdr", "epochs": 100, "cycles": 3, "t_mult": 2}, 5, "take 7·T0 epochs"),
        (
            {"schedule": "sgdr", "epochs": 50, "t0": 10, "t_mult": 2},
            5,
            "ends inside an SGDR restart period",
        ),
        ({"schedule": "step", "epochs": 3, "cycles": 5}, 5, "at most one snapshot per epoch"),
        ({"schedule": "snapshot", "epochs": 4, "warmup_epochs": 4}, 5, "leaves no epochs"),
        ({"batch_size": 512}, 0, "larger than the training split"),
    ],
)
def test_impossible_plans_are_refused_with_the_fix(
    values: dict[str, Any], ipe: int, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        make_plan(config(**values), ipe)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"t_mult": 0.5}, "T_mult must be >= 1"),
        ({"t_mult": 1.5}, "T_mult must be a whole number"),
        ({"lr": 0.0}, "--lr: the learning rate must be positive"),
        ({"lr": -1.0}, "--lr: the learning rate must be positive"),
        ({"cycles": 0}, "--cycles"),
        ({"dataset": "npz"}, "needs --data PATH"),
    ],
)
def test_bad_settings_name_the_flag(values: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        config(**values)

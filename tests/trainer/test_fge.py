"""Fast Geometric Ensembling (Garipov et al. 2018) and the cosine single model: the rate at
chosen iterations against the formula, the snapshot timing, and the plans refused."""

from __future__ import annotations

import math

import pytest

from tests.trainer.test_schedules import config
from trainer.errors import UserError
from trainer.rates import FastGeometric
from trainer.schedules import build_schedule, make_plan

A0, A1, A2 = 0.1, 0.05, 1e-4


def test_fge_rate_at_chosen_iterations() -> None:
    fge = FastGeometric(lr0=A0, first=100, cycle=20, lr_high=A1, lr_low=A2)
    # The first phase: a cosine from α0 down to α1.
    assert fge.lr_at(0) == pytest.approx(A0)
    assert fge.lr_at(50) == pytest.approx(A1 + (A0 - A1) / 2)
    assert fge.lr_at(99) == pytest.approx(A1 + (A0 - A1) * (1 + math.cos(math.pi * 0.99)) / 2)
    # Each cycle: α1 at its start, linearly down to α2 at its middle, and back.
    for start in (100, 120, 140):
        assert fge.lr_at(start) == pytest.approx(A1)
        assert fge.lr_at(start + 5) == pytest.approx((A1 + A2) / 2)
        assert fge.lr_at(start + 10) == pytest.approx(A2)
        assert fge.lr_at(start + 15) == pytest.approx((A1 + A2) / 2)
        assert fge.lr_at(start + 19) == pytest.approx(0.1 * A2 + 0.9 * A1)


def test_fge_plan_takes_a_snapshot_at_each_mid_cycle() -> None:
    cfg = config(schedule="fge", epochs=10, fge_fraction=0.6, cycle_epochs=2, lr=A0)
    ipe = 10
    plan = make_plan(cfg, ipe)
    assert plan.first_iterations == 60 and plan.cycle_iterations == 20
    assert plan.snapshot_steps == (70, 90)
    schedule = build_schedule(cfg, plan, classes=10)
    for step in plan.snapshot_steps:  # the rate reaches α2 as the snapshot is taken
        assert schedule.lr_at(step) == pytest.approx(cfg.fge_lr_low)
        assert schedule.lr_at(step - 1) < schedule.lr_at(step - 5)
    assert schedule.lr_at(0) == pytest.approx(A0)


def test_fge_with_warmup_shifts_the_snapshots() -> None:
    cfg = config(schedule="fge", epochs=11, warmup_epochs=1, fge_fraction=0.6, cycle_epochs=2)
    plan = make_plan(cfg, 10)
    assert plan.snapshot_steps == (80, 100)
    assert build_schedule(cfg, plan, classes=10).lr_at(80) == pytest.approx(cfg.fge_lr_low)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": 10, "fge_fraction": 0.5, "cycle_epochs": 2}, "do not make whole cycles"),
        ({"epochs": 10, "fge_fraction": 0.6, "cycle_epochs": 2, "cycles": 3}, "--cycles 3"),
    ],
)
def test_fge_plans_that_do_not_fit_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(UserError, match=message):
        make_plan(config(schedule="fge", **values), 10)


@pytest.mark.parametrize(("epochs", "warmup"), [(4, 0), (5, 0), (10, 0), (12, 1)])
def test_the_epochs_suggested_for_a_plan_that_does_not_fit_do_fit(epochs: int, warmup: int) -> None:
    values = {"schedule": "fge", "fge_fraction": 0.7, "cycle_epochs": 2, "warmup_epochs": warmup}
    with pytest.raises(UserError, match="do not make whole cycles") as refused:
        make_plan(config(epochs=epochs, **values), 10)
    suggested = [int(e) for e in str(refused.value).split("use --epochs ")[1].split(" or ")]
    assert len(suggested) == 3 and min(suggested) > epochs
    for fitting in suggested:
        assert make_plan(config(epochs=fitting, **values), 10).snapshot_steps


def test_cycle_epochs_must_be_even() -> None:
    from pydantic import ValidationError

    with pytest.raises((UserError, ValidationError)):
        config(schedule="fge", epochs=10, cycle_epochs=3)


def test_the_cosine_single_model_decays_once_over_the_budget() -> None:
    cfg = config(schedule="cosine", epochs=10, cycles=5, lr=A0)
    plan = make_plan(cfg, 10)
    schedule = build_schedule(cfg, plan, classes=10)
    assert schedule.lr_at(0) == pytest.approx(A0)
    assert schedule.lr_at(50) == pytest.approx(A0 / 2)
    assert schedule.lr_at(99) == pytest.approx(A0 * (1 + math.cos(math.pi * 0.99)) / 2)
    assert plan.snapshot_steps == (20, 40, 60, 80, 100)  # evenly spaced: NoCycle

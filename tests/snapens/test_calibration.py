"""Temperature scaling and the served-size rule."""

from __future__ import annotations

import numpy as np

from snapens.calibration import (
    choose_served_size,
    ensemble_nll,
    fit_temperature,
    last_m_temperatures,
    member_probabilities,
)


def _overconfident(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three members' logits that are right 70% of the time but say so with huge margins."""
    rng = np.random.default_rng(seed)
    n, k = 2000, 10
    targets = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (3, n, k))
    right = rng.random((3, n)) < 0.7
    guess = np.where(right, targets, rng.integers(0, k, (3, n)))
    np.put_along_axis(logits, guess[..., None], 12.0, axis=-1)
    return logits, targets


def test_the_fitted_temperature_lowers_the_nll_and_is_a_minimum() -> None:
    logits, targets = _overconfident()
    t = fit_temperature(logits, targets)
    assert t > 1.5  # overconfident members are cooled
    fitted = ensemble_nll(logits, targets, t)
    assert fitted < ensemble_nll(logits, targets, 1.0) - 0.05
    for nearby in (t * 0.9, t * 1.1):
        assert fitted <= ensemble_nll(logits, targets, nearby)


def test_a_calibrated_ensemble_keeps_a_temperature_of_one() -> None:
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 5, 5000)
    # Members whose softmax is the true conditional distribution: T = 1 is optimal.
    logits = rng.normal(0, 1, (2, 5000, 5))
    probs = member_probabilities(logits).mean(axis=0)
    targets = np.array([rng.choice(5, p=p / p.sum()) for p in probs])
    assert abs(fit_temperature(logits, targets) - 1.0) < 0.1


def test_the_served_size_is_the_best_m_of_two_or_more() -> None:
    chosen = choose_served_size([0.30, 0.28, 0.25, 0.27])
    assert chosen.m == 3 and chosen.beats_last_member
    assert choose_served_size([0.30, 0.29, 0.29]).m == 2  # a tie goes to the smaller m
    # When every earlier member only hurts, the rule still serves two, and says so.
    worse = choose_served_size([0.20, 0.25, 0.31])
    assert worse.m == 2 and not worse.beats_last_member
    assert choose_served_size([0.4]).m == 1


def test_each_last_m_ensemble_gets_its_own_temperature() -> None:
    logits, targets = _overconfident()
    temperatures, nll = last_m_temperatures(logits, targets)
    assert len(temperatures) == len(nll) == 3
    for m in (1, 2, 3):
        assert nll[m - 1] == ensemble_nll(logits[-m:], targets, temperatures[m - 1])
        assert nll[m - 1] <= ensemble_nll(logits[-m:], targets, 1.0)
    plain_t, plain_nll = last_m_temperatures(logits, targets, fit=False)
    assert plain_t == [1.0, 1.0, 1.0] and all(a <= b for a, b in zip(nll, plain_nll, strict=True))

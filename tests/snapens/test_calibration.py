"""Temperature scaling and the served-size rule."""

from __future__ import annotations

import numpy as np

from snapens.calibration import (
    choose_served_size,
    ensemble_nll,
    fit_temperature,
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
    rng = np.random.default_rng(2)
    targets = rng.integers(0, 4, 500)
    good = np.full((500, 4), 0.1)
    good[np.arange(500), targets] = 0.7
    bad = np.full((500, 4), 0.25)
    # Oldest first: a poor early member, then three good ones.
    members = np.stack([bad, good, good * 0.9 + bad * 0.1, good])
    chosen = choose_served_size(members, targets)
    assert len(chosen.nll_by_m) == 4 and chosen.m in (2, 3)
    assert chosen.nll_by_m[chosen.m - 1] == min(chosen.nll_by_m[1:])
    assert chosen.beats_last_member is (chosen.nll_by_m[chosen.m - 1] <= chosen.nll_by_m[0])
    # When every earlier member only hurts, the rule still serves two, and says so.
    worse = choose_served_size(np.stack([bad, bad, good]), targets)
    assert worse.m == 2 and not worse.beats_last_member
    assert choose_served_size(good[None], targets).m == 1

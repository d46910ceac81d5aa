"""The experiment's metrics against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from snapens.evaluation import (
    brier_score,
    evaluate_members,
    expected_calibration_error,
    reliability,
)


def test_ece_is_the_count_weighted_gap_between_confidence_and_accuracy() -> None:
    # Two inputs at confidence 0.9 (one right, one wrong) and two at 0.6 (both right).
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    y = np.array([0, 1, 0, 0])
    # bin of 0.9: accuracy 0.5, gap 0.4; bin of 0.6: accuracy 1.0, gap 0.4; each half the data.
    assert expected_calibration_error(p, y) == pytest.approx(0.4)
    bins = reliability(p, y)["bins"]
    assert len(bins) == 15
    assert sum(b["count"] for b in bins) == 4
    filled = [b for b in bins if b["count"]]
    assert [(b["count"], b["accuracy"]) for b in filled] == [(2, 1.0), (2, 0.5)]


def test_a_perfectly_calibrated_predictor_has_zero_ece() -> None:
    p = np.array([[0.5, 0.5]] * 4)
    y = np.array([0, 0, 1, 1])  # argmax is class 0: right half the time at confidence 0.5
    assert expected_calibration_error(p, y) == pytest.approx(0.0)


def test_brier_score_sums_squared_errors_over_classes() -> None:
    p = np.array([[1.0, 0.0, 0.0], [0.5, 0.25, 0.25]])
    y = np.array([0, 1])
    # first: 0; second: 0.25 + 0.5625 + 0.0625 = 0.875; mean 0.4375
    assert brier_score(p, y) == pytest.approx(0.4375)


def test_members_are_evaluated_for_every_ensemble_size_from_the_last() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    good = np.eye(4)[y] * 0.7 + 0.075  # right with confidence 0.775
    noise = rng.dirichlet(np.ones(4), size=(2, 200))
    members = np.concatenate([noise, good[None]])  # [3, 200, 4]: the last one is the good one
    rows = evaluate_members(members, y)
    assert [r["m"] for r in rows] == [1, 2, 3]
    assert rows[0]["error"] == 0.0  # m = 1 is the last member alone
    assert rows[0]["auroc_mutual_information"] is None  # one member: no disagreement
    assert rows[2]["error"] > 0.0
    assert rows[2]["mean_mutual_information"] > rows[1]["mean_mutual_information"] > 0.0
    # Mistakes come where the noisy members pull away from the good one: MI ranks them high.
    assert rows[2]["auroc_mutual_information"] > 0.5


def test_auroc_matches_scikit_learns_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    from snapens.evaluation import auroc

    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, 400).astype(float)  # many ties
    positives = rng.random(400) < 0.3 + 0.1 * scores
    got = auroc(scores, positives)
    assert got is not None and abs(got - roc_auc_score(positives, scores)) < 1e-12
    assert auroc(scores, np.zeros(400, bool)) is None

"""The experiment's cross-fitted, temperature-scaled figures."""

from __future__ import annotations

import numpy as np

from experiments.crossfit import cross_fitted, halves, logits_of
from snapens.ensemble import combine, softmax
from snapens.evaluation import auroc


def _members(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four overconfident members that are right 75% of the time, oldest worst."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 10, 2000)
    logits = rng.normal(0, 1, (4, 2000, 10))
    for i in range(4):
        right = rng.random(2000) < 0.6 + 0.05 * i
        guess = np.where(right, targets, rng.integers(0, 10, 2000))
        np.put_along_axis(logits[i], guess[:, None], 10.0, axis=-1)
    return logits, targets


def test_halves_are_a_fixed_partition() -> None:
    a, b = halves(11)
    assert sorted([*a, *b]) == list(range(11)) and len(a) == 5
    assert (halves(11)[0] == a).all()


def test_logits_of_give_back_the_members() -> None:
    logits, _ = _members()
    recovered = logits_of(softmax(logits))
    np.testing.assert_allclose(softmax(recovered), softmax(logits), atol=1e-9)


def test_cross_fitting_chooses_on_one_half_and_reports_on_all() -> None:
    logits, targets = _members()
    served = cross_fitted(logits, targets)
    assert served["probabilities"].shape == (2000, 10)
    assert len(served["folds"]) == 2 and all(f["m"] >= 2 for f in served["folds"])
    assert all(f["temperature"] > 1 for f in served["folds"])  # overconfident members
    raw = softmax(logits).mean(axis=0)
    raw_nll = -np.log(raw[np.arange(2000), targets]).mean()
    assert served["nll"] < raw_nll  # the held-out temperature helps
    single = cross_fitted(logits, targets, single=True)
    assert [f["m"] for f in single["folds"]] == [1, 1]
    assert single["auroc_mutual_information"] is None
    assert served["auroc_mutual_information"] is not None


def test_the_served_mutual_information_is_that_of_the_members_as_trained() -> None:
    """The temperature scales the answer, not the disagreement: the cross-fitted AUROC of
    mutual information equals that of the same last-m members at temperature 1."""
    logits, targets = _members(1)
    served = cross_fitted(logits, targets)
    (m,) = {f["m"] for f in served["folds"]}  # both halves choose alike here
    trained = combine(softmax(logits[-m:]))
    wrong = served["probabilities"].argmax(axis=-1) != targets
    assert served["auroc_mutual_information"] == auroc(trained.mutual_information, wrong)


def test_pooled_calibration_scales_the_mean_and_keeps_its_labels_and_disagreement() -> None:
    """Pool, then calibrate: the answer is softmax(log(mean of the members' softmax) / T),
    so its labels are those of the ensemble at temperature 1; one member is the same
    under either rule; the disagreement still comes from the members as trained."""
    from experiments.crossfit import pooled_logits

    logits, targets = _members(2)
    pooled = cross_fitted(logits, targets, pooled=True)
    calibrated = cross_fitted(logits, targets)
    (m,) = {f["m"] for f in pooled["folds"]}
    raw = softmax(logits[-m:]).mean(axis=0)
    assert (pooled["probabilities"].argmax(axis=-1) == raw.argmax(axis=-1)).all()
    (first, second), folds = halves(2000), pooled["folds"]
    for test, fold in ((second, folds[0]), (first, folds[1])):
        expected = softmax(pooled_logits(logits[-m:])[0, test] / fold["temperature"])
        np.testing.assert_allclose(pooled["probabilities"][test], expected, atol=1e-12)
    assert pooled["folds"] != calibrated["folds"]  # a different temperature is fitted
    wrong = pooled["probabilities"].argmax(axis=-1) != targets
    trained = combine(softmax(logits[-m:]))
    assert pooled["auroc_mutual_information"] == auroc(trained.mutual_information, wrong)
    one_pooled = cross_fitted(logits[-1:], targets, pooled=True)
    one = cross_fitted(logits[-1:], targets)
    np.testing.assert_allclose(one_pooled["probabilities"], one["probabilities"], atol=1e-9)

"""The ensemble arithmetic against docs/design.md's definitions, written out the slow way."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from snapens.ensemble import (
    combine,
    entropy,
    error_rate,
    negative_log_likelihood,
    pairwise_disagreement_matrix,
    softmax,
)
from tests.server.conftest import FIGURES


def reference(members: np.ndarray, n: int, trained: np.ndarray | None = None) -> dict[str, float]:
    """docs/design.md's formulas for input n, one scalar at a time: the answer from the
    (scaled) members p_i, the disagreement from the members as trained q_i."""
    m, _, k = members.shape
    p = [members[i, n] for i in range(m)]
    q = p if trained is None else [trained[i, n] for i in range(m)]
    p_bar = [sum(p[i][c] for i in range(m)) / m for c in range(k)]
    q_bar = [sum(q[i][c] for i in range(m)) / m for c in range(k)]
    label = max(range(k), key=lambda c: p_bar[c])
    votes = [max(range(k), key=lambda c, qi=qi: qi[c]) for qi in q]
    h = lambda r: -sum(x * math.log(x) for x in r if x > 0)  # noqa: E731
    pairs = list(itertools.combinations(range(m), 2))
    picked = [qi[label] for qi in q]
    mean_picked = sum(picked) / m
    return {
        "label": label,
        "confidence": max(p_bar),
        "vote_disagreement": sum(v != label for v in votes) / m,
        "pairwise_disagreement": sum(votes[i] != votes[j] for i, j in pairs) / len(pairs)
        if pairs
        else 0.0,
        "predictive_entropy": h(q_bar),
        "expected_entropy": sum(h(qi) for qi in q) / m,
        "mutual_information": h(q_bar) - sum(h(qi) for qi in q) / m,
        "member_std": math.sqrt(sum((x - mean_picked) ** 2 for x in picked) / m),
    }


@pytest.mark.parametrize("m", [1, 2, 5])
def test_combine_matches_the_definitions(m: int) -> None:
    rng = np.random.default_rng(m)
    members = softmax(rng.normal(0, 2, (m, 40, 4)))
    result = combine(members)
    for n in range(40):
        ref = reference(members, n)
        assert result.label[n] == ref["label"]
        for name in ("confidence", *FIGURES):
            assert getattr(result, name)[n] == pytest.approx(ref[name], abs=1e-12), name
    np.testing.assert_allclose(result.probabilities, members.mean(axis=0))


@pytest.mark.parametrize("m", [1, 3, 5])
def test_scaled_members_answer_and_the_trained_ones_disagree(m: int) -> None:
    rng = np.random.default_rng(10 + m)
    logits = rng.normal(0, 3, (m, 60, 5))
    scaled, trained = softmax(logits / 2.5), softmax(logits)
    result = combine(scaled, trained=trained)
    for n in range(60):
        ref = reference(scaled, n, trained)
        assert result.label[n] == ref["label"]
        for name in ("confidence", *FIGURES):
            assert getattr(result, name)[n] == pytest.approx(ref[name], abs=1e-12), name
    np.testing.assert_allclose(result.probabilities, scaled.mean(axis=0))
    # The figures are those of the members as trained, not of the flattened ones.
    flattened = combine(scaled)
    if m > 1:
        assert not np.allclose(result.mutual_information, flattened.mutual_information)
    with pytest.raises(ValueError, match="trained probabilities must have"):
        combine(scaled, trained=trained[:, :10])


def test_agreeing_members_have_no_disagreement_and_a_precomputed_mean_is_used() -> None:
    one = softmax(np.array([[[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]]]))
    members = np.repeat(one, 4, axis=0)
    result = combine(members, mean=members.mean(axis=0))
    assert result.label.tolist() == [0, 1]
    for name in ("vote_disagreement", "pairwise_disagreement", "mutual_information", "member_std"):
        assert np.allclose(getattr(result, name), 0.0)
    assert np.allclose(result.predictive_entropy, result.expected_entropy)


def test_split_votes_give_the_textbook_figures() -> None:
    # Two confident members that disagree completely: a 50/50 mean.
    members = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    result = combine(members)
    assert result.pairwise_disagreement[0] == 1.0
    assert result.vote_disagreement[0] == 0.5
    assert result.predictive_entropy[0] == pytest.approx(math.log(2))
    assert result.expected_entropy[0] == 0.0
    assert result.mutual_information[0] == pytest.approx(math.log(2))
    assert result.member_std[0] == pytest.approx(0.5)


def test_entropy_treats_zero_probability_as_zero() -> None:
    assert entropy(np.array([1.0, 0.0, 0.0])) == 0.0
    assert entropy(np.full(4, 0.25)) == pytest.approx(math.log(4))


def test_metrics() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    targets = np.array([0, 1, 1])
    assert error_rate(probs, targets) == pytest.approx(1 / 3)
    assert negative_log_likelihood(probs, targets) == pytest.approx(
        -(math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3
    )
    members = np.array([probs, probs[:, ::-1]])
    matrix = pairwise_disagreement_matrix(members)
    assert matrix.tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_shape_is_checked() -> None:
    with pytest.raises(ValueError, match=r"\[m, N, K\]"):
        combine(np.zeros((3, 4)))

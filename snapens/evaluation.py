"""How good an ensemble's answers are on labelled data: error, NLL, calibration (ECE,
reliability bins, Brier) and how well its mutual information flags its own mistakes
(AUROC), for the ensemble of the last m members, m = 1..M. One definition for the
trainer's report and the experiments."""

from __future__ import annotations

from typing import Any

import numpy as np

from snapens.ensemble import combine, error_rate, negative_log_likelihood

ECE_BINS = 15


def reliability(
    probabilities: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS
) -> dict[str, Any]:
    """Per-bin confidence, accuracy and count over equal-width confidence bins."""
    confidence = probabilities.max(axis=-1)
    correct = probabilities.argmax(axis=-1) == targets
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        rows.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": int(mask.sum()),
                "confidence": float(confidence[mask].mean()) if mask.any() else None,
                "accuracy": float(correct[mask].mean()) if mask.any() else None,
            }
        )
    return {"bins": rows}


def expected_calibration_error(
    probabilities: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS
) -> float:
    """Σ_b (n_b/N)·|accuracy_b − confidence_b| over equal-width confidence bins (Guo et al.)."""
    total = len(targets)
    return float(
        sum(
            row["count"] / total * abs(row["accuracy"] - row["confidence"])
            for row in reliability(probabilities, targets, bins)["bins"]
            if row["count"]
        )
    )


def brier_score(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Mean over inputs of Σ_k (p_k − 1[k = y])² = Σ_k p_k² − 2 p_y + 1, without the
    one-hot matrix (K² memory for K classes)."""
    p = np.asarray(probabilities, dtype=np.float64)
    true = np.take_along_axis(p, np.asarray(targets)[:, None], axis=-1)[:, 0]
    return float(((p**2).sum(axis=-1) - 2 * true + 1).mean())


def auroc(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """Area under the ROC curve of `scores` for the boolean `positives` (the Mann-Whitney
    statistic, ties counted half); None without both classes."""
    positive = np.asarray(positives, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    _, first, counts = np.unique(np.asarray(scores)[order], return_index=True, return_counts=True)
    ranks = np.empty(len(positive))
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)  # 1-based, ties averaged
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def evaluate_members(member_probs: np.ndarray, targets: np.ndarray) -> list[dict[str, Any]]:
    """Metrics of the ensemble of the last m members for m = 1..M."""
    rows = []
    for m in range(1, len(member_probs) + 1):
        result = combine(member_probs[-m:])
        p = result.probabilities
        wrong = p.argmax(axis=-1) != targets
        # How well mutual information separates the ensemble's mistakes from its correct
        # answers; undefined for one member (MI is 0) or without both outcomes.
        separation = auroc(result.mutual_information, wrong) if m > 1 else None
        rows.append(
            {
                "m": m,
                "error": error_rate(p, targets),
                "nll": negative_log_likelihood(p, targets),
                "ece": expected_calibration_error(p, targets),
                "brier": brier_score(p, targets),
                "auroc_mutual_information": separation,
                "mean_mutual_information": float(result.mutual_information.mean()),
            }
        )
    return rows

"""Temperature-scaled figures without tuning on the split they are reported on.

The trainer fits its temperature and chooses its served m on its validation split, which
is also the experiment's held-out split; reporting on it after fitting there would flatter
every calibrated method. So the experiment cross-fits: the held-out split is cut in two
fixed halves, the temperature of each last-m ensemble and the served m (the rule the
trainer uses: the m ≥ 2 of lowest NLL) are chosen on one half and applied to the other,
and the two halves' answers are reported together, on every held-out image."""

from __future__ import annotations

from typing import Any

import numpy as np

from snapens.calibration import candidate_temperatures, choose_served_size, member_probabilities
from snapens.ensemble import combine, error_rate, negative_log_likelihood
from snapens.evaluation import auroc, brier_score, expected_calibration_error

# Probabilities from onnxruntime are float32; their logs stand in for logits.
TINY = float(np.finfo(np.float32).tiny)


def logits_of(member_probs: np.ndarray) -> np.ndarray:
    """Logits (up to a constant per input) of members' probabilities at temperature 1."""
    return np.log(np.maximum(member_probs.astype(np.float64), TINY))


def halves(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def pooled_logits(member_logits: np.ndarray) -> np.ndarray:
    """[1, N, K] log of the members' mean softmax at temperature 1: the ensemble as one
    model, for a temperature applied after the averaging."""
    return logits_of(member_probabilities(member_logits).mean(axis=0))[None]


def cross_fitted(
    member_logits: np.ndarray, targets: np.ndarray, single: bool = False, pooled: bool = False
) -> dict[str, Any]:
    """The served answer of these members, temperature-scaled, cross-fitted over two
    halves: its figures on all of `targets`, and what each half chose. `single`: serve
    the last member alone (m = 1) rather than by the rule. `pooled`: the temperature
    divides the log of the members' mean probabilities (pool, then calibrate; Rahaman &
    Thiery 2021) instead of each member's logits (calibrate, then pool: what is served)."""
    n = len(targets)
    k = member_logits.shape[-1]
    probabilities = np.zeros((n, k))
    mutual = np.zeros(n)
    chosen = []
    first, second = halves(n)
    # What the temperature divides, for each last-m ensemble (m = 1..M).
    last_m = [member_logits[-m:] for m in range(1, len(member_logits) + 1)]
    candidates = [pooled_logits(c) for c in last_m] if pooled else last_m
    for fit, test in ((first, second), (second, first)):
        temperatures, nll = candidate_temperatures([c[:, fit] for c in candidates], targets[fit])
        m = 1 if single else choose_served_size(nll).m
        members = member_probabilities(candidates[m - 1][:, test], temperatures[m - 1])
        trained = member_probabilities(member_logits[-m:, test])
        # As served: the disagreement figures from the members as trained (temperature 1).
        result = combine(trained, mean=members.mean(axis=0), trained=trained)
        probabilities[test] = result.probabilities
        mutual[test] = result.mutual_information
        chosen.append({"m": m, "temperature": temperatures[m - 1]})
    wrong = probabilities.argmax(axis=-1) != targets
    return {
        "error": error_rate(probabilities, targets),
        "nll": negative_log_likelihood(probabilities, targets),
        "ece": expected_calibration_error(probabilities, targets),
        "brier": brier_score(probabilities, targets),
        "auroc_mutual_information": None if single else auroc(mutual, wrong),
        "folds": chosen,
        "probabilities": probabilities,
    }

"""After training: the temperature and the served m of the ensemble, from the snapshots'
validation probabilities (the arithmetic is `snapens.calibration`'s).

A member's log-probabilities are its logits up to a constant per input, which the softmax
ignores, so softmax(log p / T) = softmax(z / T): the probabilities the trainer keeps for
its report are all the temperature needs."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from snapens.calibration import choose_served_size, last_m_temperatures, member_probabilities
from snapens.ensemble import error_rate, negative_log_likelihood
from snapens.evaluation import expected_calibration_error

# Probabilities are float32: the log of what underflowed to 0 is taken as the smallest.
LOG_FLOOR = float(np.log(np.finfo(np.float32).tiny))

# How the served m came about, as the manifest's training record says it.
CHOSEN = "chosen: lowest validation NLL of m >= 2"
GIVEN = "given: --default-m"
ONE_MODEL = "one model: the SWA average of the snapshots"
ONE_SNAPSHOT = "one snapshot: the run took one"


@dataclass(frozen=True)
class Calibration:
    temperature: float
    default_m: int
    nll_by_m: list[float]  # of the last-m ensembles, each at its own temperature
    beats_last_member: bool  # the served ensemble's NLL ≤ its last member's alone
    before: dict[str, float]  # the served ensemble at T = 1
    after: dict[str, float]  # the served ensemble at the temperature
    fitted: bool  # False with --no-calibrate
    rule: str  # how default_m came about: CHOSEN, GIVEN, ONE_SNAPSHOT or ONE_MODEL

    def describe(self) -> dict[str, Any]:
        """As the manifest's training record and the report keep it."""
        return {
            "temperature": self.temperature,
            "fitted": self.fitted,
            "default_m": self.default_m,
            "default_m_rule": self.rule,
            "nll_by_m": self.nll_by_m,
            "beats_last_member": self.beats_last_member,
            "before": self.before,
            "after": self.after,
        }


def _figures(probabilities: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    return {
        "error": error_rate(probabilities, targets),
        "nll": negative_log_likelihood(probabilities, targets),
        "ece": expected_calibration_error(probabilities, targets),
    }


def calibrate(
    snapshot_probs: np.ndarray, targets: np.ndarray, fit: bool, default_m: int | None
) -> Calibration:
    """`snapshot_probs` [M, N, K] in training order; fit: fit a temperature (else T = 1);
    default_m: the served m if given (else the m ≥ 2 of lowest calibrated NLL)."""
    logits = np.log(np.maximum(snapshot_probs.astype(np.float64), np.exp(LOG_FLOOR)))
    temperatures, nll = last_m_temperatures(logits, targets, fit)
    m = min(default_m, len(logits)) if default_m is not None else choose_served_size(nll).m
    temperature = temperatures[m - 1]
    return Calibration(
        temperature=temperature,
        default_m=m,
        nll_by_m=nll,
        beats_last_member=nll[m - 1] <= nll[0],
        before=_figures(member_probabilities(logits[-m:]).mean(axis=0), targets),
        after=_figures(member_probabilities(logits[-m:], temperature).mean(axis=0), targets),
        fitted=fit,
        rule=GIVEN if default_m is not None else ONE_SNAPSHOT if len(logits) == 1 else CHOSEN,
    )


def calibrate_one_model(probs: np.ndarray, targets: np.ndarray, fit: bool) -> Calibration:
    """The temperature of a one-model folder (the SWA average, probs [N, K]): its own,
    fitted on its own validation answers; there is no m to choose."""
    return replace(calibrate(probs[None], targets, fit, default_m=1), rule=ONE_MODEL)

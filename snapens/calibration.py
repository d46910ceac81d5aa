"""Calibrating an ensemble on held-out data, and choosing how many snapshots to serve.

- Temperature scaling (Guo et al. 2017; for ensembles, Ashukha et al. 2020): one T > 0,
  fitted on the validation split to minimise the NLL of the ensemble's mean of
  softmax(z_i / T); every execution path divides each member's logits by it.
- The served m: the m ≥ 2 whose last-m ensemble has the lowest validation NLL, each m at
  its own fitted temperature, so averaging in under-trained early snapshots is never the
  default and the temperature served is the one fitted for the members served.

Both work on logits as numpy arrays [m, N, K], so the trainer and the experiments share
one definition."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from snapens.ensemble import FloatArray, IntArray, negative_log_likelihood, softmax

# The search interval for log T, and how finely it is resolved.
LOG_T_RANGE = (math.log(0.05), math.log(20.0))
LOG_T_TOLERANCE = 1e-4


def member_probabilities(member_logits: FloatArray, temperature: float = 1.0) -> FloatArray:
    """[m, N, K] softmax(z / T) of each member."""
    return softmax(np.asarray(member_logits, dtype=np.float64) / temperature)


def ensemble_nll(member_logits: FloatArray, targets: IntArray, temperature: float) -> float:
    """NLL of the mean of the members' softmax(z / T)."""
    return negative_log_likelihood(
        member_probabilities(member_logits, temperature).mean(axis=0), targets
    )


def fit_temperature(member_logits: FloatArray, targets: IntArray) -> float:
    """The T minimising the ensemble's NLL on (member_logits, targets), by golden-section
    search over log T in LOG_T_RANGE (the NLL of one temperature is unimodal in practice;
    the search keeps T = 1 when that is as good)."""
    low, high = LOG_T_RANGE
    ratio = (math.sqrt(5) - 1) / 2

    def loss(log_t: float) -> float:
        return ensemble_nll(member_logits, targets, math.exp(log_t))

    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = loss(c), loss(d)
    while b - a > LOG_T_TOLERANCE:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = loss(d)
    best = (a + b) / 2
    return 1.0 if loss(0.0) <= loss(best) else math.exp(best)


def candidate_temperatures(
    candidates: list[FloatArray], targets: IntArray, fit: bool = True
) -> tuple[list[float], list[float]]:
    """For each candidate ensemble (member logits [m, N, K]): its temperature (fitted, or
    1 when fit=False) and its NLL at that temperature."""
    temperatures, nll = [], []
    for logits in candidates:
        t = fit_temperature(logits, targets) if fit else 1.0
        temperatures.append(t)
        nll.append(ensemble_nll(logits, targets, t))
    return temperatures, nll


def last_m_temperatures(
    member_logits: FloatArray, targets: IntArray, fit: bool = True
) -> tuple[list[float], list[float]]:
    """For m = 1..M: the temperature of the last-m ensemble (fitted, or 1 when fit=False)
    and its NLL at that temperature."""
    last_m = [member_logits[-m:] for m in range(1, len(member_logits) + 1)]
    return candidate_temperatures(last_m, targets, fit)


@dataclass(frozen=True)
class ServedSize:
    """The chosen m and the validation NLL of every last-m ensemble, m = 1..M."""

    m: int
    nll_by_m: list[float]
    beats_last_member: bool  # the chosen ensemble's NLL ≤ that of its last member alone


def choose_served_size(nll_by_m: list[float]) -> ServedSize:
    """The m ≥ 2 of lowest NLL in `nll_by_m` (the last-m ensembles' NLL, m = 1..M; ties go
    to the smaller m); m = 1 when there is one member."""
    nll = list(nll_by_m)
    if len(nll) == 1:
        return ServedSize(1, nll, True)
    best = min(range(2, len(nll) + 1), key=lambda m: (nll[m - 1], m))
    return ServedSize(best, nll, nll[best - 1] <= nll[0])

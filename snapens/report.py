"""The training report beside a model's manifest: its file names, and the parts of
`report.json` that more than one side writes or reads (the trainer and the synthetic
folder write it; the summary and the demo page's route read it).

    report.json          the figures: snapshots, the last-m ensembles, the learning rate
    learning_rate.png    the learning-rate curve with a marker at each snapshot
    ensemble_size.png    validation error of each snapshot and of each last-m ensemble
    disagreement.png     how often each pair of snapshots predicts different classes
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from snapens.ensemble import error_rate, pairwise_disagreement_matrix
from snapens.evaluation import evaluate_members
from snapens.manifest import Manifest

REPORT_JSON = "report.json"
LEARNING_RATE_PLOT = "learning_rate.png"
ENSEMBLE_SIZE_PLOT = "ensemble_size.png"
DISAGREEMENT_PLOT = "disagreement.png"
# Every report file and its media type: nothing else in a model folder is served.
REPORT_FILES = {
    REPORT_JSON: "application/json",
    LEARNING_RATE_PLOT: "image/png",
    ENSEMBLE_SIZE_PLOT: "image/png",
    DISAGREEMENT_PLOT: "image/png",
}


def snapshot_rows(manifest: Manifest) -> list[dict[str, Any]]:
    """The report's `snapshots`: each snapshot's place in training and validation figures."""
    return [
        {
            "cycle": s.cycle,
            "epoch": s.epoch,
            "step": s.step,
            "lr": s.lr,
            "error": 1 - s.val_accuracy,
            "nll": s.val_nll,
        }
        for s in manifest.snapshots
    ]


class _Figures(BaseModel):
    model_config = ConfigDict(extra="allow")


class EnsembleFigures(_Figures):
    m: int
    error: float
    nll: float


class BestSingle(_Figures):
    cycle: int
    error: float


class SwaFigures(_Figures):
    model: str
    members_averaged: int
    error: float
    nll: float


class Headline(_Figures):
    """What a summary says of a report: the served ensemble against its best member, and
    the SWA model written beside it, if any."""

    ensemble: EnsembleFigures
    best_single: BestSingle
    swa: SwaFigures | None = None


def read_headline(model_dir: Path) -> Headline | None:
    """The report's headline figures; None when there is no report (yet) or it has none."""
    try:
        return Headline.model_validate(json.loads((model_dir / REPORT_JSON).read_text()))
    except (OSError, ValueError, ValidationError):
        return None


def ensemble_figures(
    cycles: list[int], member_probs: np.ndarray, targets: np.ndarray
) -> dict[str, Any]:
    """The report's figures of the snapshots as an ensemble, from their validation
    probabilities [M, N, K]: every last-m ensemble, the best single snapshot, the whole
    ensemble against it, and how often each pair disagrees."""
    by_size = evaluate_members(member_probs, targets)
    singles = [error_rate(p, targets) for p in member_probs]
    best = int(np.argmin(singles))
    return {
        "ensemble_of_last": by_size,
        "best_single": {"cycle": cycles[best], "error": singles[best]},
        "ensemble": {
            "m": len(cycles),
            "error": by_size[-1]["error"],
            "nll": by_size[-1]["nll"],
            "at_least_as_good_as_best_single": by_size[-1]["error"] <= singles[best],
        },
        "pairwise_disagreement": {
            "cycles": cycles,
            "matrix": pairwise_disagreement_matrix(member_probs).tolist(),
        },
    }

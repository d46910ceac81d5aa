"""The experiment's summary: the README table, the checks and the plots, from results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest

from experiments.crossfit import cross_fitted
from experiments.report import plot_figures, write_summary
from snapens.ensemble import softmax
from snapens.evaluation import evaluate_members, reliability
from tests.plot_checks import assert_readable_y


def fake_result(key: str, seed: int, logits: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """A run's result as experiments.cifar10 writes it, from member logits."""
    probs = softmax(logits)
    single = evaluate_members(probs[-1:], y)[0]
    served = cross_fitted(logits, y)
    result: dict[str, Any] = {
        "method": key if seed == 0 else f"{key}_s{seed}",
        "base": key,
        "seed": seed,
        "label": key.replace("_", " "),
        "single_label": "final single model",
        "single": {k: single[k] for k in ("error", "nll", "ece", "brier")},
        "by_m": evaluate_members(probs, y),
        "calibrated": {
            "served": {k: v for k, v in served.items() if k != "probabilities"},
            "single": {
                k: v
                for k, v in cross_fitted(logits[-1:], y, single=True).items()
                if k != "probabilities"
            },
        },
        "reliability": {
            "single": reliability(probs[-1], y),
            "ensemble": reliability(served["probabilities"], y),
        },
        "runs": [{"train_seconds": 60.0, "epochs": [{"epoch": 1, "val_error": 0.5}]}],
    }
    return result


def test_summary_averages_seeds_checks_the_claim_and_plots(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 600)
    onehot = np.eye(10)[y]

    def members(m: int, noise: float) -> np.ndarray:
        return 4 * onehot[None] + noise * rng.normal(size=(m, 600, 10))

    # Noisy single models and a less noisy ensemble, three seeds each.
    keys = []
    for seed in (0, 1, 2):
        for key, noise in (("step", 3.0), ("cosine", 3.0), ("fge", 2.0)):
            result = fake_result(key, seed, members(3, noise), y)
            (tmp_path / f"{result['method']}.json").write_text(json.dumps(result))
            keys.append(result["method"])
    (tmp_path / "served_check.json").write_text("{}")  # not a method: ignored

    summary = write_summary("test", tmp_path, [*keys, "sgdr"])  # sgdr: no result yet

    rows = {row["key"]: row for row in summary["rows"]}
    assert list(rows) == ["step", "nocycle_step", "cosine", "nocycle_cosine", "fge"]
    assert all(row["error"]["seeds"] == 3 for row in rows.values())
    assert rows["fge"]["error"]["std"] > 0
    assert summary["best"] == "fge"
    checks = summary["checks"]
    for single in ("cosine", "step"):
        for metric in ("error", "nll", "ece"):
            ok = checks[f"best ensemble (fge) {metric} < single model ({single})"]
            assert ok is (rows["fge"][metric]["mean"] < rows[single][metric]["mean"])
    assert checks["best ensemble (fge) error < single model (cosine)"]  # the clearer one wins
    table = (tmp_path / "summary.md").read_text()
    assert table.count("\n| ") == 5  # one row per entry below the header
    assert " ± " in table
    for plot in ("error_vs_ensemble_size.png", "reliability.png", "val_error_by_epoch.png"):
        assert (tmp_path / plot).read_bytes().startswith(b"\x89PNG")


def test_equal_errors_for_every_method_read_as_their_value() -> None:
    """Every method and ensemble size at 0.56% error (equal but for rounding): the plot's
    y axis reads plainly around that value, with no matplotlib offset."""
    error = 1 / 179
    errors = [error, error + 1e-16, error * (1 + 1e-15)]

    def result(label: str) -> dict[str, Any]:
        return {
            "label": label,
            "single": {"error": error},
            "by_m": [{"m": m, "error": e} for m, e in enumerate(errors, start=1)],
            "runs": [{"epochs": [{"epoch": 1, "val_error": error}]}],
        }

    figures = plot_figures({"step": result("step"), "sgdr": result("sgdr")})
    try:
        ax = figures["error_vs_ensemble_size.png"].axes[0]
        assert_readable_y(ax, [100 * e for e in errors])
        low, high = ax.get_ylim()
        assert low >= 0 and high - low == pytest.approx(1.0)
    finally:
        for fig in figures.values():
            plt.close(fig)

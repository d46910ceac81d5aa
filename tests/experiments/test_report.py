"""The experiment's summary: the README table, the checks and the plots, from results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest

from experiments.report import plot_figures, write_summary
from snapens.evaluation import evaluate_members, reliability
from tests.plot_checks import assert_readable_y


def fake_result(key: str, members: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """A method's result as experiments.cifar10 writes it, from member probabilities."""
    final = members[-1]
    single = evaluate_members(final[None], y)[0]
    return {
        "method": key,
        "label": key.replace("_", " "),
        "single_label": "final single model",
        "single": {k: single[k] for k in ("error", "nll", "ece", "brier")},
        "by_m": evaluate_members(members, y),
        "reliability": {
            "single": reliability(final, y),
            "ensemble": reliability(members.mean(axis=0), y),
        },
        "runs": [
            {"train_seconds": 60.0, "epochs": [{"epoch": 1, "val_error": 0.5}]},
        ],
    }


def test_summary_table_checks_and_plots(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 500)
    onehot = np.eye(10)[y]

    def members(m: int, noise: float) -> np.ndarray:
        logits = 4 * onehot[None] + noise * rng.normal(size=(m, 500, 10))
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    # A noisy step run and a Snapshot Ensemble whose members are less noisy.
    results = {"step": members(3, 3.0), "snapshot_a0.2": members(3, 2.0)}
    for key, probs in results.items():
        (tmp_path / f"{key}.json").write_text(json.dumps(fake_result(key, probs, y)))
    (tmp_path / "served_check.json").write_text("{}")  # not a method: ignored

    summary = write_summary("test", tmp_path, ["step", "snapshot_a0.2", "sgdr"])

    keys = [row["key"] for row in summary["rows"]]
    assert keys == ["single", "nocycle", "snapshot_a0.2"]  # sgdr has no result yet
    assert summary["checks"] == {
        "snapshot ensemble error < single model error": True,
        "snapshot ensemble error < NoCycle ensemble error": True,
        "snapshot ensemble NLL < single model NLL": True,
        "snapshot ensemble ECE < single model ECE": summary["rows"][2]["ece"]
        < summary["rows"][0]["ece"],
    }
    table = (tmp_path / "summary.md").read_text()
    assert table.count("\n| ") == 3  # one row per entry below the header
    assert "| Single model (step) | 1 |" in table
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

"""The training report: `report.json` and PNG plots beside the manifest.

- learning_rate.png: the learning-rate curve with a marker at each snapshot;
- ensemble_size.png: validation error of each snapshot and of the ensemble of the
  last k snapshots for k = 1..M (the paper's ensemble-size figure);
- disagreement.png: how often each pair of snapshots predicts different classes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from snapens.manifest import Manifest, utc_now
from snapens.report import REPORT_JSON, ensemble_figures, snapshot_rows
from trainer.plots import colour_range, plain_ticks, readable_y

if TYPE_CHECKING:
    from snapens.folder import ModelFolder
    from trainer.history import History
    from trainer.schedules import Plan

MAX_CURVE_POINTS = 5000


def learning_rate_curve(
    lr_at: Callable[[int], float], steps_done: int, snapshot_steps: list[int]
) -> dict[str, list[float]]:
    """The rate of each optimizer step s = 1..steps_done (`lr_at(s - 1)`), thinned to at most
    MAX_CURVE_POINTS (+ the snapshot steps)."""
    stride = max(1, -(-steps_done // MAX_CURVE_POINTS))
    steps = sorted(
        set(range(1, steps_done + 1, stride)) | {s for s in snapshot_steps if s <= steps_done}
    )
    return {"step": [float(s) for s in steps], "lr": [lr_at(s - 1) for s in steps]}


def build_report(
    manifest: Manifest,
    history: History,
    plan: Plan,
    lr_at: Callable[[int], float],
    targets: torch.Tensor,
    train_seconds: float,
) -> dict[str, Any]:
    """`lr_at(step)`: the rate of the step taken after `step` steps (the run's schedule)."""
    y = targets.numpy().astype(np.int64)
    cycles = [s.cycle for s in manifest.snapshots]
    report: dict[str, Any] = {
        "name": manifest.name,
        "created_at": utc_now(),
        "schedule": manifest.training["schedule"],
        "architecture": manifest.training["architecture"],
        "validation_examples": len(y),
        "timing": {
            "train_seconds": train_seconds,
            "snapshot_seconds": history.snapshot_seconds,
        },
        "epochs": history.epochs,
        "learning_rate": {
            **learning_rate_curve(lr_at, plan.total_iterations, list(plan.snapshot_steps)),
            "snapshot_steps": [s.step for s in manifest.snapshots],
        },
        "snapshots": snapshot_rows(manifest),
    }
    if not cycles:
        return report
    member_probs = np.stack([history.snapshot_probs[c].numpy().astype(np.float64) for c in cycles])
    return report | ensemble_figures(cycles, member_probs, y)


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def plot_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The report's matplotlib figures by file name (the caller closes them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures: dict[str, Any] = {}
    curve = report["learning_rate"]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(curve["step"], curve["lr"], lw=1.2, label="learning rate")
    lookup = dict(zip(curve["step"], curve["lr"], strict=True))
    marks = [s for s in curve["snapshot_steps"] if float(s) in lookup]
    ax.scatter(marks, [lookup[float(s)] for s in marks], color="C3", zorder=3, label="snapshot")
    ax.set(xlabel="iteration", ylabel="learning rate", title=f"{report['name']}: learning rate")
    plain_ticks(ax, "both", scientific=True)
    ax.legend(loc="upper right")
    figures["learning_rate.png"] = fig

    if "ensemble_of_last" in report:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ks = [row["m"] for row in report["ensemble_of_last"]]
        ensemble = [100 * row["error"] for row in report["ensemble_of_last"]]
        ax.plot(ks, ensemble, "o-", label="ensemble of the last k")
        singles = [100 * s["error"] for s in reversed(report["snapshots"])]
        ax.plot(ks, singles, "s--", alpha=0.7, label="k-th last snapshot alone")
        ax.set(
            xlabel="k (snapshots)",
            ylabel="validation error (%)",
            title="error against ensemble size",
            xticks=ks,
        )
        # Equal errors (a flat curve) read as their value on a 1-point wide axis.
        readable_y(ax, ensemble + singles, min_span=1.0)
        handles, labels = ax.get_legend_handles_labels()
        calibration = report.get("calibration")
        if calibration:  # the served m: the m >= 2 of lowest NLL, each at its temperature
            nll_axis = ax.twinx()
            nll = calibration["nll_by_m"]
            (line,) = nll_axis.plot(ks, nll, "^:", color="C2", label="NLL, temperature-scaled")
            served = calibration["default_m"]
            (mark,) = nll_axis.plot(
                [served], [nll[served - 1]], "*", color="C3", ms=13, label=f"served: m = {served}"
            )
            nll_axis.set_ylabel("validation NLL")
            plain_ticks(nll_axis)
            handles += [line, mark]
            labels += [line.get_label(), mark.get_label()]
        ax.legend(handles, labels, fontsize=7)
        figures["ensemble_size.png"] = fig

        matrix = 100 * np.array(report["pairwise_disagreement"]["matrix"], dtype=np.float64)
        cycles = report["pairwise_disagreement"]["cycles"]
        fig, ax = plt.subplots(figsize=(4, 3.4))
        low, high = colour_range(matrix.ravel().tolist())
        image = ax.imshow(matrix, cmap="viridis", vmin=low, vmax=high)
        ax.set(
            xticks=range(len(cycles)),
            yticks=range(len(cycles)),
            xticklabels=cycles,
            yticklabels=cycles,
            xlabel="snapshot",
            ylabel="snapshot",
            title="disagreement (% of validation)",
        )
        for i in range(len(cycles)):
            for j in range(len(cycles)):
                ax.text(
                    j, i, f"{matrix[i, j]:.1f}", ha="center", va="center", color="w", fontsize=7
                )
        colour_bar = fig.colorbar(image, ax=ax)
        plain_ticks(colour_bar.ax)
        figures["disagreement.png"] = fig
    return figures


def render_plots(report: dict[str, Any]) -> dict[str, bytes]:
    import matplotlib.pyplot as plt

    plots: dict[str, bytes] = {}
    for name, fig in plot_figures(report).items():
        plots[name] = _png(fig)
        plt.close(fig)
    return plots


def write_report(
    folder: ModelFolder,
    manifest: Manifest,
    history: History,
    plan: Plan,
    lr_at: Callable[[int], float],
    targets: torch.Tensor,
    train_seconds: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report and its plots beside the manifest; `extra`: sections the end of the run
    adds (calibration, the SWA model's figures)."""
    report = build_report(manifest, history, plan, lr_at, targets, train_seconds) | (extra or {})
    folder.write_extra(REPORT_JSON, json.dumps(report, indent=2).encode() + b"\n")
    for name, data in render_plots(report).items():
        folder.write_extra(name, data)
    return report

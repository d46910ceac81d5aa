"""The synthetic folder's report plots, drawn with Pillow (no matplotlib on the serving
side): small but real PNGs under the names the trainer's report gives them."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from snapens.report import DISAGREEMENT_PLOT, ENSEMBLE_SIZE_PLOT, LEARNING_RATE_PLOT

PLOT_SIZE = (360, 240)
MARGIN = 24
COLOURS = ("#1f77b4", "#d62728", "#2ca02c")


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _lines(title: str, series: Sequence[Sequence[tuple[float, float]]]) -> bytes:
    """A plain line plot of each series of (x, y) points, scaled to fill the frame."""
    image = Image.new("RGB", PLOT_SIZE, "white")
    draw = ImageDraw.Draw(image)
    width, height = PLOT_SIZE
    box = (MARGIN, MARGIN, width - MARGIN, height - MARGIN)
    draw.rectangle(box, outline="black")
    draw.text((MARGIN, 6), title, fill="black")
    points = [p for line in series for p in line]
    x_low, x_high = min(p[0] for p in points), max(p[0] for p in points)
    y_low, y_high = min(p[1] for p in points), max(p[1] for p in points)
    x_span, y_span = (x_high - x_low) or 1.0, (y_high - y_low) or 1.0

    def at(point: tuple[float, float]) -> tuple[float, float]:
        return (
            box[0] + (point[0] - x_low) / x_span * (box[2] - box[0]),
            box[3] - (point[1] - y_low) / y_span * (box[3] - box[1]),
        )

    for line, colour in zip(series, COLOURS, strict=False):
        drawn = [at(p) for p in line]
        if len(drawn) > 1:
            draw.line(drawn, fill=colour, width=2)
        for px, py in drawn if len(drawn) <= 20 else ():
            draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=colour)
    return _png(image)


def _matrix(title: str, matrix: np.ndarray) -> bytes:
    """A grey heat map of a square matrix of non-negative values (white 0, black its largest)."""
    image = Image.new("RGB", PLOT_SIZE, "white")
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN, 6), title, fill="black")
    size = len(matrix)
    top_value = float(matrix.max()) if matrix.size and matrix.max() > 0 else 1.0
    cell = (min(PLOT_SIZE) - 2 * MARGIN) // max(size, 1)
    for i in range(size):
        for j in range(size):
            level = round(255 * (1 - float(matrix[i, j]) / top_value))
            left, top = MARGIN + j * cell, MARGIN + i * cell
            draw.rectangle(
                (left, top, left + cell - 1, top + cell - 1),
                fill=(level, level, level),
                outline="black",
            )
    return _png(image)


def render_plots(report: dict[str, Any]) -> dict[str, bytes]:
    """The report's plots as PNG files, by the names the trainer gives them."""
    curve = report["learning_rate"]
    plots = {
        LEARNING_RATE_PLOT: _lines(
            "learning rate by step", [list(zip(curve["step"], curve["lr"], strict=True))]
        )
    }
    if len(report["snapshots"]) > 1:
        singles = [(float(s["cycle"]), float(s["error"])) for s in report["snapshots"]]
        ensembles = [(float(row["m"]), float(row["error"])) for row in report["ensemble_of_last"]]
        plots[ENSEMBLE_SIZE_PLOT] = _lines(
            "validation error: snapshots (blue), last-k ensembles (red)", [singles, ensembles]
        )
        plots[DISAGREEMENT_PLOT] = _matrix(
            "pairwise disagreement", np.asarray(report["pairwise_disagreement"]["matrix"])
        )
    return plots

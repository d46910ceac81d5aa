"""Axis helpers shared by the training report and the experiment's plots (matplotlib only).

matplotlib's automatic limits and tick labels misread nearly flat data: values that are
equal but for rounding (0.5586592179 and 0.5586592179 + 1e-13) get a 1e-12 wide axis whose
ticks read "7.0, 7.2, ..." under an offset of "1e−12+5.586592179e−1". These helpers keep
tick labels plain and give a flat curve a range a reader can read the value off."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def plain_ticks(ax: Any, axis: str = "y", scientific: bool = False) -> None:
    """Tick labels that are the values themselves: no offset, no "×1e-3" unless `scientific`."""
    ax.ticklabel_format(axis=axis, useOffset=False, style="sci" if scientific else "plain")


def readable_y(ax: Any, values: Iterable[float], min_span: float, floor: float = 0.0) -> None:
    """Plain tick labels; when `values` span less than `min_span`, y limits `min_span` wide
    around them (not below `floor`), so that a flat curve sits on labelled ticks."""
    plain_ticks(ax)
    finite = [float(v) for v in values if math.isfinite(v)]
    if not finite:
        return
    low, high = min(finite), max(finite)
    if high - low >= min_span:
        return
    bottom = max(floor, (low + high - min_span) / 2)
    ax.set_ylim(bottom, bottom + min_span)


def colour_range(values: Iterable[float]) -> tuple[float, float]:
    """Colour limits for a non-negative quantity: from 0 to its largest value (1 when all are 0),
    so an all-zero matrix gets a bar from 0 rather than −0.1…0.1."""
    largest = max((float(v) for v in values if math.isfinite(v)), default=0.0)
    return 0.0, largest if largest > 0 else 1.0

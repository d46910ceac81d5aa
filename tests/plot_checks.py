"""Checks on matplotlib axes shared by the report tests."""

from __future__ import annotations

from typing import Any

import pytest


def number(label: str) -> float:
    """A tick label as a number (matplotlib writes U+2212 for minus)."""
    return float(label.replace("\N{MINUS SIGN}", "-"))


def assert_readable_y(ax: Any, values: list[float]) -> None:
    """No offset or multiplier above the axis, every value inside the limits, and at least
    two ticks inside them labelled with distinct plain numbers."""
    ax.figure.canvas.draw()
    assert ax.yaxis.get_offset_text().get_text() == ""
    low, high = ax.get_ylim()
    shown = [
        (tick, label.get_text())
        for tick, label in zip(ax.get_yticks(), ax.get_yticklabels(), strict=True)
        if low <= tick <= high
    ]
    assert len(shown) >= 2, shown
    for tick, text in shown:
        assert number(text) == pytest.approx(tick), (tick, text)
    assert len({text for _, text in shown}) == len(shown)
    assert low <= min(values) <= max(values) <= high

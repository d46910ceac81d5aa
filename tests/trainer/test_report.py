"""The training report's plots read right when the data are flat: equal errors give a
labelled axis around their value (no matplotlib offset), a matrix of zeros a colour bar
from 0."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from tests.plot_checks import assert_readable_y, number
from trainer.report import learning_rate_curve, plot_figures, render_plots

# 1/179 as the trainer computes it along two paths: equal but for the last bits.
ERROR = 1 / 179
ERRORS = [ERROR, ERROR + 1e-16, ERROR * (1 + 1e-15), ERROR + 3e-16, ERROR]


def flat_report(errors: list[float], disagreement: float) -> dict[str, Any]:
    m = len(errors)
    steps = [float(s) for s in range(1, 101)]
    return {
        "name": "flat",
        "learning_rate": {
            "step": steps,
            "lr": [0.1] * len(steps),
            "snapshot_steps": [20 * (i + 1) for i in range(m)],
        },
        "snapshots": [{"cycle": i + 1, "error": e} for i, e in enumerate(errors)],
        "ensemble_of_last": [{"m": k, "error": e} for k, e in enumerate(errors, start=1)],
        "pairwise_disagreement": {
            "cycles": list(range(1, m + 1)),
            "matrix": [[0.0 if i == j else disagreement for j in range(m)] for i in range(m)],
        },
    }


@pytest.fixture
def figures() -> Iterator[dict[str, Any]]:
    made = plot_figures(flat_report(ERRORS, 0.0))
    yield made
    for fig in made.values():
        plt.close(fig)


def test_equal_errors_read_as_their_value(figures: dict[str, Any]) -> None:
    ax = figures["ensemble_size.png"].axes[0]
    assert_readable_y(ax, [100 * e for e in ERRORS])
    low, high = ax.get_ylim()
    assert low >= 0 and high - low == pytest.approx(1.0)  # one percentage point


def test_a_constant_learning_rate_reads_as_its_value(figures: dict[str, Any]) -> None:
    assert_readable_y(figures["learning_rate.png"].axes[0], [0.1])


def test_no_disagreement_gives_a_colour_bar_from_zero(figures: dict[str, Any]) -> None:
    fig = figures["disagreement.png"]
    image = fig.axes[0].images[0]
    assert (image.norm.vmin, image.norm.vmax) == (0.0, 1.0)
    colour_bar = fig.axes[1]
    fig.canvas.draw()
    assert colour_bar.get_ylim() == (0.0, 1.0)
    labels = [number(t.get_text()) for t in colour_bar.get_yticklabels()]
    assert min(labels) == 0 and all(label >= 0 for label in labels)


def test_disagreement_colours_span_zero_to_the_largest_pair() -> None:
    fig = plot_figures(flat_report([0.1, 0.12, 0.11], 0.25))["disagreement.png"]
    try:
        norm = fig.axes[0].images[0].norm
        assert (norm.vmin, norm.vmax) == (0.0, pytest.approx(25.0))
    finally:
        plt.close("all")


def test_varied_errors_keep_matplotlibs_own_limits() -> None:
    errors = [0.05, 0.03, 0.02, 0.015, 0.012]
    fig = plot_figures(flat_report(errors, 0.1))["ensemble_size.png"]
    try:
        ax = fig.axes[0]
        assert_readable_y(ax, [100 * e for e in errors])
        low, high = ax.get_ylim()
        assert high - low > 3  # autoscaled around 1.2..5%, not forced to one point
    finally:
        plt.close("all")


def test_render_plots_writes_pngs_and_closes_its_figures() -> None:
    before = plt.get_fignums()
    plots = render_plots(flat_report(ERRORS, 0.0))
    assert sorted(plots) == ["disagreement.png", "ensemble_size.png", "learning_rate.png"]
    assert all(data.startswith(b"\x89PNG\r\n\x1a\n") for data in plots.values())
    assert plt.get_fignums() == before


def test_the_learning_rate_curve_is_read_from_the_schedule_and_thinned() -> None:
    rates = {step: 1.0 / (step + 1) for step in range(12_000)}
    curve = learning_rate_curve(rates.__getitem__, 12_000, [4_001, 12_000])
    steps = [int(s) for s in curve["step"]]
    assert steps[:3] == [1, 4, 7] and len(steps) == 4_002  # every 3rd step, plus the snapshots
    assert 4_001 in steps and steps[-1] == 12_000
    assert curve["lr"] == [rates[s - 1] for s in steps]  # step s ran at lr_at(s - 1)
    short = learning_rate_curve(rates.__getitem__, 10, [5, 10, 20])
    assert short == {"step": [float(s) for s in range(1, 11)], "lr": [rates[s] for s in range(10)]}


def test_the_ensemble_size_plot_shows_the_calibrated_nll_and_the_served_m() -> None:
    report = flat_report([0.1, 0.12, 0.11], 0.1)
    report["calibration"] = {"nll_by_m": [0.40, 0.35, 0.37], "default_m": 2}
    fig = plot_figures(report)["ensemble_size.png"]
    try:
        error_axis, nll_axis = fig.axes
        assert nll_axis.get_ylabel() == "validation NLL"
        curve, served = nll_axis.get_lines()
        assert list(curve.get_ydata()) == [0.40, 0.35, 0.37]
        assert list(served.get_xdata()) == [2] and list(served.get_ydata()) == [0.35]
        labels = [t.get_text() for t in error_axis.get_legend().get_texts()]
        assert "served: m = 2" in labels
    finally:
        plt.close(fig)

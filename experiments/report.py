"""Summary of a finished experiment: summary.json, summary.md (the README table) and
plots: error against ensemble size for every method, the reliability diagram of the
single model against the snapshot ensemble, and validation error against epoch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainer.plots import readable_y

SERVED = "snapshot_a0.2"  # the ensemble written into models/cifar10 and served


def _rows(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One table row per method; the step run yields both the single model and NoCycle."""
    rows = []
    for key, result in results.items():
        full = result["by_m"][-1]
        wall = sum(run["train_seconds"] for run in result["runs"])
        if key == "step":
            rows.append(
                {
                    "method": "Single model (step)",
                    "key": "single",
                    "m": 1,
                    **result["single"],
                    "auroc_mutual_information": None,
                    "wall_seconds": wall,
                }
            )
            rows.append(
                {
                    "method": "NoCycle snapshot ensemble",
                    "key": "nocycle",
                    **full,
                    "wall_seconds": wall,
                }
            )
        else:
            rows.append(
                {
                    "method": result["label"],
                    "key": key,
                    **full,
                    "wall_seconds": wall,
                    "single_error": result["single"]["error"],
                    "single_label": result["single_label"],
                }
            )
    return rows


def _checks(rows: list[dict[str, Any]]) -> dict[str, bool]:
    by_key = {row["key"]: row for row in rows}
    if not {"single", "nocycle", SERVED} <= set(by_key):
        return {}
    se, single, nocycle = by_key[SERVED], by_key["single"], by_key["nocycle"]
    return {
        "snapshot ensemble error < single model error": se["error"] < single["error"],
        "snapshot ensemble error < NoCycle ensemble error": se["error"] < nocycle["error"],
        "snapshot ensemble NLL < single model NLL": se["nll"] < single["nll"],
        "snapshot ensemble ECE < single model ECE": se["ece"] < single["ece"],
    }


def _markdown(rows: list[dict[str, Any]], checks: dict[str, bool]) -> str:
    lines = [
        "| method | m | error % | NLL | ECE % | Brier | AUROC (MI → error) "
        "| final single model error % | wall time (min) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        auroc = f"{r['auroc_mutual_information']:.3f}" if r.get("auroc_mutual_information") else "–"
        single = (
            f"{100 * r['single_error']:.2f} ({r['single_label']})" if "single_error" in r else "–"
        )
        lines.append(
            f"| {r['method']} | {r['m']} | {100 * r['error']:.2f} | {r['nll']:.4f} "
            f"| {100 * r['ece']:.2f} | {r['brier']:.4f} | {auroc} | {single} "
            f"| {r['wall_seconds'] / 60:.1f} |"
        )
    if checks:
        lines.append("")
        lines += [f"- {'✔' if ok else '✘'} {name}" for name, ok in checks.items()]
    return "\n".join(lines) + "\n"


def plot_figures(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The experiment's matplotlib figures by file name (the caller closes them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figures: dict[str, Any] = {}
    fig, ax = plt.subplots(figsize=(6.5, 4))
    errors: list[float] = []
    for key, result in results.items():
        ms = [row["m"] for row in result["by_m"]]
        label = "NoCycle (step run)" if key == "step" else result["label"]
        curve = [100 * row["error"] for row in result["by_m"]]
        errors += curve
        ax.plot(ms, curve, "o-", label=label)
    if "step" in results:
        errors.append(100 * results["step"]["single"]["error"])
        ax.axhline(
            errors[-1],
            color="k",
            ls="--",
            lw=1,
            label="single model (step)",
        )
    ax.set(
        xlabel="ensemble size m (last m members)",
        ylabel="validation error (%)",
        title="error against ensemble size",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    readable_y(ax, errors, min_span=1.0)  # equal errors: a flat line on labelled ticks
    ax.legend(fontsize=7)
    figures["error_vs_ensemble_size.png"] = fig

    if SERVED in results and "step" in results:
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        for label, bins in (
            ("single model (step)", results["step"]["reliability"]["single"]["bins"]),
            ("snapshot ensemble α0=0.2", results[SERVED]["reliability"]["ensemble"]["bins"]),
        ):
            used = [b for b in bins if b["count"]]
            ax.plot(
                [b["confidence"] for b in used], [b["accuracy"] for b in used], "o-", label=label
            )
        ax.set(
            xlabel="confidence",
            ylabel="accuracy",
            title="reliability (15 bins)",
            xlim=(0, 1),
            ylim=(0, 1),
        )
        ax.legend()
        figures["reliability.png"] = fig

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for key, result in results.items():
        if key == "single_cycle":
            continue
        epochs = result["runs"][0]["epochs"]
        ax.plot(
            [e["epoch"] for e in epochs],
            [100 * e["val_error"] for e in epochs],
            label=result["label"],
        )
    ax.set(
        xlabel="epoch",
        ylabel="validation error (%)",
        title="validation error during training",
        ylim=(0, 60),
    )
    ax.legend(fontsize=7)
    figures["val_error_by_epoch.png"] = fig
    return figures


def _plots(results: dict[str, dict[str, Any]], out: Path) -> None:
    import matplotlib.pyplot as plt

    for name, fig in plot_figures(results).items():
        fig.savefig(out / name, dpi=120, bbox_inches="tight")
        plt.close(fig)


def write_summary(preset: str, out: Path, methods: list[str]) -> dict[str, Any]:
    """Summarise the finished methods' results in `out`, in the order given."""
    results = {
        key: json.loads((out / f"{key}.json").read_text())
        for key in methods
        if (out / f"{key}.json").is_file()
    }
    rows = _rows(results)
    checks = _checks(rows)
    summary = {"preset": preset, "rows": rows, "checks": checks}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    table = _markdown(rows, checks)
    (out / "summary.md").write_text(table)
    _plots(results, out)
    print(table)
    return summary

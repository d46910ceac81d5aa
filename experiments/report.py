"""Summary of a finished experiment: summary.json, summary.md (the README table, mean ±
standard deviation over seeds, every figure as served: temperature-scaled, the served m
cross-fitted) and plots: error against ensemble size for every method (seed 0, as
trained), the reliability diagram of the cosine single model against the best ensemble,
and validation error against epoch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from trainer.plots import readable_y

METRICS = ("error", "nll", "ece", "brier", "auroc_mutual_information")
ENSEMBLES = ("snapshot_a0.2", "fge")  # candidates for the best ensemble
SINGLES = ("cosine", "step")  # the single models it must beat


def _stat(values: list[float | None]) -> dict[str, float | int | None]:
    """Mean and (sample) standard deviation over seeds; None where a value is missing."""
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "seeds": 0}
    std = float(np.std(present, ddof=1)) if len(present) > 1 else 0.0
    return {"mean": float(np.mean(present)), "std": std, "seeds": len(present)}


def _row(name: str, key: str, figures: list[dict[str, Any]], wall: list[float]) -> dict[str, Any]:
    return {
        "method": name,
        "key": key,
        **{metric: _stat([f.get(metric) for f in figures]) for metric in METRICS},
        "m": sorted({fold["m"] for f in figures for fold in f.get("folds", [])}),
        "wall_minutes": _stat([w / 60 for w in wall]),
    }


def _rows(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method, averaged over its seeds: the single model as served (temperature-scaled),
    the ensemble as served (temperature and m cross-fitted), and FGE's SWA model."""
    by_base: dict[str, list[dict[str, Any]]] = {}
    for result in results.values():
        by_base.setdefault(result.get("base", result["method"]), []).append(result)
    rows = []
    for base, group in by_base.items():
        wall = [sum(run["train_seconds"] for run in r["runs"]) for r in group]
        label = group[0]["label"]
        if base in SINGLES:
            singles = [r["calibrated"]["single"] for r in group]
            rows.append(_row(f"Single model ({base})", base, singles, wall))
            rows.append(
                _row(
                    f"NoCycle ensemble ({base} run)",
                    f"nocycle_{base}",
                    [r["calibrated"]["served"] for r in group],
                    wall,
                )
            )
            continue
        rows.append(_row(label, base, [r["calibrated"]["served"] for r in group], wall))
        swa = [r["swa"]["calibrated"] for r in group if "swa" in r]
        if swa:
            rows.append(_row(f"SWA of {base} (one model)", f"{base}_swa", swa, wall))
    return rows


def _checks(rows: list[dict[str, Any]]) -> dict[str, bool]:
    """The claim, on the means: the best ensemble (lowest NLL) beats both single models in
    error, NLL and ECE."""
    by_key = {row["key"]: row for row in rows}
    ensembles = [by_key[k] for k in ENSEMBLES if k in by_key]
    singles = [by_key[k] for k in SINGLES if k in by_key]
    if not ensembles or len(singles) < len(SINGLES):
        return {}
    best = min(ensembles, key=lambda row: row["nll"]["mean"])
    checks = {}
    for single in singles:
        for metric in ("error", "nll", "ece"):
            name = f"best ensemble ({best['key']}) {metric} < single model ({single['key']})"
            checks[name] = best[metric]["mean"] < single[metric]["mean"]
    return checks


def _cell(stat: dict[str, Any], scale: float = 1.0, digits: int = 2) -> str:
    if stat["mean"] is None:
        return "–"
    text = f"{scale * stat['mean']:.{digits}f}"
    return text + (f" ± {scale * stat['std']:.{digits}f}" if stat["seeds"] > 1 else "")


def _markdown(rows: list[dict[str, Any]], checks: dict[str, bool]) -> str:
    lines = [
        "| method | seeds | served m | error % | NLL | ECE % | Brier | AUROC (MI → error) "
        "| wall time (min) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['error']['seeds']} | {', '.join(map(str, r['m'])) or '1'} "
            f"| {_cell(r['error'], 100)} | {_cell(r['nll'], digits=4)} | {_cell(r['ece'], 100)} "
            f"| {_cell(r['brier'], digits=4)} | {_cell(r['auroc_mutual_information'], digits=3)} "
            f"| {_cell(r['wall_minutes'], digits=1)} |"
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
    results = {k: r for k, r in results.items() if r.get("seed", 0) == 0}
    fig, ax = plt.subplots(figsize=(6.5, 4))
    errors: list[float] = []
    for key, result in results.items():
        ms = [row["m"] for row in result["by_m"]]
        label = f"NoCycle ({key} run)" if key in SINGLES else result["label"]
        curve = [100 * row["error"] for row in result["by_m"]]
        errors += curve
        ax.plot(ms, curve, "o-", label=label)
    for style, key in zip(("--", ":"), SINGLES, strict=True):
        if key in results:
            errors.append(100 * results[key]["single"]["error"])
            ax.axhline(errors[-1], color="k", ls=style, lw=1, label=f"single model ({key})")
    ax.set(
        xlabel="ensemble size m (last m members)",
        ylabel="validation error (%)",
        title="error against ensemble size",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    readable_y(ax, errors, min_span=1.0)  # equal errors: a flat line on labelled ticks
    ax.legend(fontsize=7)
    figures["error_vs_ensemble_size.png"] = fig

    ensembles = [k for k in ENSEMBLES if k in results]
    single = next((k for k in SINGLES if k in results), None)
    if ensembles and single is not None:
        best = min(ensembles, key=lambda k: results[k]["calibrated"]["served"]["nll"])
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        for label, bins in (
            (f"single model ({single})", results[single]["reliability"]["single"]["bins"]),
            (f"{best}, as served", results[best]["reliability"]["ensemble"]["bins"]),
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
    ensembles = [row for row in rows if row["key"] in ENSEMBLES]
    best = min(ensembles, key=lambda row: row["nll"]["mean"])["key"] if ensembles else None
    summary = {"preset": preset, "rows": rows, "checks": checks, "best": best}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    table = _markdown(rows, checks)
    (out / "summary.md").write_text(table)
    _plots(results, out)
    print(table)
    return summary

"""A human-readable summary of a model folder: its manifest and, if present, its report."""

from __future__ import annotations

from pathlib import Path

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from snapens.manifest import Manifest
from snapens.report import read_headline


def summarize(model_dir: Path, manifest: Manifest) -> RenderableType:
    training = manifest.training
    schedule = training.get("schedule", {})
    budget = training.get("budget", {})
    head = Text.assemble(
        (f"{manifest.name}", "bold"),
        f"  {model_dir}  [{manifest.state}]\n",
        f"{training.get('architecture', '?')} on {training.get('dataset', {}).get('source', '?')}, "
        f"{schedule.get('name', '?')} schedule, {budget.get('epochs', '?')} epochs, "
        f"{len(manifest.classes)} classes, input {manifest.input.shape} {manifest.input.dtype} "
        f"in {list(manifest.input.pixel_range)}",
    )
    table = Table(
        "cycle",
        "epoch",
        "step",
        "lr",
        "val error",
        "val NLL",
        "ONNX |Δp|",
        title="snapshots",
        title_justify="left",
    )
    for s in manifest.snapshots:
        table.add_row(
            str(s.cycle),
            f"{s.epoch:g}",
            str(s.step),
            f"{s.lr:.3g}",
            f"{1 - s.val_accuracy:.4f}",
            f"{s.val_nll:.4f}",
            f"{s.export_max_abs_diff:.1e}",
        )
    parts: list[RenderableType] = [head, table]
    headline = read_headline(model_dir)
    if headline is not None:
        ens, best = headline.ensemble, headline.best_single
        parts.append(
            Text(
                f"ensemble of {ens.m}: val error {ens.error:.4f}, NLL {ens.nll:.4f}; "
                f"best single snapshot (cycle {best.cycle}): val error {best.error:.4f}"
            )
        )
        if headline.swa is not None:
            swa = headline.swa
            parts.append(
                Text(
                    f"SWA model {swa.model} (one member, the average of {swa.members_averaged} "
                    f"snapshots' weights): val error {swa.error:.4f}, NLL {swa.nll:.4f}"
                )
            )
    chance = 1 - 1 / len(manifest.classes)
    if manifest.snapshots and 1 - manifest.snapshots[-1].val_accuracy >= chance - 0.5 / len(
        manifest.classes
    ):
        parts.append(
            Text(
                f"the last snapshot errs on {1 - manifest.snapshots[-1].val_accuracy:.1%} of "
                f"the validation images, about chance ({chance:.1%}): the run did not learn "
                "(a lower --lr or another schedule)",
                style="bold red",
            )
        )
    calibration = manifest.training.get("calibration")
    if calibration:
        before, after = calibration["before"], calibration["after"]
        parts.append(
            Text(
                f"served: the last {manifest.default_m} at temperature "
                f"{manifest.temperature:.3f} ({calibration['default_m_rule']}): val error "
                f"{after['error']:.4f}, NLL {before['nll']:.4f} -> {after['nll']:.4f}, "
                f"ECE {before['ece']:.4f} -> {after['ece']:.4f} with the temperature"
            )
        )
        if not calibration["beats_last_member"]:
            parts.append(
                Text(
                    "no ensemble of m >= 2 has a lower validation NLL than the last snapshot alone",
                    style="bold",
                )
            )
    return Group(*parts)

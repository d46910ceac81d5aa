"""Where to put the temperature: on each member's logits before the averaging (what is
served: calibrate, then pool) or on the log of the averaged probabilities (pool, then
calibrate; Rahaman & Thiery 2021 found it halves an ensemble's ECE when data is scarce).

    python -m experiments.pooled_calibration --preset cpu-small

For every finished result of the preset whose model folders are here, both rules,
cross-fitted on halves of the held-out split exactly as the experiment reports (the same
served-m rule, the disagreement figures from the members as trained), on the same member
logits. Prints a table and writes `experiments/results/<preset>/pooled_calibration.json`.
It trains nothing and changes no result."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from experiments.cifar10 import (
    DATA,
    PRESETS,
    RESULTS,
    ROOT,
    member_logits,
    methods,
    validation_split,
)
from experiments.crossfit import cross_fitted

FIGURES = ("error", "nll", "ece")


def compare(folders: list[Path], members_from: str, x: Any, y: Any) -> dict[str, Any]:
    logits = member_logits(folders, members_from, x)
    row: dict[str, Any] = {"members": len(logits)}
    for rule, pooled in (("members", False), ("pooled", True)):
        figures = cross_fitted(logits, y, pooled=pooled)
        row[rule] = {k: figures[k] for k in (*FIGURES, "folds")}
    row["single"] = {
        k: v for k, v in cross_fitted(logits[-1:], y, single=True).items() if k in FIGURES
    }
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu-small")
    opts = parser.parse_args(argv)
    if not DATA.is_file():
        print(f"skipped: the CIFAR-10 training set {DATA} is not here")
        return 0
    out = RESULTS / opts.preset
    rows: dict[str, Any] = {}
    x, y = validation_split()
    for method in methods(PRESETS[opts.preset], opts.preset):
        path = out / f"{method.key}.json"
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        folders = [ROOT / run["folder"] for run in result["runs"]]
        if not all((f / "manifest.json").is_file() for f in folders):
            continue
        row = rows[method.key] = compare(folders, method.members_from, x, y)
        print(
            f"{method.key}: ECE single {100 * row['single']['ece']:.2f}%, ensemble as served "
            f"{100 * row['members']['ece']:.2f}%, pooled {100 * row['pooled']['ece']:.2f}%; "
            f"NLL {row['single']['nll']:.4f} / {row['members']['nll']:.4f} / "
            f"{row['pooled']['nll']:.4f}",
            flush=True,
        )
    if not rows:
        print("no finished result of this preset has its model folders here")
        return 0
    target = out / "pooled_calibration.json"
    staging = target.with_suffix(".json.tmp")
    staging.write_text(json.dumps(rows, indent=1) + "\n")
    staging.replace(target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The summary the trainer prints (and `--skip-if-exists` prints again): what it says of a
run that learned nothing and of the SWA model written beside the ensemble."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rich.console import Console

from snapens.manifest import read_manifest
from snapens.summary import summarize


def rendered(folder: Path) -> str:
    console = Console(record=True, width=200)
    console.print(summarize(folder, read_manifest(folder)))
    return console.export_text()


def test_a_run_at_chance_and_an_swa_model_are_said(synthetic_digits: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(synthetic_digits, tmp_path / "digits"))
    text = rendered(folder)
    assert "did not learn" not in text and "SWA model" not in text

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["snapshots"][-1]["val_accuracy"] = 0.11  # 89% error on 10 classes: chance is 90%
    (folder / "manifest.json").write_text(json.dumps(manifest))
    report = json.loads((folder / "report.json").read_text())
    report["swa"] = {"model": "digits-swa", "members_averaged": 5, "error": 0.05, "nll": 0.2}
    (folder / "report.json").write_text(json.dumps(report))
    text = rendered(folder)
    assert "errs on 89.0% of the validation images, about chance (90.0%): the run did not" in text
    assert (
        "SWA model digits-swa (one member, the average of 5 snapshots' weights): val error " in text
    )

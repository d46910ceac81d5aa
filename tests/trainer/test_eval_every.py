"""--eval-every: validation every N epochs, at every snapshot and after the last epoch,
and the same weights whatever N."""

from __future__ import annotations

import json
from pathlib import Path

from snapens.manifest import read_manifest
from tests.conftest import run_trainer_process

RUN = ["--schedule", "snapshot", "--epochs", "6", "--cycles", "2", "--batch-size", "32"]
RUN += ["--name", "run", "--quiet"]


def test_validation_runs_every_n_epochs_and_at_snapshots_without_changing_the_weights(
    tmp_path: Path,
) -> None:
    every = run_trainer_process("--repository", str(tmp_path / "a"), *RUN)
    assert every.returncode == 0, every.stderr
    sparse = run_trainer_process("--repository", str(tmp_path / "b"), *RUN, "--eval-every", "4")
    assert sparse.returncode == 0, sparse.stderr

    def epochs(repo: str) -> list[int]:
        report = json.loads((tmp_path / repo / "run" / "report.json").read_text())
        return [record["epoch"] for record in report["epochs"]]

    assert epochs("a") == [1, 2, 3, 4, 5, 6]
    assert epochs("b") == [3, 4, 6]  # snapshots at 3 and 6, every 4th epoch, the last
    a, b = (read_manifest(tmp_path / repo / "run") for repo in ("a", "b"))
    assert [s.sha256 for s in a.snapshots] == [s.sha256 for s in b.snapshots]
    assert [s.val_nll for s in a.snapshots] == [s.val_nll for s in b.snapshots]


def test_plateau_refuses_sparse_validation(tmp_path: Path) -> None:
    result = run_trainer_process(
        "--repository", str(tmp_path), "--schedule", "plateau", "--eval-every", "2", "--quiet"
    )
    assert result.returncode == 2
    assert "plateau reads the validation loss after every epoch: drop --eval-every" in (
        result.stderr
    )

"""--eval-every: validation every N epochs, at every snapshot and after the last epoch,
and the same weights whatever N."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from snapens.manifest import read_manifest
from tests.conftest import run_trainer_process, start_trainer_process

RUN = ["--schedule", "snapshot", "--epochs", "6", "--cycles", "2", "--batch-size", "32"]
RUN += ["--name", "run", "--quiet"]


@pytest.fixture(scope="module")
def every_epoch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run validated after every epoch (the default): its model folder."""
    repo = tmp_path_factory.mktemp("every")
    result = run_trainer_process("--repository", str(repo), *RUN)
    assert result.returncode == 0, result.stderr
    return repo / "run"


def validated_epochs(folder: Path) -> list[int]:
    report = json.loads((folder / "report.json").read_text())
    return [record["epoch"] for record in report["epochs"]]


def assert_same_snapshots(a: Path, b: Path) -> None:
    first, second = read_manifest(a), read_manifest(b)
    assert [s.sha256 for s in first.snapshots] == [s.sha256 for s in second.snapshots]
    assert [s.val_nll for s in first.snapshots] == [s.val_nll for s in second.snapshots]


def test_validation_runs_every_n_epochs_and_at_snapshots_without_changing_the_weights(
    every_epoch: Path, tmp_path: Path
) -> None:
    sparse = run_trainer_process("--repository", str(tmp_path), *RUN, "--eval-every", "4")
    assert sparse.returncode == 0, sparse.stderr
    assert validated_epochs(every_epoch) == [1, 2, 3, 4, 5, 6]
    # snapshots at 3 and 6, every 4th epoch, the last
    assert validated_epochs(tmp_path / "run") == [3, 4, 6]
    assert_same_snapshots(every_epoch, tmp_path / "run")


def test_a_run_may_resume_with_another_n(every_epoch: Path, tmp_path: Path) -> None:
    """--eval-every is not part of what a resumed run must repeat: the weights do not
    depend on it. Started validating every epoch, resumed validating every 4th."""
    folder = tmp_path / "run"
    process = start_trainer_process("--repository", str(tmp_path), *RUN)
    while not (folder / "snapshots" / "001.onnx").exists() and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    resumed = run_trainer_process(
        "--repository", str(tmp_path), *RUN, "--resume", "--eval-every", "4"
    )
    assert resumed.returncode == 0, resumed.stderr
    # Every epoch until the interruption (at the first snapshot, epoch 3), then every 4th
    # and the last.
    assert validated_epochs(folder) == [1, 2, 3, 4, 6]
    assert_same_snapshots(every_epoch, folder)


def test_plateau_refuses_sparse_validation(tmp_path: Path) -> None:
    result = run_trainer_process(
        "--repository", str(tmp_path), "--schedule", "plateau", "--eval-every", "2", "--quiet"
    )
    assert result.returncode == 2
    assert "plateau reads the validation loss after every epoch: drop --eval-every" in (
        result.stderr
    )

"""What --resume refuses before it trains (other data, a changed setting, a snapshot gone,
a damaged checkpoint), and the end of a run: the folder is marked complete only once
everything of the run is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import trainer.finish as finish_module
from snapens.manifest import read_manifest
from trainer.cli import main as trainer_main

NAME = "run"


def _npz(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), 40)
    np.savez(path, x=rng.integers(0, 256, (len(y), 1, 8, 8), dtype=np.uint8), y=y)
    return path


def _run(repo: Path, data: Path, *extra: str) -> int:
    return trainer_main(
        [
            *("--repository", str(repo), "--name", NAME, "--quiet"),
            *("--dataset", "npz", "--data", str(data), "--epochs", "2", "--cycles", "2"),
            *("--batch-size", "16", "--cache-dir", str(repo.parent / "cache")),
            *extra,
        ]
    )


@pytest.fixture
def finished(tmp_path: Path) -> tuple[Path, Path]:
    """A completed run (its checkpoint kept, as a run's is) and its data file."""
    repo, data = tmp_path / "repo", _npz(tmp_path / "data.npz", seed=0)
    assert _run(repo, data) == 0
    return repo, data


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_resume_refuses_other_data_at_the_same_path(
    finished: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    repo, data = finished
    capsys.readouterr()
    _npz(data, seed=1)  # the same shapes and labels, other pixels
    assert _run(repo, data, "--resume") == 2
    err = _error(capsys)
    assert "--resume: the data differ from the run's (sha256:" in err
    assert read_manifest(repo / NAME).state == "complete"  # untouched


def test_resume_refuses_turning_snapshots_off(
    finished: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    repo, data = finished
    capsys.readouterr()
    assert _run(repo, data, "--resume", "--no-snapshots") == 2
    assert "started with --snapshots, not --no-snapshots" in _error(capsys)


def test_resume_refuses_a_missing_snapshot_it_would_keep(
    finished: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    repo, data = finished
    capsys.readouterr()
    (repo / NAME / "snapshots" / "001.onnx").unlink()
    assert _run(repo, data, "--resume") == 2
    err = _error(capsys)
    assert "001.onnx: listed in the manifest but missing" in err and "--overwrite" in err


def _rewrite_checkpoint(path: Path, how: str) -> None:
    if how == "garbage":
        path.write_bytes(b"garbage")
        return
    state = torch.load(path, weights_only=True)
    if how == "no model":
        del state["model"]
    elif how == "beyond the run":
        state["epoch"], state["step"] = 99, 10**9
    torch.save(state, path)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("garbage", "cannot read checkpoint"),
        ("no model", "is damaged (its model missing or mistyped)"),
        ("beyond the run", "stands at epoch 99, step 1000000000, which is not the end of an"),
    ],
)
def test_a_damaged_checkpoint_is_one_clear_error(
    finished: tuple[Path, Path], capsys: pytest.CaptureFixture[str], how: str, message: str
) -> None:
    repo, data = finished
    capsys.readouterr()
    _rewrite_checkpoint(repo / NAME / "checkpoint" / "last.pt", how)
    assert _run(repo, data, "--resume") == 2
    assert message in _error(capsys)


def test_the_folder_is_complete_only_once_its_report_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stopped while writing its report (or its SWA model) is not complete, so
    --skip-if-exists resumes it and writes what was missing."""
    repo, data = tmp_path / "repo", _npz(tmp_path / "data.npz", seed=0)

    def stopped(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(finish_module, "write_report", stopped)
        assert _run(repo, data, "--swa") == 130
    assert read_manifest(repo / NAME).state == "training"
    assert not (repo / NAME / "report.json").exists()

    assert _run(repo, data, "--swa", "--skip-if-exists") == 0
    assert read_manifest(repo / NAME).state == "complete"
    report = json.loads((repo / NAME / "report.json").read_text())
    assert report["swa"]["members_averaged"] == 2
    assert read_manifest(repo / f"{NAME}-swa").state == "complete"


def test_a_run_without_a_checkpoint_is_started_again_by_skip_if_exists(
    finished: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Stopped after a snapshot but before its first checkpoint (snapshots mid-epoch): it
    cannot be resumed, so a plain run says --overwrite, not --resume, and --skip-if-exists
    starts it again."""
    repo, data = finished
    folder = repo / NAME
    (folder / "checkpoint" / "last.pt").unlink()
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps(manifest | {"state": "training"}))
    capsys.readouterr()
    assert _run(repo, data) == 2
    err = _error(capsys)
    assert "pass --overwrite to replace it" in err and "--resume" not in err
    assert _run(repo, data, "--resume") == 2
    assert "start it again with --overwrite" in _error(capsys)
    assert _run(repo, data, "--skip-if-exists") == 0
    assert read_manifest(folder).state == "complete"


def test_an_interrupt_before_the_first_checkpoint_does_not_advise_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import trainer.train as train_module

    def interrupted(self: object) -> float:
        raise KeyboardInterrupt  # as Ctrl-C in the first epoch

    monkeypatch.setattr(train_module.Trainer, "fit", interrupted)
    repo, data = tmp_path / "repo", _npz(tmp_path / "data.npz", seed=0)
    assert _run(repo, data) == 130
    err = capsys.readouterr().err
    assert "interrupted before the first checkpoint: start the run again" in err
    assert "--resume" not in err

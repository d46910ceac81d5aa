"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import snapens  # noqa: F401  (before any test module imports onnxruntime: its telemetry off)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CIFAR_ZIP = SHARED / "data" / "cifar10" / "train.zip"


def run_trainer_process(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m trainer ARGS` in a fresh interpreter, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )


def start_trainer_process(*args: str) -> subprocess.Popen[str]:
    """`python -m trainer ARGS` started in the background (to interrupt it); its standard
    error is kept for communicate()."""
    return subprocess.Popen(
        [sys.executable, "-m", "trainer", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="session")
def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """Digit images [N, 1, 8, 8] float32 in 0..16 and their labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images[:, None].astype(np.float32), data.target


@pytest.fixture(scope="session")
def synthetic_digits(
    digit_images: tuple[np.ndarray, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A digits model folder written without torch (snapens.synthetic), once for the session:
    5 snapshots, classes "0".."9", pixels in [0, 16], state complete, with the report files.
    For tests of the reading side; `trained_digits` is the trainer's own."""
    from snapens.synthetic import write_model_folder

    images, labels = digit_images
    return write_model_folder(
        tmp_path_factory.mktemp("synthetic"), "digits", images, labels, pixel_range=(0, 16)
    )


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits ensemble of 5 snapshots trained once for the session: the model folder."""
    from trainer.cli import main

    repo = tmp_path_factory.mktemp("repo")
    code = main(
        [
            "--dataset",
            "digits",
            "--epochs",
            "10",
            "--cycles",
            "5",
            "--repository",
            str(repo),
            "--name",
            "digits",
            "--quiet",
        ]
    )
    assert code == 0
    return repo / "digits"


@pytest.fixture
def train_cli(tmp_path: Path) -> Callable[..., tuple[int, Path]]:
    """Run the trainer in-process with a fresh repository; returns (exit code, repository)."""
    from trainer.cli import main

    def run(*args: str) -> tuple[int, Path]:
        repo = tmp_path / "repo"
        return main(["--repository", str(repo), "--quiet", *args]), repo

    return run

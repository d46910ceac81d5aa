"""Output piped into a file or a log collector: the trainer's and the scorer's lines stay
whole (rich wraps at 80 columns when not on a terminal unless told otherwise)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from snapens.console import console
from tests.conftest import ROOT

# A folder name that makes the summary's first line (which names the model folder) long.
LONG = "a-repository-folder-with-a-name-well-over-eighty-characters-" * 2


def run_piped(*args: str) -> subprocess.CompletedProcess[str]:
    """`python ARGS` with stdout and stderr as pipes and an 80-column hint, as under a pipe."""
    env = {**os.environ, "COLUMNS": "80", "PYTHONUNBUFFERED": "1"}
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def long_repository(trained_digits: Path, tmp_path: Path) -> Path:
    repository = tmp_path / LONG
    shutil.copytree(trained_digits, repository / "digits")
    return repository


def test_the_trainers_summary_lines_stay_whole_in_a_pipe(
    trained_digits: Path, tmp_path: Path
) -> None:
    repository = long_repository(trained_digits, tmp_path)
    result = run_piped(
        "-m", "trainer", "--repository", str(repository), "--name", "digits", "--skip-if-exists"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    head = next(line for line in lines if line.startswith("digits "))
    assert str(repository / "digits") in head and head.rstrip().endswith("[complete]")
    assert len(head) > 80
    ensemble = next(line for line in lines if line.startswith("ensemble of 5:"))
    assert "best single snapshot (cycle" in ensemble and ensemble.rstrip().endswith(
        tuple("0123456789")
    )


def test_the_scorers_summary_stays_one_line_in_a_pipe(trained_digits: Path, tmp_path: Path) -> None:
    repository = long_repository(trained_digits, tmp_path)
    rows = np.zeros((7, 1, 8, 8), np.float32)
    np.save(tmp_path / "x.npy", rows)
    output = tmp_path / LONG / "scores.csv"
    result = run_piped(
        "-m",
        "server.score",
        "--repository",
        str(repository),
        "--input",
        str(tmp_path / "x.npy"),
        "--output",
        str(output),
    )
    assert result.returncode == 0, result.stderr
    summary = [line for line in result.stderr.splitlines() if line.startswith("scored ")]
    assert len(summary) == 1, result.stderr
    assert summary[0].startswith("scored 7 rows (0 failed) of ")
    assert summary[0].endswith(f"→ {output}"), result.stderr


def test_the_helper_wraps_on_a_terminal_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a terminal rich keeps wrapping at its width; elsewhere a line is printed whole."""
    line = " ".join(f"word{i}" for i in range(40))  # 269 characters
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    for compatible, lines in (("1", 4), ("0", 1)):
        monkeypatch.setenv("TTY_COMPATIBLE", compatible)  # rich: is (not) a terminal
        out = console()
        assert out.is_terminal is (compatible == "1")
        out.print(line)
        printed = capsys.readouterr().out.splitlines()
        assert len(printed) == lines and " ".join(p.strip() for p in printed) == line

"""Interrupted runs: the repository stays valid, and --resume reproduces the
uninterrupted run exactly."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from snapens.manifest import ManifestError, read_manifest, read_snapshot
from tests.conftest import run_trainer_process, start_trainer_process

# SGDR with T_mult = 2 (periods of 1, 2, 4, 8, 16 epochs): the case where rebuilding
# torch's scheduler from last_epoch would go wrong.
RUN = [
    "--schedule",
    "sgdr",
    "--t0",
    "1",
    "--t-mult",
    "2",
    "--epochs",
    "31",
    "--batch-size",
    "16",
    "--name",
    "run",
    "--quiet",
]


def start(repo: Path, *extra: str) -> subprocess.Popen[str]:
    return start_trainer_process("--repository", str(repo), *RUN, *extra)


def assert_repository_valid(folder: Path) -> int:
    """Every snapshot the manifest lists is complete and matches its checksum."""
    manifest = read_manifest(folder)
    for entry in manifest.snapshots:
        read_snapshot(folder, entry)
    return len(manifest.snapshots)


def snapshot_count(folder: Path) -> int:
    try:
        return len(read_manifest(folder).snapshots)
    except ManifestError:
        return 0


def test_resume_after_random_kills_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    reference = run_trainer_process("--repository", str(tmp_path / "a"), *RUN)
    assert reference.returncode == 0, reference.stderr
    expected = json.loads((tmp_path / "a" / "run" / "report.json").read_text())

    repo = tmp_path / "b"
    folder = repo / "run"
    rng = random.Random(7)
    kills = 0
    process = start(repo)
    for wanted in (1, 3):  # kill at a random moment after the n-th snapshot
        while snapshot_count(folder) < wanted and process.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.5))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
        assert_repository_valid(folder)  # valid at every interruption
        assert read_manifest(folder).state == "training"
        process = start(repo, "--resume")
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert kills >= 1

    resumed = json.loads((folder / "report.json").read_text())
    assert resumed["learning_rate"] == expected["learning_rate"]  # the whole curve, exactly
    assert resumed["snapshots"] == expected["snapshots"]  # same steps, rates and accuracies
    assert assert_repository_valid(folder) == 5
    assert not list(folder.rglob(".tmp-*"))


def test_ctrl_c_stops_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    process = start(tmp_path)
    folder = tmp_path / "run"
    while snapshot_count(folder) < 2 and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "interrupted: continue this run with --resume" in err and "Traceback" not in err
    assert_repository_valid(folder)

    # --skip-if-exists (what `make run` uses) resumes an interrupted run.
    result = run_trainer_process("--repository", str(tmp_path), *RUN, "--skip-if-exists")
    assert result.returncode == 0, result.stderr
    assert assert_repository_valid(folder) == 5
    assert read_manifest(folder).state == "complete"


def test_resume_refuses_changed_settings(tmp_path: Path) -> None:
    process = start(tmp_path)
    while not (tmp_path / "run" / "checkpoint" / "last.pt").exists() and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    result = run_trainer_process("--repository", str(tmp_path), *RUN, "--resume", "--lr", "0.3")
    assert result.returncode == 2
    assert "--resume: the run was started with --lr 0.1, not --lr 0.3" in result.stderr


def test_the_checkpoint_is_loaded_without_executing_pickled_code(tmp_path: Path) -> None:
    """A checkpoint carrying a pickled callable is refused (torch.load weights_only=True)."""
    folder = tmp_path / "run"
    (folder / "checkpoint").mkdir(parents=True)
    marker = tmp_path / "pwned"
    payload = (
        "import os, pickle, torch\n"
        "class Evil:\n"
        f"    def __reduce__(self): return (os.system, ('touch {marker}',))\n"
        f"torch.save({{'format': 1, 'x': Evil()}}, '{folder / 'checkpoint' / 'last.pt'}')\n"
    )
    subprocess.run([sys.executable, "-c", payload], check=True, env={**os.environ})
    result = run_trainer_process("--repository", str(tmp_path), *RUN, "--resume")
    assert result.returncode == 2
    assert "cannot read checkpoint" in result.stderr
    assert not marker.exists()


FGE = [
    "--schedule",
    "fge",
    "--epochs",
    "20",
    "--fge-fraction",
    "0.5",
    "--cycle-epochs",
    "2",
    "--swa",
    "--batch-size",
    "16",
    "--name",
    "run",
    "--quiet",
]


def test_resume_mid_fge_reproduces_the_uninterrupted_curve_and_its_swa(tmp_path: Path) -> None:
    reference = run_trainer_process("--repository", str(tmp_path / "a"), *FGE)
    assert reference.returncode == 0, reference.stderr
    expected = json.loads((tmp_path / "a" / "run" / "report.json").read_text())

    repo = tmp_path / "b"
    folder = repo / "run"
    process = start_trainer_process("--repository", str(repo), *FGE)
    while snapshot_count(folder) < 2 and process.poll() is None:  # inside the FGE cycles
        time.sleep(0.01)
    killed = process.poll() is None
    if killed:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert killed  # the run had cycles left when it was stopped
    assert_repository_valid(folder)
    resumed = run_trainer_process("--repository", str(repo), *FGE, "--resume")
    assert resumed.returncode == 0, resumed.stderr

    report = json.loads((folder / "report.json").read_text())
    assert report["learning_rate"] == expected["learning_rate"]  # the whole curve, exactly
    assert report["snapshots"] == expected["snapshots"]
    timing = "seconds"  # how long the SWA pass took: the one figure that may differ
    assert {k: v for k, v in report["swa"].items() if k != timing} == {
        k: v for k, v in expected["swa"].items() if k != timing
    }  # the running average survived the kill
    assert report["calibration"] == expected["calibration"]
    assert assert_repository_valid(folder) == 5
    assert read_manifest(repo / "run-swa").snapshots[0].sha256 == (
        read_manifest(tmp_path / "a" / "run-swa").snapshots[0].sha256
    )

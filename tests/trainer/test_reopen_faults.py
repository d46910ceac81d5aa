"""Fault injection into `ModelFolder.reopen`, what `python -m trainer --resume` runs first.

A real process runs `reopen` on a copy of an interrupted run and dies (os._exit: no
cleanup, no `finally`) just before its k-th filesystem change, for k = 1, 2, ... until
it completes untouched. After every kill the folder must be a valid repository (the
manifest parses, every file it lists is there with its sha256, the server's loader
accepts it), and `--resume` from there must end with exactly the uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import trainer.train as train_module
from server.runtime import EnsembleRuntime
from server.settings import RuntimeSettings
from snapens.manifest import Manifest, read_manifest, read_snapshot
from tests.conftest import ROOT
from tests.faults import INJECTOR, KILLED
from trainer.checkpoint import load_checkpoint
from trainer.cli import main as trainer_main

NAME = "run"
RUN = ["--dataset", "digits", "--epochs", "4", "--cycles", "4", "--name", NAME, "--quiet"]
RESUME_AFTER_EPOCH = 2  # of 4: snapshots 3 and 4 were taken after the checkpoint
REOPEN = """
from pathlib import Path
from snapens.folder import ModelFolder

folder = ModelFolder(Path(sys.argv[2]), sys.argv[3])
arm()
folder.reopen(int(sys.argv[4]))
"""


@dataclass(frozen=True)
class Reference:
    folder: Path  # the uninterrupted run
    checkpoint: Path  # its checkpoint after RESUME_AFTER_EPOCH epochs
    last_step: int


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """One uninterrupted run, keeping a copy of every checkpoint it writes."""
    repo = tmp_path_factory.mktemp("reference")
    kept = tmp_path_factory.mktemp("checkpoints")
    save = train_module.save_checkpoint

    def save_and_keep(path: Path, state: dict[str, Any]) -> None:
        save(path, state)
        shutil.copyfile(path, kept / f"epoch-{state['epoch']}.pt")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "save_checkpoint", save_and_keep)
        assert trainer_main(["--repository", str(repo), *RUN]) == 0
    checkpoint = kept / f"epoch-{RESUME_AFTER_EPOCH}.pt"
    return Reference(repo / NAME, checkpoint, int(load_checkpoint(checkpoint)["step"]))


def interrupted_copy(reference: Reference, repo: Path) -> Path:
    """The state the issue describes: a manifest (state "complete") listing snapshots taken
    after the checkpoint, plus what killed writers leave: temporaries and an orphan."""
    folder = repo / NAME
    shutil.copytree(reference.folder, folder)
    shutil.copyfile(reference.checkpoint, folder / "checkpoint" / "last.pt")
    (folder / ".tmp-manifest.json.k1ll3d00").write_bytes(b'{"half a manifest')
    (folder / "snapshots" / ".tmp-003.onnx.k1ll3d00").write_bytes(b"half a snapshot")
    (folder / "checkpoint" / ".tmp-last.pt.k1ll3d00").write_bytes(b"half a checkpoint")
    shutil.copyfile(folder / "snapshots" / "001.onnx", folder / "snapshots" / "009.onnx")
    return folder


def kill_reopen_at(k: int, folder: Path, last_step: int) -> int:
    """Run reopen in a fresh process that dies before its k-th change; its exit status."""
    result = subprocess.run(
        [sys.executable, "-c", INJECTOR + REOPEN, str(k), str(folder.parent), NAME, str(last_step)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )
    assert result.returncode in (0, KILLED), result.stderr
    return result.returncode


def assert_valid(folder: Path) -> Manifest:
    """What every reader relies on: the manifest parses, each listed file is there with
    its sha256, and the server's loader takes the set."""
    manifest = read_manifest(folder)
    for entry in manifest.snapshots:
        read_snapshot(folder, entry)
    runtime = EnsembleRuntime.load(folder, None, RuntimeSettings(providers="cpu"))
    assert runtime.members == manifest.last(min(manifest.default_m, len(manifest.snapshots)))
    return manifest


def outcome(folder: Path) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    """What a finished run is: its snapshots (bytes included) and its report's curves."""
    manifest = read_manifest(folder)
    assert manifest.state == "complete"
    report = json.loads((folder / "report.json").read_text())
    snapshots = [
        (s.file, s.sha256, s.cycle, s.step, s.lr, s.val_accuracy, s.val_nll)
        for s in manifest.snapshots
    ]
    return snapshots, {k: report[k] for k in ("learning_rate", "snapshots")}


def test_a_kill_at_every_step_of_reopen_leaves_a_valid_resumable_repository(
    reference: Reference, tmp_path: Path
) -> None:
    original = read_manifest(reference.folder)
    expected = outcome(reference.folder)
    assert [s.step for s in original.snapshots if s.step > reference.last_step] != []

    windows = []  # per kill: (manifest rewritten, a dropped snapshot still on disk)
    k = 0
    while True:
        k += 1
        assert k < 50, "reopen never completed"
        repo = tmp_path / f"kill-{k}"
        folder = interrupted_copy(reference, repo)
        if kill_reopen_at(k, folder, reference.last_step) == 0:
            break  # reopen made fewer than k changes: every step has been covered

        manifest = assert_valid(folder)
        if manifest.state == "complete":  # not rewritten yet: still the original, whole
            assert manifest == original
        else:  # rewritten: only what the checkpoint has reached
            assert [s.step for s in manifest.snapshots] == [
                s.step for s in original.snapshots if s.step <= reference.last_step
            ]
        windows.append((manifest.state == "training", (folder / "snapshots" / "004.onnx").exists()))

        # Resume from this intermediate state, as a user would after the kill.
        assert trainer_main(["--repository", str(repo), "--name", NAME, "--resume", "--quiet"]) == 0
        assert_valid(folder)
        assert outcome(folder) == expected
        listed = {s.file for s in read_manifest(folder).snapshots}
        assert {f"snapshots/{p.name}" for p in (folder / "snapshots").iterdir()} == listed
        assert not list(folder.rglob(".tmp-*"))
        shutil.rmtree(repo)

    kills = k - 1
    # At least: the manifest's rename, 2 dropped snapshots, 3 temporaries, 1 orphan.
    assert kills >= 7, kills
    assert (False, True) in windows  # killed before the rewrite, files all there
    assert (True, True) in windows  # killed after the rewrite, before the deletes
    assert (True, False) in windows  # killed during the deletes
    # The completed reopen left the same valid folder.
    manifest = assert_valid(folder)
    assert manifest.state == "training"
    assert len(manifest.snapshots) == RESUME_AFTER_EPOCH
    assert not list(folder.rglob(".tmp-*"))

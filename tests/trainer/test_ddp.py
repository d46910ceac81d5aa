"""Distributed training on the CPU: two processes with DistributedDataParallel (gloo) under
torchrun; rank 0 alone reports and writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from snapens.manifest import read_manifest, read_snapshot
from tests.conftest import ROOT


def test_ddp_on_cpu_with_gloo_and_torchrun(tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "trainer",
            "--repository",
            str(tmp_path),
            "--epochs",
            "4",
            "--cycles",
            "2",
            "--val-fraction",
            "0.1",
            "--name",
            "ddp",
            "--quiet",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(tmp_path / "ddp")
    assert manifest.training["world_size"] == 2
    # Each rank takes half of every epoch: half the iterations of a single process.
    assert manifest.training["budget"]["iterations_per_epoch"] == (1617 // 2) // 64
    assert len(manifest.snapshots) == 2
    for entry in manifest.snapshots:
        read_snapshot(tmp_path / "ddp", entry)
    assert manifest.snapshots[-1].val_accuracy > 0.9
    assert result.stdout.count("snapshots") == 1  # only rank 0 reports and writes

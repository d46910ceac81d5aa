"""Peak memory of the batch scorer as its input grows: it should stay flat.

    python bench/score_memory.py [--base-rows 100000] [--factors 1 10 100]

Scores the embedded digits ensemble (trained on first use, in seconds) on .npy inputs of
base-rows × factor rows (the 1,797 digit images tiled) with `python -m server.score`,
writing Parquet, and prints each run's peak RSS (the scorer's VmHWM), input size
and throughput. The scorer reads, scores and writes in chunks of about 64 MiB of input
and answer (32,768 rows of the 5-snapshot digits ensemble at batch 4096), so memory is
bounded by the chunk, not by the input.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = ROOT / ".cache" / "bench" / "models"
MODEL = "digits"


def ensure_digits() -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "--dataset",
            "digits",
            "--repository",
            str(REPOSITORY),
            "--name",
            MODEL,
            "--skip-if-exists",
            "--quiet",
        ],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def tiled_input(rows: int, path: Path) -> Path:
    """`rows` digit images (tiled), written in pieces so this script stays small too."""
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.float32)[:, None]  # [1797, 1, 8, 8]
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, 1, 8, 8))
    for start in range(0, rows, len(images)):
        n = min(len(images), rows - start)
        out[start : start + n] = images[:n]
    out.flush()
    del out
    return path


def run_measured(command: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB) of a command.

    The peak is the child's own VmHWM, polled from /proc: it starts afresh at exec, unlike
    ru_maxrss, which a child inherits from the process that forked it.
    """
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT)
    status = Path(f"/proc/{process.pid}/status")
    peak_kib = 0
    while process.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kib = max(peak_kib, int(line.split()[1]))
        except (OSError, ValueError):  # exiting between poll() and the read
            pass
        time.sleep(0.02)
    if process.returncode:
        raise SystemExit(f"failed ({process.returncode}): {' '.join(command)}")
    return time.perf_counter() - started, peak_kib // 1024


def score(source: Path, output: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB) of the scorer."""
    return run_measured(
        [
            sys.executable,
            "-m",
            "server.score",
            "--repository",
            str(REPOSITORY),
            "--model",
            MODEL,
            "--input",
            str(source),
            "--output",
            str(output),
            "--batch-size",
            "4096",
            "--quiet",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--base-rows", type=int, default=100_000)
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 10, 100])
    opts = parser.parse_args()
    ensure_digits()
    print("| input | rows | input size (MiB) | output size (MiB) | rows/s | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for factor in opts.factors:
        rows = opts.base_rows * factor
        with tempfile.TemporaryDirectory() as tmp:
            source = tiled_input(rows, Path(tmp) / "input.npy")
            output = Path(tmp) / "scores.parquet"
            seconds, rss = score(source, output)
            print(
                f"| {factor}× | {rows:,} | {source.stat().st_size / 2**20:,.0f} | "
                f"{output.stat().st_size / 2**20:,.0f} | {rows / seconds:,.0f} | {rss:,} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

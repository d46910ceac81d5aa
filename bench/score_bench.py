"""Batch scoring throughput on the CIFAR-10 training images (../shared).

    python bench/score_bench.py [--rows 50000] [--batch-size 256] [--repository DIR --model NAME]

The ensemble is `models/cifar10` (written by `python -m experiments.cifar10`) where it
exists, else the serving benchmark's ResNet-20 ensemble (trained on first use). Measures
rows/s for:
- raw in-process onnxruntime running the fused graph over a pre-decoded float32 array
  in memory, batch after batch (the limit: no reading, no arithmetic, no output);
- a naive loop of m onnxruntime sessions (one per snapshot) with numpy softmax and mean;
- `python -m server.score` on the same pre-decoded array as a .npy file;
- `python -m server.score` on the JPEG .zip itself (decoding overlapped with inference).
The scorer figures are the wall time of the whole command (start-up, reading, the
ensemble arithmetic, writing Parquet) and its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import snapens  # noqa: E402, F401  (before onnxruntime: its telemetry off, as in the server)

# isort: split
import onnxruntime as ort  # noqa: E402
from score_memory import run_measured  # noqa: E402
from serve_load import BENCH_MODEL, BENCH_REPO, CIFAR_ZIP, ensure_model  # noqa: E402

from server.runtime import EnsembleRuntime, session_options  # noqa: E402
from server.score.sources import ImageSource, open_source  # noqa: E402
from server.settings import RuntimeSettings  # noqa: E402
from snapens.ensemble import softmax  # noqa: E402
from snapens.manifest import read_manifest, read_snapshot  # noqa: E402


def subset_zip(source: Path, rows: int, target: Path) -> Path:
    """The first `rows` images of the zip (in the scorer's order), as a new zip."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        names = sorted(i.filename for i in archive.infolist() if not i.is_dir())
        for name in names[:rows]:
            out.writestr(name, archive.read(name))
    return target


def decode_all(images: Path, folder: Path) -> np.ndarray:
    """Every image of the zip decoded with the scorer's own reader, as one float32 array."""
    spec = read_manifest(folder).input
    source = open_source(images, spec, "path")
    assert isinstance(source, ImageSource)
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        parts = [source.decode(chunk, pool).x for chunk in source.chunks(4096, set())]
    source.close()
    return np.concatenate(parts)


def raw_rows_per_s(folder: Path, x: np.ndarray, batch: int) -> float:
    runtime = EnsembleRuntime.load(folder, None, RuntimeSettings(execution="fused"))
    runtime.run(x[:batch])
    started = time.perf_counter()
    for i in range(0, len(x), batch):
        runtime.run(x[i : i + batch])
    return len(x) / (time.perf_counter() - started)


def naive_rows_per_s(folder: Path, x: np.ndarray, batch: int) -> float:
    """What one would write by hand: a session per snapshot, softmax and mean in numpy."""
    manifest = read_manifest(folder)
    options = session_options(RuntimeSettings())
    sessions = [
        ort.InferenceSession(read_snapshot(folder, e), options, ["CPUExecutionProvider"])
        for e in manifest.last(manifest.default_m)
    ]
    name = manifest.input.name
    started = time.perf_counter()
    for i in range(0, len(x), batch):
        feed = {name: x[i : i + batch]}
        np.mean([softmax(s.run(None, feed)[0]) for s in sessions], axis=0)
    return len(x) / (time.perf_counter() - started)


def scorer(repository: Path, model: str, source: Path, out: Path, batch: int) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB) of one `python -m server.score` run."""
    return run_measured(
        [
            sys.executable,
            "-m",
            "server.score",
            "--repository",
            str(repository),
            "--model",
            model,
            "--input",
            str(source),
            "--output",
            str(out),
            "--batch-size",
            str(batch),
            "--overwrite",
            "--quiet",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000, help="images to score (max 50,000)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repository", type=Path)
    parser.add_argument("--model")
    opts = parser.parse_args()
    if not CIFAR_ZIP.is_file():
        print(f"skipped: {CIFAR_ZIP} not found (the CIFAR-10 training set this bench scores)")
        return
    if opts.repository is None and (ROOT / "models" / "cifar10" / "manifest.json").is_file():
        opts.repository, opts.model = ROOT / "models", "cifar10"
    repository = opts.repository or BENCH_REPO
    model = opts.model or BENCH_MODEL
    folder = ensure_model(repository, model)
    manifest = json.loads((folder / "manifest.json").read_text())
    m = manifest["default_m"]
    batch = opts.batch_size

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images = subset_zip(CIFAR_ZIP, opts.rows, work / "images.zip")
        x = decode_all(images, folder)
        array = work / "images.npy"
        np.save(array, x)
        print(
            f"model {model}: {manifest['training']['architecture']}, m = {m}; "
            f"{len(x):,} CIFAR-10 images, batch {batch}, {os.cpu_count()} CPU cores",
            flush=True,
        )
        figures: dict[str, tuple[float, int | None]] = {
            "raw onnxruntime, fused graph, array in memory (the limit)": (
                raw_rows_per_s(folder, x, batch),
                None,
            ),
            f"naive loop of {m} sessions, array in memory": (
                naive_rows_per_s(folder, x, batch),
                None,
            ),
        }
        seconds, rss = scorer(repository, model, array, work / "a.parquet", batch)
        figures["python -m server.score, pre-decoded .npy"] = (len(x) / seconds, rss)
        seconds, rss = scorer(repository, model, images, work / "b.parquet", batch)
        figures["python -m server.score, JPEG .zip"] = (len(x) / seconds, rss)

    print("\n| path | rows/s | peak RSS (MiB) |\n|---|---:|---:|")
    for label, (rate, peak) in figures.items():
        print(f"| {label} | {rate:,.0f} | {peak if peak is not None else '–'} |")
    rates = [rate for rate, _ in figures.values()]
    print(
        f"\nscorer on pre-decoded input / raw: {rates[2] / rates[0]:.2f} (target ≥ 0.80)\n"
        f"JPEG time / pre-decoded time: {rates[2] / rates[3]:.2f} (target ≤ 1.5)\n"
        f"scorer on pre-decoded input / naive loop: {rates[2] / rates[1]:.2f}"
    )


if __name__ == "__main__":
    main()

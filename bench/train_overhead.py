"""What snapshots cost: the same training run with and without snapshotting and ONNX
export, on the embedded digits and on a CIFAR-10 subset (from ../shared, skipped
with a message where absent).

    python bench/train_overhead.py [--repeats 3] [--cifar-images 5000] [--cifar-epochs 10]

Every run is a fresh `python -m trainer` process, as a user runs it (so each pays the
exporter's one-time start-up). Printed per configuration:
- the training-loop wall time without and with snapshots (median over repeats, runs
  alternating) and their ratio; on a shared 2-core machine this difference is noisy;
- the time the run itself measured inside its snapshots (copying the weights, ONNX
  export, onnxruntime verification, atomic writes) as a share of the rest of the loop:
  the precise figure. Both runs validate every epoch; a snapshot at an epoch end reuses
  that evaluation, so neither figure counts validation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.data import load_image_folder, stratified_split  # noqa: E402

CIFAR_ZIP = ROOT.parent / "shared" / "data" / "cifar10" / "train.zip"


def cifar_subset(images: int, out: Path) -> Path | None:
    if not CIFAR_ZIP.is_file():
        print(
            f"CIFAR-10 subset: skipped ({CIFAR_ZIP} not found; it ships beside the repository only)"
        )
        return None
    data = load_image_folder(CIFAR_ZIP, None, None)
    _, keep = stratified_split(data.y, images / len(data.y), seed=0)
    path = out / "cifar_subset.npz"
    np.savez(path, x=data.x[keep].numpy(), y=data.y[keep].numpy(), classes=np.array(data.classes))
    return path


def timed_run(args: list[str], repo: Path, snapshots: bool) -> tuple[float, float, float]:
    """(training-loop seconds, of which spent in snapshots, seconds of the SWA pass after
    the loop) of one fresh process."""
    flags = ["--repository", str(repo), "--name", "bench", "--overwrite", "--quiet", *args]
    if not snapshots:
        flags.append("--no-snapshots")
    subprocess.run(
        [sys.executable, "-m", "trainer", *flags], cwd=ROOT, check=True, stdout=subprocess.DEVNULL
    )
    report = json.loads((repo / "bench" / "report.json").read_text())
    swa = report.get("swa", {}).get("seconds", 0.0)
    return report["timing"]["train_seconds"], report["timing"]["snapshot_seconds"], swa


def measure(label: str, args: list[str], repeats: int, repo: Path) -> dict[str, float | str]:
    plain, snap, share, swa_share = [], [], [], []
    for _ in range(repeats):
        plain.append(timed_run(args, repo, snapshots=False)[0])
        seconds, in_snapshots, swa = timed_run(args, repo, snapshots=True)
        snap.append(seconds)
        share.append(in_snapshots / (seconds - in_snapshots))
        swa_share.append(swa / (seconds - in_snapshots))
    return {
        "run": label,
        "without": statistics.median(plain),
        "with": statistics.median(snap),
        "share": statistics.median(share),
        "swa": statistics.median(swa_share),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cifar-repeats", type=int, default=1)
    parser.add_argument("--cifar-images", type=int, default=5000)
    parser.add_argument("--cifar-epochs", type=int, default=10)
    opts = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        digits = ["--dataset", "digits", "--epochs", "50", "--cycles", "5"]
        rows.append(measure("digits, mlp, 50 epochs, 5 snapshots", digits, opts.repeats, repo))
        fge = ["--dataset", "digits", "--schedule", "fge", "--epochs", "50", "--swa"]
        fge += ["--fge-fraction", "0.8", "--cycle-epochs", "2"]
        label = "digits, mlp, 50 epochs, FGE (5 snapshots) + SWA"
        rows.append(measure(label, fge, opts.repeats, repo))
        subset = cifar_subset(opts.cifar_images, repo)
        if subset is not None:
            args = [
                "--dataset",
                "npz",
                "--data",
                str(subset),
                "--arch",
                "resnet8",
                "--epochs",
                str(opts.cifar_epochs),
                "--cycles",
                "5",
                "--batch-size",
                "128",
            ]
            size = f"{opts.cifar_images} images, {opts.cifar_epochs} epochs"
            label = f"CIFAR-10 {size}, resnet8, 5 snapshots"
            rows.append(measure(label, args, opts.cifar_repeats, repo))
            base = args[: args.index("--cycles")] + args[args.index("--cycles") + 2 :]
            fge = [*base, "--schedule", "fge", "--fge-fraction", "0.6", "--cycle-epochs", "2"]
            fge.append("--swa")
            label = f"CIFAR-10 {size}, resnet8, FGE + SWA"
            rows.append(measure(label, fge, opts.cifar_repeats, repo))
    print(
        "| run | loop without snapshots (s) | loop with snapshots (s) | wall-clock ratio "
        "| time in snapshots / rest of loop | SWA pass / rest of loop |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        ratio = float(r["with"]) / float(r["without"])
        print(
            f"| {r['run']} | {r['without']:.2f} | {r['with']:.2f} | {ratio:.3f} "
            f"| {100 * float(r['share']):.1f}% | {100 * float(r['swa']):.1f}% |"
        )


if __name__ == "__main__":
    main()

"""CIFAR-10: does the snapshot ensemble beat a single model at the same training budget?

    python -m experiments.cifar10 --preset cpu     # about two hours on a 2-core CPU
    python -m experiments.cifar10 --preset full    # a paper-like budget, for a GPU

Trains, at the same budget B and with the same network, data, augmentation, batch size
and weight decay: the single model (step schedule) whose evenly spaced snapshots also
form the NoCycle ensemble; Snapshot Ensembles with α0 = 0.1 and 0.2; SGDR with
T_mult = 2; the SingleCycle ensemble (M models of B/M epochs from independent
initialisations); and the Lipschitz adaptive rate. Every run goes through the normal
trainer (`python -m trainer`); the α0 = 0.2 Snapshot Ensemble is written into
`models/cifar10/`, the ensemble the server and the benchmarks serve.

Each method's finished result is kept in `experiments/results/<preset>/<method>.json`
and skipped when the command runs again; an interrupted training run is resumed. The
held-out split is the trainer's fixed-seed 10% (5,000 images); its predictions are made
by the served ONNX snapshots through the server's runtime.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cifar10" / "train.zip"
RESULTS = ROOT / "experiments" / "results"
WORK = ROOT / ".cache" / "experiments"  # the baselines' model folders (not committed)
SERVED_REPOSITORY = ROOT / "models"
SERVED_NAME = "cifar10"


@dataclass(frozen=True)
class Preset:
    arch: str
    epochs: int  # B
    cycles: int  # M
    sgdr_t0: int  # periods t0, 2·t0, 4·t0, ... fill exactly B
    batch_size: int = 128
    weight_decay: float = 1e-4
    device: str = "auto"


PRESETS = {
    # ResNet-8 at ~45 s per epoch on 2 CPU cores; B = 21 = 3·(1 + 2 + 4) lets every
    # method, SGDR with T_mult = 2 included, use exactly the same budget with M = 3.
    "cpu": Preset(arch="resnet8", epochs=21, cycles=3, sgdr_t0=3),
    # Paper-like: ResNet-32, B = 210 = 14·(1 + 2 + 4 + 8), M = 6 cycles of 35 epochs.
    "full": Preset(arch="resnet32", epochs=210, cycles=6, sgdr_t0=14),
}


@dataclass(frozen=True)
class Run:
    name: str
    args: tuple[str, ...]
    repository: Path | None = None  # default: the experiment's work folder


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    runs: tuple[Run, ...]
    # Members of the ensemble: the snapshots of the single run, or the last snapshot of each run.
    members_from: str = "snapshots"  # or "runs"
    single_label: str = "final single model"
    extra: dict[str, Any] = field(default_factory=dict)


def methods(preset: Preset, preset_name: str) -> list[Method]:
    b, m = preset.epochs, preset.cycles

    def common(epochs: int) -> tuple[str, ...]:
        return (
            "--dataset",
            "imagefolder",
            "--data",
            str(DATA),
            "--arch",
            preset.arch,
            "--epochs",
            str(epochs),
            "--batch-size",
            str(preset.batch_size),
            "--weight-decay",
            str(preset.weight_decay),
            "--device",
            preset.device,
        )

    def schedule(*args: str) -> tuple[str, ...]:
        return (*common(b), *args)

    served = SERVED_REPOSITORY if preset_name == "cpu" else None
    return [
        Method(
            "step",
            "Single model (step) / NoCycle snapshots",
            (Run("step", schedule("--schedule", "step", "--lr", "0.1", "--cycles", str(m))),),
        ),
        Method(
            "snapshot_a0.1",
            "Snapshot Ensemble α0 = 0.1",
            (
                Run(
                    "snapshot_a0.1",
                    schedule("--schedule", "snapshot", "--lr", "0.1", "--cycles", str(m)),
                ),
            ),
        ),
        Method(
            "snapshot_a0.2",
            "Snapshot Ensemble α0 = 0.2",
            (
                Run(
                    SERVED_NAME if served else "snapshot_a0.2",
                    schedule("--schedule", "snapshot", "--lr", "0.2", "--cycles", str(m)),
                    served,
                ),
            ),
        ),
        Method(
            "sgdr",
            "SGDR T_mult = 2",
            (
                Run(
                    "sgdr",
                    schedule(
                        "--schedule",
                        "sgdr",
                        "--lr",
                        "0.1",
                        "--t0",
                        str(preset.sgdr_t0),
                        "--t-mult",
                        "2",
                    ),
                ),
            ),
        ),
        Method(
            "single_cycle",
            f"SingleCycle ensemble ({m} models × {b // m} epochs)",
            tuple(
                Run(
                    f"single_cycle_{i}",
                    (
                        *common(b // m),
                        "--schedule",
                        "snapshot",
                        "--lr",
                        "0.2",
                        "--cycles",
                        "1",
                        "--seed",
                        str(i),
                    ),
                )
                for i in range(m)
            ),
            members_from="runs",
            single_label=f"one model of {b // m} epochs",
        ),
        Method(
            "lipschitz",
            "Lipschitz adaptive rate (single model)",
            (Run("lipschitz", schedule("--schedule", "lipschitz", "--cycles", str(m))),),
        ),
    ]


def train_run(run: Run, preset_name: str, log_dir: Path) -> dict[str, Any]:
    repository = run.repository or WORK / preset_name
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{run.name}.log"
    began = time.perf_counter()
    with open(log, "a") as handle:
        code = subprocess.run(
            [
                sys.executable,
                "-m",
                "trainer",
                *run.args,
                "--repository",
                str(repository),
                "--name",
                run.name,
                "--skip-if-exists",
            ],
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            check=False,
        ).returncode
    if code != 0:
        raise SystemExit(f"training {run.name} failed (exit {code}); see {log}")
    folder = repository / run.name
    report = json.loads((folder / "report.json").read_text())
    return {
        "name": run.name,
        "folder": str(folder.relative_to(ROOT)),
        # The data path as seen from the repository, not this machine's absolute path.
        "args": [os.path.relpath(a, ROOT) if a == str(DATA) else a for a in run.args],
        "wall_seconds_this_sitting": time.perf_counter() - began,
        "train_seconds": report["timing"]["train_seconds"],  # across sittings
        "epochs": report["epochs"],
    }


def member_probabilities(folders: list[Path], members_from: str, x: np.ndarray) -> np.ndarray:
    """[M, N, K] softmax of the members on x, through the server's runtime."""
    from server.runtime import EnsembleRuntime
    from server.settings import RuntimeSettings

    settings = RuntimeSettings(providers="auto")
    outputs = []
    for folder in folders:
        runtime = EnsembleRuntime.load(folder, m=None, settings=settings)
        members = (
            runtime.predict_members(x)
            if members_from == "snapshots"
            else runtime.predict_members(x, m=1)
        )
        outputs.append(members)
    return np.concatenate(outputs, axis=0)


def validation_split() -> tuple[np.ndarray, np.ndarray]:
    from trainer.data import load_image_folder, stratified_split

    data = load_image_folder(DATA, None, None)
    _, val = stratified_split(data.y, 0.1, seed=0)
    return data.x[val].numpy().astype(np.float32), data.y[val].numpy()


def evaluate(
    method: Method, runs: list[dict[str, Any]], x: np.ndarray, y: np.ndarray
) -> dict[str, Any]:
    from snapens.evaluation import evaluate_members, reliability

    folders = [ROOT / r["folder"] for r in runs]
    members = member_probabilities(folders, method.members_from, x)
    by_m = evaluate_members(members, y)
    final = members[-1]
    single = evaluate_members(final[None], y)[0]
    return {
        "single": {k: v for k, v in single.items() if k in ("error", "nll", "ece", "brier")},
        "by_m": by_m,
        "reliability": {
            "single": reliability(final, y),
            "ensemble": reliability(members.mean(axis=0), y),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument(
        "--stage",
        choices=["all", "train"],
        default="all",
        help="train only, or train (skipping what is done), evaluate and report",
    )
    opts = parser.parse_args(argv)
    if not DATA.is_file():
        print(
            f"skipped: the CIFAR-10 training set {DATA} is not here "
            "(it ships beside the repository only)"
        )
        return 0
    preset = PRESETS[opts.preset]
    out = RESULTS / opts.preset
    out.mkdir(parents=True, exist_ok=True)
    val = validation_split() if opts.stage == "all" else None
    for method in methods(preset, opts.preset):
        target = out / f"{method.key}.json"
        if target.is_file():
            print(f"{method.key}: done earlier ({target.relative_to(ROOT)})")
            continue
        print(f"{method.key}: training {len(method.runs)} run(s)", flush=True)
        runs = [train_run(run, opts.preset, WORK / opts.preset / "logs") for run in method.runs]
        if val is None:
            continue
        result = {
            "method": method.key,
            "label": method.label,
            "single_label": method.single_label,
            "preset": opts.preset,
            "preset_settings": preset.__dict__,
            "runs": runs,
            **evaluate(method, runs, *val),
        }
        target.write_text(json.dumps(result, indent=1) + "\n")
        print(
            f"{method.key}: error {result['by_m'][-1]['error']:.4f} "
            f"(ensemble of {len(result['by_m'])}), "
            f"single {result['single']['error']:.4f}",
            flush=True,
        )
    if val is not None:
        from experiments.report import write_summary

        write_summary(opts.preset, out, [m.key for m in methods(preset, opts.preset)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

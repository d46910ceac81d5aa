"""CIFAR-10: when does a snapshot ensemble beat a single model at the same budget?

    python -m experiments.cifar10 --preset cpu-small   # data-limited: 5,000 images, B = 200
    python -m experiments.cifar10 --preset cpu         # compute-limited: 45,000, B = 21
    python -m experiments.cifar10 --preset full        # a paper-like budget, for a GPU

Each preset trains, at the same budget B and with the same network, data, augmentation,
batch size and weight decay, with seeds 0, 1 and 2 (`cpu-small`: 0 to 4): the single
model over B with the step schedule and with one cosine decay (their evenly spaced
snapshots also form NoCycle ensembles), the Snapshot Ensemble with α0 = 0.2, and FGE
with its SWA model. The compute-limited preset adds, with one seed, α0 = 0.1, SGDR with
T_mult = 2, the SingleCycle ensemble (M models of B/M epochs from independent
initialisations) and the Lipschitz adaptive rate. Every run goes through the normal
trainer (`python -m trainer`).

Every figure is taken on the held-out split (the trainer's fixed-seed 10%, 5,000 images)
through the server's runtime, as trained and as served: temperature-scaled, with the
served m, both cross-fitted on halves of the split (experiments.crossfit), so nothing is
tuned on the images it is scored on. Each finished run's result is kept in
`experiments/results/<preset>/<method>[_s<seed>].json` and skipped when the command runs
again; an interrupted training run is resumed. After the data-limited preset, the best
ensemble (lowest mean NLL as served) is copied into `models/cifar10/`, the ensemble the
server and the benchmarks serve.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
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
    cycles: int  # M of the snapshot schedule
    sgdr_t0: int | None  # periods t0, 2·t0, 4·t0, ... fill exactly B (None: no SGDR run)
    train_subset: int | None = None  # a fixed stratified subset of the training split
    fge_fraction: float = 0.7
    cycle_epochs: int = 2  # FGE
    seeds: tuple[int, ...] = (0, 1, 2)  # for step, cosine, snapshot α0 = 0.2 and FGE
    extra_methods: bool = True  # SGDR, α0 = 0.1, SingleCycle and Lipschitz (one seed)
    batch_size: int = 128
    weight_decay: float = 1e-4
    device: str = "auto"
    eval_every: int = 1  # validation every N epochs (the weights do not depend on it)


PRESETS = {
    # Compute-limited: ResNet-8 at ~45 s per epoch on 2 CPU cores over 45,000 images;
    # B = 21 = 3·(1 + 2 + 4) lets every method, SGDR with T_mult = 2 included, use the same
    # budget with M = 3; FGE: 15 epochs of cosine, then three 2-epoch cycles.
    "cpu": Preset(arch="resnet8", epochs=21, cycles=3, sgdr_t0=3),
    # Data-limited, the same compute: a fixed 5,000-image training subset (the same
    # 5,000-image held-out split) for B = 200 epochs, M = 5 cycles of 40 as in the paper;
    # FGE: 140 epochs of cosine, then fifteen 4-epoch cycles. Members converge here.
    "cpu-small": Preset(
        arch="resnet8",
        epochs=200,
        cycles=5,
        sgdr_t0=None,
        train_subset=5000,
        cycle_epochs=4,
        extra_methods=False,
        # Validating 5,000 images every epoch was 44% of the time of a 5,000-image epoch.
        eval_every=5,
        # With three, the best ensemble's and the step model's ECEs differed by less than
        # a standard error: five seeds for every method.
        seeds=(0, 1, 2, 3, 4),
    ),
    # Paper-like: ResNet-32, B = 210 = 14·(1 + 2 + 4 + 8), M = 6 cycles of 35 epochs; FGE:
    # 168 epochs of cosine, then twenty-one 2-epoch cycles.
    "full": Preset(arch="resnet32", epochs=210, cycles=6, sgdr_t0=14, fge_fraction=0.8),
}


@dataclass(frozen=True)
class Run:
    name: str
    args: tuple[str, ...]
    repository: Path | None = None  # default: the experiment's work folder


@dataclass(frozen=True)
class Method:
    key: str  # the result's file name: the method, and _s<seed> past seed 0
    base: str  # the method, whatever the seed (the summary averages over seeds)
    label: str
    runs: tuple[Run, ...]
    seed: int = 0
    # Members of the ensemble: the snapshots of the single run, or the last snapshot of each run.
    members_from: str = "snapshots"  # or "runs"
    single_label: str = "final single model"
    swa: bool = False  # the run also wrote <name>-swa


def methods(preset: Preset, preset_name: str) -> list[Method]:
    b, m = preset.epochs, preset.cycles

    def common(epochs: int, seed: int) -> tuple[str, ...]:
        subset = ("--train-subset", str(preset.train_subset)) if preset.train_subset else ()
        every = ("--eval-every", str(preset.eval_every)) if preset.eval_every != 1 else ()
        return (
            "--dataset",
            "imagefolder",
            "--data",
            str(DATA),
            "--val-fraction",
            "0.1",
            *subset,
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
            "--seed",
            str(seed),
            *every,
        )

    def seeded(base: str, label: str, seed: int, *args: str, swa: bool = False) -> Method:
        key = base if seed == 0 else f"{base}_s{seed}"
        run = Run(key, (*common(b, seed), *args))
        return Method(key, base, label, (run,), seed=seed, swa=swa)

    found: list[Method] = []
    for seed in preset.seeds:
        found += [
            seeded(
                "step",
                "Single model (step) / NoCycle snapshots",
                seed,
                *("--schedule", "step", "--lr", "0.1", "--cycles", str(m)),
            ),
            seeded(
                "cosine",
                "Single model (cosine over B) / NoCycle snapshots",
                seed,
                *("--schedule", "cosine", "--lr", "0.1", "--cycles", str(m)),
            ),
            seeded(
                "snapshot_a0.2",
                "Snapshot Ensemble α0 = 0.2",
                seed,
                *("--schedule", "snapshot", "--lr", "0.2", "--cycles", str(m)),
            ),
            seeded(
                "fge",
                "FGE (its SWA model: fge_swa)",
                seed,
                *("--schedule", "fge", "--lr", "0.1", "--swa"),
                *("--fge-fraction", str(preset.fge_fraction)),
                *("--cycle-epochs", str(preset.cycle_epochs)),
                swa=True,
            ),
        ]
    if not preset.extra_methods:
        return found
    assert preset.sgdr_t0 is not None
    found += [
        seeded(
            "snapshot_a0.1",
            "Snapshot Ensemble α0 = 0.1",
            0,
            *("--schedule", "snapshot", "--lr", "0.1", "--cycles", str(m)),
        ),
        seeded(
            "sgdr",
            "SGDR T_mult = 2",
            0,
            *("--schedule", "sgdr", "--lr", "0.1", "--t0", str(preset.sgdr_t0), "--t-mult", "2"),
        ),
        Method(
            "single_cycle",
            "single_cycle",
            f"SingleCycle ensemble ({m} models × {b // m} epochs)",
            tuple(
                Run(
                    f"single_cycle_{i}",
                    (*common(b // m, i), "--schedule", "snapshot", "--lr", "0.2", "--cycles", "1"),
                )
                for i in range(m)
            ),
            members_from="runs",
            single_label=f"one model of {b // m} epochs",
        ),
        seeded(
            "lipschitz",
            "Lipschitz adaptive rate (single model)",
            0,
            *("--schedule", "lipschitz", "--cycles", str(m)),
        ),
    ]
    return found


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


def member_logits(folders: list[Path], members_from: str, x: np.ndarray) -> np.ndarray:
    """[M, N, K] logits (up to a constant per input) of the members on x, through the
    server's runtime; every snapshot of a folder, at temperature 1."""
    from experiments.crossfit import logits_of
    from server.runtime import EnsembleRuntime
    from server.settings import RuntimeSettings

    settings = RuntimeSettings(providers="auto")
    outputs = []
    for folder in folders:
        runtime = EnsembleRuntime.load(folder, m=None, settings=settings, every_snapshot=True)
        m = None if members_from == "snapshots" else 1
        outputs.append(logits_of(runtime.predict_members(x, m, trained=True)))
    return np.concatenate(outputs, axis=0)


def swa_folder(folder: Path) -> Path:
    """The SWA model that a run with --swa wrote beside its own folder."""
    from trainer.swa import swa_name

    return folder.with_name(swa_name(folder.name))


def validation_split() -> tuple[np.ndarray, np.ndarray]:
    """The trainer's held-out split (10%, split seed 0): a subset of the training split
    (--train-subset) leaves it as it is."""
    from trainer.data import load_image_folder, stratified_split

    data = load_image_folder(DATA, None, None)
    _, val = stratified_split(data.y, 0.1, seed=0)
    return data.x[val].numpy().astype(np.float32), data.y[val].numpy()


def _figures(served: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in served.items() if k != "probabilities"}


def evaluate(
    method: Method, runs: list[dict[str, Any]], x: np.ndarray, y: np.ndarray
) -> dict[str, Any]:
    """As trained (temperature 1: the last member alone and every last-m ensemble) and as
    served (the temperature and the served m cross-fitted on halves of the split)."""
    from experiments.crossfit import cross_fitted
    from snapens.ensemble import softmax
    from snapens.evaluation import evaluate_members, reliability

    folders = [ROOT / r["folder"] for r in runs]
    logits = member_logits(folders, method.members_from, x)
    probs = softmax(logits)
    single = evaluate_members(probs[-1:], y)[0]
    served = cross_fitted(logits, y)
    result: dict[str, Any] = {
        "single": {k: single[k] for k in ("error", "nll", "ece", "brier")},
        "by_m": evaluate_members(probs, y),
        "calibrated": {
            "served": _figures(served),
            "single": _figures(cross_fitted(logits[-1:], y, single=True)),
        },
        "reliability": {
            "single": reliability(probs[-1], y),
            "ensemble": reliability(served["probabilities"], y),
        },
    }
    if method.swa:
        swa = member_logits([swa_folder(folders[0])], "snapshots", x)
        raw = evaluate_members(softmax(swa), y)[0]
        result["swa"] = {
            "single": {k: raw[k] for k in ("error", "nll", "ece", "brier")},
            "calibrated": _figures(cross_fitted(swa, y, single=True)),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument(
        "--stage",
        choices=["all", "train", "evaluate"],
        default="all",
        help="train only; train (skipping what is done), evaluate and report; or evaluate "
        "the finished results again from their model folders (keeping their training "
        "records) and report",
    )
    parser.add_argument(
        "--methods",
        help="comma-separated results to run now, in this order (e.g. cosine,fge_s1; "
        "fge* for every seed of a method); default: all, in the preset's order",
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
    val = validation_split() if opts.stage != "train" else None
    for method in selected(methods(preset, opts.preset), opts.methods):
        target = out / f"{method.key}.json"
        earlier: dict[str, Any] | None = None
        if opts.stage == "evaluate":
            earlier = finished_result(method, target)
            if earlier is None:
                continue
            runs = earlier["runs"]
        elif target.is_file():
            print(f"{method.key}: done earlier ({target.relative_to(ROOT)})")
            continue
        else:
            print(f"{method.key}: training {len(method.runs)} run(s)", flush=True)
            runs = [train_run(run, opts.preset, WORK / opts.preset / "logs") for run in method.runs]
        if val is None:
            continue
        result = {
            "method": method.key,
            "base": method.base,
            "seed": method.seed,
            "label": method.label,
            "single_label": method.single_label,
            "preset": opts.preset,
            "preset_settings": preset.__dict__,
            "runs": runs,
            **evaluate(method, runs, *val),
        }
        if earlier is not None and STALE_SWA in earlier:
            # An SWA model from the trainer that recomputed batch-norm statistics on
            # unaugmented images stays marked as such (the summary leaves it out).
            result[STALE_SWA] = {"note": earlier[STALE_SWA]["note"], **result.pop("swa")}
        target.write_text(json.dumps(result, indent=1) + "\n")
        served = result["calibrated"]["served"]
        print(
            f"{method.key}: served error {served['error']:.4f} NLL {served['nll']:.4f} "
            f"(temperature-scaled, m {[f['m'] for f in served['folds']]}), "
            f"single {result['single']['error']:.4f}",
            flush=True,
        )
    if val is not None:
        from experiments.report import write_summary

        summary = write_summary(opts.preset, out, [m.key for m in methods(preset, opts.preset)])
        if opts.preset == SERVED_PRESET and summary.get("best"):
            install_served(opts.preset, summary["best"])
    return 0


SERVED_PRESET = "cpu-small"


STALE_SWA = "swa_unaugmented_bn"


def finished_result(method: Method, target: Path) -> dict[str, Any] | None:
    """A finished result whose model folders are all here, to evaluate again (its
    training records are kept); None (saying why) otherwise."""
    if not target.is_file():
        print(f"{method.key}: not finished, nothing to evaluate again")
        return None
    result: dict[str, Any] = json.loads(target.read_text())
    folders = [ROOT / r["folder"] for r in result["runs"]]
    if method.swa:
        folders.append(swa_folder(folders[0]))
    missing = [f.name for f in folders if not (f / "manifest.json").is_file()]
    if missing:
        print(f"{method.key}: model folder(s) {', '.join(missing)} not here: left as it was")
        return None
    print(f"{method.key}: evaluating again", flush=True)
    return result


def selected(found: list[Method], names: str | None) -> list[Method]:
    """The methods named, in the order named (a result name, e.g. `fge` or `fge_s1`, is
    that one run; `fge*` is every seed of it); all of them when none is."""
    if names is None:
        return found
    chosen: list[Method] = []
    for name in (n.strip() for n in names.split(",")):
        if name.endswith("*"):
            matches = [m for m in found if m.base == name[:-1] and m not in chosen]
        else:
            matches = [m for m in found if m.key == name and m not in chosen]
        if not matches:
            known = ", ".join(sorted({m.base for m in found}))
            raise SystemExit(f"--methods: no method {name!r} in this preset ({known})")
        chosen += matches
    return chosen


def install_served(preset_name: str, key: str) -> None:
    """Copy the model folder of method `key`, seed 0, into the served repository as
    `cifar10` (written beside it, then renamed into place): the same seed whatever other
    seeds' folders are here."""
    import shutil

    from snapens.manifest import read_manifest, write_manifest

    source = WORK / preset_name / key
    if not (source / "manifest.json").is_file():
        print(f"served: the model folder of {key} (seed 0) is not here (trained elsewhere)")
        return
    target = SERVED_REPOSITORY / SERVED_NAME
    staging = SERVED_REPOSITORY / f".{SERVED_NAME}.new"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns("checkpoint"))
    write_manifest(staging, read_manifest(staging).model_copy(update={"name": SERVED_NAME}))
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    print(f"served: {source.name} of the {preset_name} preset is now {target.relative_to(ROOT)}")


if __name__ == "__main__":
    raise SystemExit(main())

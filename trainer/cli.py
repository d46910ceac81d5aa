"""`python -m trainer`: train an ensemble and write it into the model repository."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from snapens.console import console
from snapens.folder import FolderError, ModelFolder
from snapens.manifest import ManifestError, read_manifest
from snapens.summary import summarize
from trainer.config import (
    Augment,
    DatasetKind,
    Schedule,
    TrainConfig,
    build_config,
    load_config_file,
)
from trainer.errors import UserError
from trainer.nets import ARCH_HELP

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Train one network with a cyclic learning rate and keep a snapshot per cycle "
        "as an ONNX ensemble member in the model repository.",
        argument_default=argparse.SUPPRESS,  # only flags given on the command line override
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        choices=[str(kind) for kind in DatasetKind],
        help="digits (embedded, default), imagefolder (folder or .zip of class folders), npz",
    )
    data.add_argument("--data", type=Path, help="dataset path for imagefolder and npz")
    data.add_argument("--val-fraction", type=float, help="held-out share per class (default 0.1)")
    data.add_argument("--split-seed", type=int, help="seed of the validation split (default 0)")
    data.add_argument("--image-size", type=int, help="resize images to this square size")
    data.add_argument("--cache-dir", type=Path, help="where decoded image folders are cached")
    data.add_argument(
        "--augment",
        choices=[str(augment) for augment in Augment],
        help="auto: random crop + flip for RGB images of 16px and more",
    )

    model = parser.add_argument_group("network and optimisation")
    model.add_argument(
        "--arch", help=f"{ARCH_HELP} (default: mlp for 8x8 inputs, resnet20 otherwise)"
    )
    model.add_argument(
        "--schedule",
        choices=[str(schedule) for schedule in Schedule],
        help="learning-rate schedule (default snapshot)",
    )
    model.add_argument(
        "--cycles", type=int, help="M: snapshots; cycles of sgdr/snapshot (default 5)"
    )
    model.add_argument("--epochs", type=int, help="B: training budget in epochs (default 50)")
    model.add_argument("--lr", type=float, help="α0 / η_max / initial rate (default 0.1)")
    model.add_argument("--lr-min", type=float, help="sgdr η_min (default 0)")
    model.add_argument(
        "--t0", type=int, help="sgdr first period in epochs (default: fills the budget)"
    )
    model.add_argument("--t-mult", type=float, help="sgdr period multiplier, a whole number >= 1")
    model.add_argument("--warmup-epochs", type=int, help="linear warmup before the cycles")
    model.add_argument("--batch-size", type=int, help="(default 64)")
    model.add_argument("--momentum", type=float, help="(default 0.9; 0 for lipschitz)")
    model.add_argument("--no-nesterov", dest="nesterov", action="store_false")
    model.add_argument("--weight-decay", type=float, help="(default 1e-4)")
    model.add_argument(
        "--plateau-patience", type=int, help="epochs without improvement (default 5)"
    )
    model.add_argument("--plateau-factor", type=float, help="(default 0.1)")
    model.add_argument("--eval-batch-size", type=int)

    out = parser.add_argument_group("output")
    out.add_argument("--repository", type=Path, help="model repository folder (default models)")
    out.add_argument("--name", help="model folder name (default: the dataset's name)")
    out.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    out.add_argument("--resume", action="store_true", help="continue an interrupted run")
    out.add_argument(
        "--skip-if-exists",
        action="store_true",
        help="if the model is complete, print its summary; if interrupted, resume it",
    )
    out.add_argument(
        "--no-snapshots",
        dest="snapshots",
        action="store_false",
        help="train without snapshots (only to measure what they cost)",
    )

    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int)
    run.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    run.add_argument("--quiet", action="store_true", help="print only errors and the summary")
    run.add_argument("--config", type=Path, help="a .json or .toml file of these settings")
    return parser


def resolve_config(flags: dict[str, Any]) -> TrainConfig:
    """Config file, then flags; with --resume, the stored settings underneath both."""
    file_values = load_config_file(flags["config"]) if "config" in flags else {}
    cfg = build_config(file_values, flags)
    folder = ModelFolder(cfg.repository, cfg.model_name)
    if cfg.skip_if_exists and not cfg.overwrite and folder.exists():
        try:
            manifest = read_manifest(folder.path)
        except ManifestError:
            manifest = None
        if manifest is not None and manifest.state != "complete":
            if folder.checkpoint_path.is_file():
                cfg = cfg.model_copy(update={"resume": True})
            elif not manifest.snapshots:
                # Stopped before its first checkpoint: nothing to keep, start it again.
                cfg = cfg.model_copy(update={"overwrite": True})
    if cfg.resume and folder.checkpoint_path.is_file():
        from trainer.checkpoint import load_checkpoint

        stored = load_checkpoint(folder.checkpoint_path)["config"]
        cfg = build_config({**stored, **file_values}, {**flags, "resume": True})
    return cfg


def print_summary(model_dir: Path) -> None:
    console().print(summarize(model_dir, read_manifest(model_dir)))


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = resolve_config(args)
        folder = ModelFolder(cfg.repository, cfg.model_name)
        if cfg.skip_if_exists and not cfg.resume and not cfg.overwrite:
            try:
                if read_manifest(folder.path).state == "complete":
                    print_summary(folder.path)
                    return 0
            except ManifestError:
                pass

        # torch loads only once the arguments are known to be sound.
        from trainer.runtime import runtime
        from trainer.train import train

        with runtime(cfg.device) as rt:
            result = train(cfg, rt)
        if result is not None:
            print_summary(result.folder.path)
        return 0
    except (UserError, FolderError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: continue this run with --resume", file=sys.stderr)
        return 130

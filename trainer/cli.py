"""`python -m trainer`: train an ensemble and write it into the model repository."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from snapens.console import console
from snapens.flags import HelpFormatter, add_grouped_flags
from snapens.folder import FolderError, ModelFolder
from snapens.manifest import ManifestError, read_manifest
from snapens.summary import summarize
from trainer.config import TrainConfig
from trainer.config_file import build_config, check_settings_apply, load_config_file
from trainer.errors import UserError
from trainer.nets import ARCH_HELP

EXIT_USAGE = 2


# TrainConfig fields without a flag (each field is a flag unless listed here).
NO_FLAG: frozenset[str] = frozenset()


def build_parser() -> argparse.ArgumentParser:
    """A flag per TrainConfig field, generated: its help is the field's description and
    default. Values stay strings for TrainConfig to validate (a bad one is one line naming
    its flag); a flag not given is left out, so the config file's value applies."""
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        usage="%(prog)s [--flag VALUE ...]",
        description="Train one network with a cyclic learning rate and keep a snapshot per cycle "
        "as an ONNX ensemble member in the model repository. Every flag is also a setting of "
        "a --config file; flags given override it.",
        formatter_class=HelpFormatter,
    )
    add_grouped_flags(
        parser, TrainConfig, exclude=NO_FLAG, help_extra={"arch": f"one of {ARCH_HELP}"}
    )
    return parser


def resolve_config(flags: dict[str, Any]) -> TrainConfig:
    """Config file, then flags; with --resume, the stored settings underneath both."""
    file_values = load_config_file(Path(flags["config"])) if "config" in flags else {}
    cfg = build_config(file_values, flags)
    check_settings_apply(cfg, set(file_values) | set(flags))
    folder = ModelFolder(cfg.repository, cfg.model_name)
    if cfg.skip_if_exists and not cfg.overwrite and folder.exists():
        try:
            manifest = read_manifest(folder.path)
        except ManifestError:
            manifest = None
        if manifest is not None and manifest.state != "complete":
            if folder.checkpoint_path.is_file():
                cfg = cfg.model_copy(update={"resume": True})
            else:
                # Stopped before its first checkpoint (any snapshot taken mid-epoch cannot
                # be continued without one): start it again.
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
    cfg: TrainConfig | None = None
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
        checkpoint = ModelFolder(cfg.repository, cfg.model_name).checkpoint_path if cfg else None
        if checkpoint is not None and checkpoint.is_file():
            print("interrupted: continue this run with --resume", file=sys.stderr)
        else:  # stopped before its first epoch ended: nothing to resume from
            print("interrupted before the first checkpoint: start the run again", file=sys.stderr)
        return 130

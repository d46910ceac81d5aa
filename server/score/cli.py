"""`python -m server.score`: score files with a snapshot ensemble, as the server would."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from server.runtime import EnsembleRuntime, RuntimeLoadError
from server.score.local import Options, score_local
from server.score.output import Output, OutputError, Totals
from server.score.sources import InputError, open_source
from server.settings import (
    DEFAULT_REPOSITORY,
    RuntimeSettings,
    SettingsError,
    add_flags,
    settings_from_flags,
)
from snapens.console import console
from snapens.flags import HelpFormatter
from snapens.manifest import MANIFEST_FILE, ManifestError

EXIT_USAGE = 2
CHUNK_BYTES = 64 * 1024 * 1024  # a chunk's decoded input and answer come to about this much
ANSWER_COPIES = 8  # [m, N, K] float32 arrays alive at once while a chunk's answer is computed


class ScoreError(Exception):
    pass


def count(text: str) -> int:
    """A flag's whole number of at least 1 (argparse's type), else its usage error."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server.score",
        usage="%(prog)s --input PATH --output PATH [--flag VALUE ...]",
        description="Score files with a snapshot ensemble: one row per input with the ensemble's "
        "answer and how much its snapshots disagree. Output format by extension: "
        ".parquet, .csv, .jsonl.",
        formatter_class=HelpFormatter,
    )
    add = parser.add_argument
    add(
        "--input",
        type=Path,
        metavar="PATH",
        required=True,
        help="a .npy/.npz array shaped as the model's input, a folder or .zip of images, or a "
        ".parquet/.csv file with a column of image paths",
    )
    add(
        "--output",
        type=Path,
        required=True,
        metavar="PATH",
        help="where the results go (.parquet, .csv or .jsonl)",
    )
    add(
        "--repository",
        type=Path,
        default=DEFAULT_REPOSITORY,
        metavar="PATH",
        help="model repository (default: %(default)s)",
    )
    add("--model", metavar="NAME", help="model folder name (default: the repository's only model)")
    add(
        "--m",
        type=count,
        metavar="INT",
        help="snapshots to use (default: the manifest's default_m)",
    )
    add(
        "--batch-size",
        type=count,
        default=256,
        metavar="INT",
        help="rows per onnxruntime run (default: %(default)s)",
    )
    add(
        "--chunk-rows",
        type=count,
        metavar="INT",
        help="rows read, decoded and written at a time (default: ~64 MiB)",
    )
    add(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="score in this process or on Ray Data (default: %(default)s)",
    )
    add("--members", action="store_true", help="also write each snapshot's label")
    add(
        "--column",
        default="path",
        metavar="NAME",
        help="the column of image paths in a .parquet/.csv input (default: %(default)s)",
    )
    add(
        "--decode-workers",
        type=count,
        default=os.cpu_count() or 1,
        metavar="INT",
        help="image decoding threads (default: the CPUs, %(default)s here)",
    )
    add(
        "--actors",
        type=count,
        metavar="INT",
        help="Ray: scoring actors (default: one per GPU, else CPUs / 2)",
    )
    add(
        "--ray-address",
        metavar="ADDRESS",
        help="Ray: the cluster to join (default: start a local one)",
    )
    add("--overwrite", action="store_true", help="replace the output file")
    add("--resume", action="store_true", help="continue an interrupted run (local engine)")
    add("--quiet", action="store_true", help="no progress bar or summary")
    add_flags(
        parser,
        RuntimeSettings,
        "onnxruntime",
        description="As the server's; each is also an environment variable SNAPENS_<FLAG> "
        "(--max-image-pixels: SNAPENS_MAX_IMAGE_PIXELS), read from a .env file too; flags "
        "override both.",
    )
    return parser


def runtime_settings(args: argparse.Namespace) -> RuntimeSettings:
    """The runtime settings from the flags, the environment and .env."""
    try:
        return settings_from_flags(RuntimeSettings, args)
    except SettingsError as exc:
        raise ScoreError(str(exc)) from None


def resolve_model(repository: Path, name: str | None) -> Path:
    if name is not None:
        return repository / name
    if not repository.is_dir():
        raise ScoreError(f"--repository {repository}: no such folder")
    models = sorted(p.name for p in repository.iterdir() if (p / MANIFEST_FILE).is_file())
    if len(models) != 1:
        raise ScoreError(
            f"--repository {repository} holds {len(models)} models "
            f"({', '.join(models) or 'none'}): name one with --model"
        )
    return repository / models[0]


def run(args: argparse.Namespace) -> tuple[Totals, float | None, Path]:
    """Score the input; the totals, the seconds it took (None when --resume found the
    output already complete and only finished its cleanup) and the model folder."""
    if args.resume and args.engine == "ray":
        raise ScoreError("--resume works with --engine local; a Ray run starts over")
    settings = runtime_settings(args)
    model_dir = resolve_model(args.repository, args.model)
    output = Output(args.output, args.overwrite, args.resume)  # refuse a bad output before any work
    runtime = EnsembleRuntime.load(model_dir, args.m, settings)
    spec = runtime.manifest.input
    source = open_source(args.input, spec, args.column, settings.max_image_pixels)
    row_bytes = 4 * spec.channels * spec.height * spec.width
    row_bytes += ANSWER_COPIES * 4 * runtime.m * len(runtime.manifest.classes)
    chunk_rows = args.chunk_rows or max(
        args.batch_size, CHUNK_BYTES // row_bytes // args.batch_size * args.batch_size
    )
    fingerprint: dict[str, Any] = {
        **source.fingerprint(),
        "model": runtime.manifest.name,
        "snapshots": [e.sha256 for e in runtime.members],
        "members": args.members,
        "chunk_rows": chunk_rows,
    }
    if output.finished is not None:  # killed once the output was in place: finish cleaning up
        source.close()
        return output.finish_cleanup(fingerprint), None, model_dir
    started = time.perf_counter()
    done = output.start(fingerprint)
    try:
        if args.engine == "local":
            options = Options(
                args.batch_size, chunk_rows, args.members, args.decode_workers, args.quiet
            )
            score_local(source, runtime, output, options, done)
            parts = output.parts()
        else:
            from server.score.ray_engine import score_ray

            ray_dir = output.partial / "ray"
            score_ray(
                source,
                model_dir,
                args.m,
                settings,
                args.column,
                args.members,
                args.batch_size,
                args.actors,
                args.ray_address,
                ray_dir,
                args.quiet,
            )
            parts = sorted(ray_dir.glob("*.parquet"))
    finally:
        source.close()
    if not parts:
        raise InputError(f"--input {args.input}: empty input, nothing to score")
    totals = output.finish(parts, runtime.manifest.classes, [e.cycle for e in runtime.members])
    return totals, time.perf_counter() - started, model_dir


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        totals, seconds, model_dir = run(args)
    except (ScoreError, InputError, OutputError, ManifestError, RuntimeLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: finished chunks are kept; continue with --resume", file=sys.stderr)
        return 130
    if not args.quiet and seconds is None:
        console(stderr=True).print(
            f"{args.output} was already complete ({totals.rows:,} rows, {totals.failed:,} "
            "failed); removed what its interrupted run left behind"
        )
    elif not args.quiet and seconds is not None:
        scored = totals.rows - totals.failed
        console(stderr=True).print(
            f"scored {scored:,} rows ({totals.failed:,} failed) of {args.input} "
            f"with {model_dir.name} in "
            f"{seconds:.1f} s: {totals.rows / seconds:,.0f} rows/s; mean mutual information "
            f"{totals.mutual_information / max(scored, 1):.4f}, mean vote disagreement "
            f"{totals.vote_disagreement / max(scored, 1):.4f} → {args.output}"
        )
    return 0

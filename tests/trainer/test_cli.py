"""`python -m trainer` end to end: snapshots, the repository it writes, bad input."""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from snapens.atomic import sha256_file
from snapens.flags import shown_default
from snapens.manifest import read_manifest, read_snapshot
from tests.conftest import run_trainer_process
from tests.help_text import help_entries
from trainer.choices import Schedule
from trainer.nets import ARCH_HELP

TrainCli = Callable[..., tuple[int, Path]]


def test_default_digits_run_writes_five_verified_snapshots(tmp_path: Path) -> None:
    """The issue's acceptance run: snapshot schedule, 5 cycles, on the embedded digits."""
    result = run_trainer_process(
        "--dataset",
        "digits",
        "--schedule",
        "snapshot",
        "--cycles",
        "5",
        "--repository",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "digits"
    manifest = read_manifest(folder)
    assert manifest.state == "complete" and len(manifest.snapshots) == 5
    # The served m: the m >= 2 of lowest validation NLL (each at its fitted temperature).
    calibration = json.loads((folder / "report.json").read_text())["calibration"]
    assert 2 <= manifest.default_m <= 5 and manifest.default_m == calibration["default_m"]
    nll = calibration["nll_by_m"]
    assert nll[manifest.default_m - 1] == min(nll[1:])
    # The snapshots differ: some pair disagrees on the validation split.
    matrix = json.loads((folder / "report.json").read_text())["pairwise_disagreement"]["matrix"]
    assert max(max(row) for row in matrix) > 0
    budget = manifest.training["budget"]
    # Exactly one snapshot per cycle, at the cycle's last iteration.
    cycle = budget["iterations"] // 5
    assert [s.step for s in manifest.snapshots] == [cycle * i for i in range(1, 6)]
    assert [s.cycle for s in manifest.snapshots] == [1, 2, 3, 4, 5]
    for entry in manifest.snapshots:
        read_snapshot(folder, entry)
        assert entry.export_max_abs_diff <= 1e-4
        assert entry.lr < 1e-3 * 0.1  # taken at the bottom of the cosine
    report = json.loads((folder / "report.json").read_text())
    assert report["ensemble"]["m"] == 5
    assert report["ensemble"]["error"] <= report["best_single"]["error"]
    assert report["ensemble"]["at_least_as_good_as_best_single"] is True
    assert [row["m"] for row in report["ensemble_of_last"]] == [1, 2, 3, 4, 5]
    assert len(report["pairwise_disagreement"]["matrix"]) == 5
    for plot in ("learning_rate.png", "ensemble_size.png", "disagreement.png"):
        assert (folder / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ensemble of 5" in result.stdout  # the summary


def test_report_lr_curve_marks_every_snapshot(trained_digits: Path) -> None:
    report = json.loads((trained_digits / "report.json").read_text())
    curve = report["learning_rate"]
    manifest = read_manifest(trained_digits)
    assert curve["snapshot_steps"] == [s.step for s in manifest.snapshots]
    lookup = dict(zip(curve["step"], curve["lr"], strict=True))
    for snap in manifest.snapshots:
        assert lookup[float(snap.step)] == pytest.approx(snap.lr)
    assert len(report["epochs"]) == 10


@pytest.mark.parametrize("schedule", ["step", "plateau"])
def test_nocycle_baselines_snapshot_at_evenly_spaced_epochs(
    train_cli: TrainCli, schedule: str
) -> None:
    code, repo = train_cli(
        "--schedule", schedule, "--epochs", "8", "--cycles", "4", "--name", schedule
    )
    assert code == 0
    manifest = read_manifest(repo / schedule)
    ipe = manifest.training["budget"]["iterations_per_epoch"]
    assert [s.epoch for s in manifest.snapshots] == [2, 4, 6, 8]
    assert [s.step for s in manifest.snapshots] == [2 * ipe, 4 * ipe, 6 * ipe, 8 * ipe]


def test_sgdr_snapshots_at_each_restart(train_cli: TrainCli) -> None:
    code, repo = train_cli(
        "--schedule", "sgdr", "--epochs", "7", "--t0", "1", "--t-mult", "2", "--name", "s"
    )
    assert code == 0
    manifest = read_manifest(repo / "s")
    assert [s.epoch for s in manifest.snapshots] == [1, 3, 7]
    assert manifest.training["schedule"] == {
        "name": "sgdr",
        "lr": 0.1,
        "cycles": 3,
        "warmup_epochs": 0,
        "lr_min": 0.0,
        "t0_epochs": 1,
        "t_mult": 2,
    }


def test_lipschitz_single_model_trains_with_its_own_rate(train_cli: TrainCli) -> None:
    code, repo = train_cli(
        "--schedule",
        "lipschitz",
        "--arch",
        "resnet8",
        "--epochs",
        "3",
        "--cycles",
        "1",
        "--name",
        "lip",
    )
    assert code == 0
    manifest = read_manifest(repo / "lip")
    assert len(manifest.snapshots) == 1
    assert manifest.training["optimizer"]["momentum"] == 0.0
    report = json.loads((repo / "lip" / "report.json").read_text())
    rates = [epoch["lr"] for epoch in report["epochs"]]
    assert len(set(rates)) == 3 and all(r > 0.5 for r in rates)  # recomputed each epoch, 1/K-sized


def test_divergence_is_a_clear_error(
    train_cli: TrainCli, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = train_cli(
        "--schedule",
        "lipschitz",
        "--arch",
        "mlp",
        "--epochs",
        "6",
        "--cycles",
        "1",
        "--val-fraction",
        "0.1",
    )
    assert code == 2
    assert "the Lipschitz rate diverged in epoch" in capsys.readouterr().err


def test_imagefolder_zip_and_npz_datasets_train(train_cli: TrainCli, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    archive = tmp_path / "shapes.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for label, base in (("dark", 40), ("light", 200)):
            for i in range(40):
                pixels = np.clip(base + rng.normal(0, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, format="JPEG")
                zf.writestr(f"{label}/{i:04d}.jpg", buffer.getvalue())
    code, repo = train_cli(
        "--dataset",
        "imagefolder",
        "--data",
        str(archive),
        "--arch",
        "resnet8",
        "--epochs",
        "2",
        "--cycles",
        "2",
        "--batch-size",
        "16",
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert code == 0
    manifest = read_manifest(repo / "shapes")
    assert manifest.classes == ["dark", "light"]
    assert manifest.input.shape == [-1, 3, 16, 16] and manifest.input.pixel_range == (0, 255)
    assert manifest.training["dataset"]["augment"] == "crop-flip"

    npz = tmp_path / "arr.npz"
    np.savez(
        npz,
        x=rng.random((120, 6, 6)).astype(np.float32),
        y=np.repeat([0, 1, 2], 40),
        classes=np.array(["a", "b", "c"]),
    )
    code, repo = train_cli("--dataset", "npz", "--data", str(npz), "--epochs", "2", "--cycles", "2")
    assert code == 0
    assert read_manifest(repo / "arr").classes == ["a", "b", "c"]


def test_config_file_with_flags_overriding(train_cli: TrainCli, tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('schedule = "step"\nepochs = 4\ncycles = 2\nname = "fromfile"\nlr = 0.05\n')
    code, repo = train_cli("--config", str(config), "--epochs", "2")
    assert code == 0
    manifest = read_manifest(repo / "fromfile")
    assert manifest.training["schedule"]["name"] == "step"
    assert manifest.training["schedule"]["lr"] == 0.05
    assert manifest.training["budget"]["epochs"] == 2


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    return buffer.getvalue()


def _npz(path: Path, **arrays: np.ndarray) -> list[str]:
    """The flags of a run on an .npz of `arrays` (x defaults to 40 8x8 images)."""
    arrays.setdefault("x", np.zeros((40, 8, 8), dtype=np.uint8))
    np.savez(path, **arrays)
    return ["--dataset", "npz", "--data", str(path)]


def _bad_crc_zip(path: Path) -> Path:
    """A zip whose first image fails its CRC check (one byte of its data changed)."""
    _zip(path, {"a/1.png": _png(), "b/2.png": _png()})
    data = bytearray(path.read_bytes())
    start = data.index(b"IHDR")  # inside the first member's stored PNG
    data[start] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


LABELS = np.arange(40) % 2


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_INPUTS: list[tuple[str, Callable[[Path], list[str]], str]] = [
    (
        "npz of objects",
        lambda d: _npz(d / "o.npz", x=np.array([object()] * 40), y=LABELS),
        "not a readable .npz file (Object arrays cannot be loaded",
    ),
    (
        "npz of strings",
        lambda d: _npz(d / "s.npz", x=np.full((40, 8, 8), "a"), y=LABELS),
        "x must hold numbers",
    ),
    (
        "npz without images",
        lambda d: _npz(d / "e.npz", x=np.zeros((0, 8, 8), np.uint8), y=LABELS[:0]),
        "expected at least one image",
    ),
    (
        "one array, not an npz",
        lambda d: (np.save(d / "x.npy", LABELS), ["--dataset", "npz", "--data", str(d / "x.npy")])[
            1
        ],
        "one array (.npy); expected a .npz of arrays x and y",
    ),
    (
        "labels with a gap",
        lambda d: _npz(d / "g.npz", y=np.where(LABELS == 1, 100_000, 0)),
        "labels run to 100000 but 99999 of the indices below have no example",
    ),
    (
        "class names twice",
        lambda d: _npz(d / "c.npz", y=LABELS, classes=np.array(["cat", "cat"])),
        "class names must be distinct and not empty",
    ),
    (
        "class names in a table",
        lambda d: _npz(d / "t.npz", y=LABELS, classes=np.array([["a", "b"], ["c", "d"]])),
        "classes must be a list of 2 to 100000 names",
    ),
    (
        "zip member with a bad checksum",
        lambda d: ["--dataset", "imagefolder", "--data", str(_bad_crc_zip(d / "crc.zip"))],
        "cannot read image a/1.png: cannot be read from the zip (Bad CRC-32",
    ),
    (
        "missing dataset path",
        lambda d: ["--dataset", "imagefolder", "--data", str(d / "nope")],
        "no such file or folder",
    ),
    (
        "zip without class folders",
        lambda d: [
            "--dataset",
            "imagefolder",
            "--data",
            str(_zip(d / "flat.zip", {"a.png": _png()})),
        ],
        "no class folders",
    ),
    (
        "unreadable image",
        lambda d: [
            "--dataset",
            "imagefolder",
            "--data",
            str(_zip(d / "bad.zip", {"a/1.png": _png(), "b/2.png": b"garbage"})),
        ],
        "cannot read image b/2.png",
    ),
    (
        "one class",
        lambda d: [
            "--dataset",
            "imagefolder",
            "--data",
            str(_zip(d / "one.zip", {"a/1.png": _png(), "a/2.png": _png()})),
        ],
        "at least two",
    ),
    (
        "M above iterations",
        lambda d: ["--epochs", "1", "--cycles", "500"],
        "larger than the number of training iterations",
    ),
    ("T_mult below 1", lambda d: ["--schedule", "sgdr", "--t-mult", "0.5"], "T_mult must be >= 1"),
    ("zero learning rate", lambda d: ["--lr", "0"], "--lr: the learning rate must be positive"),
    (
        "negative learning rate",
        lambda d: ["--lr", "-0.1"],
        "--lr: the learning rate must be positive",
    ),
    ("unknown architecture", lambda d: ["--arch", "vgg"], "--arch vgg: unknown architecture"),
    ("MLP of no width", lambda d: ["--arch", "mlp-0x1"], "width and depth of at least 1"),
    (
        "an SGDR setting for another schedule",
        lambda d: ["--t0", "7"],
        "--t0 applies to --schedule sgdr only (this run: snapshot); drop it",
    ),
    (
        "an FGE setting for another schedule",
        lambda d: ["--schedule", "cosine", "--fge-lr-low", "0.01"],
        "--fge-lr-low applies to --schedule fge only (this run: cosine)",
    ),
    (
        "an image-folder setting for the digits",
        lambda d: ["--image-size", "32"],
        "--image-size applies to --dataset imagefolder only (this run: digits)",
    ),
    ("ResNet of no width", lambda d: ["--arch", "resnet8x0"], "multiplier must be at least 1"),
    ("WRN of no width", lambda d: ["--arch", "wrn-10-0"], "widening factor must be at least 1"),
    (
        "FGE cycles that never fit",
        lambda d: ["--schedule", "fge", "--fge-fraction", "0.999", "--cycle-epochs", "100"],
        "lower --fge-fraction or --cycle-epochs",
    ),
    (
        "true for a number in a config file",
        lambda d: ["--config", str(_write(d / "b.json", b'{"epochs": true}'))],
        "epochs = true: expected a value, not true/false",
    ),
    (
        "config file not UTF-8",
        lambda d: ["--config", str(_write(d / "b.toml", b"\xff\xfe"))],
        "not UTF-8 text",
    ),
    (
        "infinite T_mult",
        lambda d: ["--schedule", "sgdr", "--t-mult", "inf"],
        "--t-mult: Input should be a finite number",
    ),
    (
        "huge T_mult",
        lambda d: ["--schedule", "sgdr", "--t-mult", "1e300"],
        "--t-mult: Input should be less than or equal to 64",
    ),
    ("NaN momentum", lambda d: ["--momentum", "nan"], "--momentum: Input should be a finite"),
    ("infinite weight decay", lambda d: ["--weight-decay", "inf"], "--weight-decay: Input should"),
    (
        "seed beyond 32 bits",
        lambda d: ["--seed", "9223372036854775807"],
        "--seed: Input should be less than or equal to 4294967295",
    ),
    (
        "minimum rate above the rate",
        lambda d: ["--schedule", "sgdr", "--lr-min", "5"],
        "--lr-min 5.0 must be below --lr 0.1",
    ),
    (
        "FGE rates the wrong way round",
        lambda d: ["--schedule", "fge", "--fge-lr-low", "0.5", "--fge-lr-high", "0.001"],
        "--fge-lr-low 0.5 must be below --fge-lr-high 0.001",
    ),
    (
        "default m beyond the snapshots",
        lambda d: ["--epochs", "2", "--cycles", "2", "--default-m", "7"],
        "--default-m 7 is more snapshots than the run takes (2)",
    ),
    (
        "SWA without snapshots",
        lambda d: ["--swa", "--no-snapshots"],
        "--swa averages the snapshots",
    ),
    (
        "image size beyond the limit",
        lambda d: ["--image-size", "30000"],
        "--image-size: Input should be less than or equal to 1024",
    ),
    ("resume without a run", lambda d: ["--resume"], "has no checkpoint to resume from"),
    ("missing config file", lambda d: ["--config", str(d / "none.toml")], "no such file"),
]


@pytest.mark.parametrize(("case", "args", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_clear_line_and_writes_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    args: Callable[[Path], list[str]],
    message: str,
) -> None:
    from trainer.cli import main

    repo = tmp_path / "repo"
    code = main(
        ["--repository", str(repo), "--quiet", "--cache-dir", str(tmp_path / "c"), *args(tmp_path)]
    )
    err = capsys.readouterr().err
    assert code == 2, case
    assert message in err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not repo.exists() or not any(repo.iterdir())  # never a half-written repository


def test_bad_input_from_the_real_entry_point_has_no_traceback(tmp_path: Path) -> None:
    result = run_trainer_process(
        "--repository", str(tmp_path), "--dataset", "npz", "--data", str(tmp_path / "x.npz")
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --data {tmp_path / 'x.npz'}: no such file"
    assert not (tmp_path / "x").exists()


def test_an_existing_folder_is_refused_unless_overwrite_or_skip(
    trained_digits: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trainer.cli import main

    before = {p: sha256_file(p) for p in trained_digits.rglob("*.onnx")}
    repo = str(trained_digits.parent)
    assert main(["--repository", repo, "--name", "digits", "--quiet"]) == 2
    assert (
        "already exists: pass --resume to continue it, --overwrite to replace it"
        in capsys.readouterr().err
    )
    assert {p: sha256_file(p) for p in trained_digits.rglob("*.onnx")} == before

    assert main(["--repository", repo, "--name", "digits", "--skip-if-exists"]) == 0
    assert "digits" in capsys.readouterr().out
    assert {p: sha256_file(p) for p in trained_digits.rglob("*.onnx")} == before


def test_skip_if_exists_restarts_a_run_stopped_before_its_first_checkpoint(
    train_cli: TrainCli,
) -> None:
    code, repo = train_cli("--epochs", "2", "--cycles", "1", "--name", "early")
    assert code == 0
    folder = repo / "early"
    # What a kill during the first epoch leaves: a manifest in state "training", no snapshot,
    # no checkpoint.
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(state="training", snapshots=[])
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for path in [*folder.glob("snapshots/*"), *folder.glob("checkpoint/*")]:
        path.unlink()
    code, _ = train_cli("--epochs", "2", "--cycles", "1", "--name", "early", "--skip-if-exists")
    assert code == 0
    restarted = read_manifest(folder)
    assert restarted.state == "complete"
    assert len(restarted.snapshots) == 1


def test_overwrite_replaces_the_folder(train_cli: TrainCli) -> None:
    code, repo = train_cli("--epochs", "4", "--cycles", "2", "--name", "w")
    assert code == 0
    first = read_manifest(repo / "w")
    code, _ = train_cli(
        "--epochs", "2", "--cycles", "1", "--name", "w", "--overwrite", "--seed", "1"
    )
    assert code == 0
    second = read_manifest(repo / "w")
    assert len(second.snapshots) == 1 and second.created_at >= first.created_at
    assert sorted(p.name for p in (repo / "w" / "snapshots").iterdir()) == ["001.onnx"]


def test_a_network_that_fails_its_export_check_stops_before_training(
    train_cli: TrainCli, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("trainer.export.TOLERANCE", -1.0)  # no export can pass
    code, repo = train_cli("--epochs", "2", "--cycles", "1", "--name", "bad-export")
    assert code == 2
    assert "--arch mlp: ONNX export differs from PyTorch" in capsys.readouterr().err
    assert not (repo / "bad-export").exists()  # nothing written


# The flags users and scripts rely on (each TrainConfig field is a flag, generated).
TODAYS_FLAGS = {
    "--dataset", "--data", "--val-fraction", "--split-seed", "--image-size", "--cache-dir",
    "--augment", "--arch", "--schedule", "--cycles", "--epochs", "--lr", "--lr-min", "--t0",
    "--t-mult", "--warmup-epochs", "--batch-size", "--momentum", "--no-nesterov",
    "--weight-decay", "--plateau-patience", "--plateau-factor", "--eval-batch-size",
    "--repository", "--name", "--overwrite", "--resume", "--skip-if-exists", "--no-snapshots",
    "--seed", "--device", "--quiet", "--config",
}  # fmt: skip


def test_every_setting_has_a_flag_whose_help_shows_its_description_and_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trainer.cli import NO_FLAG, build_parser
    from trainer.config import TrainConfig

    monkeypatch.setenv("COLUMNS", "100")
    parser = build_parser()
    made = {a.dest: a.option_strings for a in parser._actions if a.dest != "help"}
    assert set(made) == set(TrainConfig.model_fields) - NO_FLAG
    assert {option for strings in made.values() for option in strings} >= TODAYS_FLAGS
    assert made["nesterov"] == ["--nesterov", "--no-nesterov"]
    entries = help_entries(parser.format_help())
    for name, options in made.items():
        info = TrainConfig.model_fields[name]
        assert info.description, name
        entry = entries[options[0]]
        assert " ".join(info.description.split()) in entry, entry
        assert entry.endswith(f"(default: {shown_default(info)})"), entry
    # spelled out: the defaults the help showed before it was generated
    for option, default in {
        "--val-fraction": "unset",
        "--split-seed": "0",
        "--schedule": "snapshot",
        "--lr": "0.1",
        "--lr-min": "0",
        "--batch-size": "64",
        "--weight-decay": "0.0001",
        "--plateau-patience": "5",
        "--plateau-factor": "0.1",
        "--repository": "models",
        "--device": "auto",
        "--nesterov": "true",
    }.items():
        assert entries[option].endswith(f"(default: {default})"), entries[option]
    assert entries["--schedule"].startswith("--schedule {" + ",".join(Schedule) + "}")
    assert ARCH_HELP in entries["--arch"] and "resnet20 otherwise" in entries["--arch"]
    assert "unset: 5" in entries["--cycles"] and "unset: 25 for digits" in entries["--epochs"]
    assert "0 for lipschitz" in entries["--momentum"]


def test_flags_given_override_the_config_file_and_only_those(tmp_path: Path) -> None:
    from trainer.cli import build_parser, resolve_config

    config = tmp_path / "run.toml"
    config.write_text('schedule = "step"\nepochs = 4\nnesterov = false\nlr = 0.05\n')
    flags = vars(build_parser().parse_args(["--config", str(config), "--epochs", "2"]))
    assert flags == {"config": str(config), "epochs": "2"}  # nothing not given
    cfg = resolve_config({**flags, "repository": str(tmp_path / "repo")})
    assert (cfg.schedule, cfg.epochs, cfg.nesterov, cfg.lr) == ("step", 2, False, 0.05)
    flags = vars(build_parser().parse_args(["--config", str(config), "--nesterov"]))
    assert resolve_config({**flags, "repository": str(tmp_path / "repo")}).nesterov is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "many"], "error: --epochs: Input should be a valid integer"),
        (["--schedule", "cosine-ish"], "error: --schedule: Input should be"),
        (["--val-fraction", "1.5"], "error: --val-fraction: Input should be less than 1"),
    ],
)
def test_an_invalid_flag_value_is_one_line_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    from trainer.cli import main

    assert main(["--repository", str(tmp_path / "repo"), "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "repo").exists()


def test_an_unknown_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    from trainer.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--no-such-flag"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_divergence_before_a_mid_epoch_snapshot_is_reported_as_divergence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seven cycles in one epoch: the first snapshot comes mid-epoch, after the loss has
    become NaN; it is never exported (that failed as an export mismatch)."""
    from trainer.cli import main

    repo = tmp_path / "repo"
    code = main(
        [
            *("--repository", str(repo), "--quiet", "--cache-dir", str(tmp_path / "c")),
            *("--epochs", "1", "--cycles", "7", "--lr", "1e4", "--name", "dv"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "training diverged in epoch 1" in err and "Traceback" not in err, err
    assert all(math.isfinite(s.val_nll) for s in read_manifest(repo / "dv").snapshots)


def _grey_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (4, 4), 128).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_folder_whose_first_image_is_grey_but_not_all_is_trained_in_colour(
    train_cli: TrainCli, tmp_path: Path
) -> None:
    files = {f"a/{i}.png": _png() for i in range(1, 20)} | {"a/0.png": _grey_png()}
    files |= {f"b/{i}.png": _png() for i in range(20)}
    data = _zip(tmp_path / "mixed.zip", files)
    code, repo = train_cli(
        *("--dataset", "imagefolder", "--data", str(data), "--arch", "mlp", "--name", "mixed"),
        *("--epochs", "2", "--cycles", "2", "--batch-size", "8"),
        *("--cache-dir", str(tmp_path / "cache")),
    )
    assert code == 0
    assert read_manifest(repo / "mixed").input.color_mode == "RGB"


def test_an_image_file_over_the_size_limit_is_refused_before_it_is_inflated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limit is on the size the zip declares (zipfile reads no more than that): a
    small zip of a huge image (a zip bomb) is refused without inflating it."""
    import trainer.data
    from trainer.cli import main

    monkeypatch.setattr(trainer.data, "MAX_IMAGE_FILE_BYTES", 100)
    data = _zip(tmp_path / "big.zip", {"a/1.png": _png() + bytes(1000), "b/2.png": _png()})
    code = main(
        [
            *("--repository", str(tmp_path / "repo"), "--quiet"),
            *("--dataset", "imagefolder", "--data", str(data)),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "a/1.png declares 1" in err and "may hold at most 100" in err, err


def test_the_image_cache_sees_images_added_inside_a_wrapping_folder(
    train_cli: TrainCli, tmp_path: Path
) -> None:
    root = tmp_path / "wrapped"
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(10):
            (root / "train" / cls / f"{i}.png").write_bytes(_png())
    flags = ("--dataset", "imagefolder", "--data", str(root), "--arch", "mlp")
    flags += ("--cache-dir", str(tmp_path / "cache"))
    flags += ("--epochs", "2", "--cycles", "2", "--batch-size", "4", "--val-fraction", "0.5")
    code, repo = train_cli(*flags, "--name", "first")
    assert code == 0
    for i in range(10, 20):
        (root / "train" / "a" / f"{i}.png").write_bytes(_png())
    code, repo = train_cli(*flags, "--name", "second")
    assert code == 0
    counts = [
        read_manifest(repo / n).training["dataset"]["train_examples"] for n in ("first", "second")
    ]
    assert counts == [10, 15]


def test_a_file_or_a_link_where_the_model_folder_goes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused as an existing folder is; --overwrite replaces the file or the link itself,
    never what a link points to. A repository that is a file is one clear error."""
    from trainer.cli import main

    repo = tmp_path / "repo"
    repo.mkdir()
    run = ["--repository", str(repo), "--quiet", "--epochs", "2", "--cycles", "2"]
    (repo / "digits").write_text("a file")
    assert main(run) == 2
    assert "digits already exists: pass --overwrite" in capsys.readouterr().err
    assert main([*run, "--overwrite"]) == 0 and read_manifest(repo / "digits").snapshots
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("kept")
    (repo / "linked").symlink_to(elsewhere, target_is_directory=True)
    assert main([*run, "--name", "linked", "--overwrite"]) == 0
    assert not (repo / "linked").is_symlink() and (elsewhere / "keep.txt").read_text() == "kept"
    capsys.readouterr()
    assert main(["--repository", str(repo / "digits" / "manifest.json"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Traceback" not in err


def test_a_training_subset_has_exactly_the_size_asked_and_one_snapshot_says_so(
    train_cli: TrainCli,
) -> None:
    """Per-class rounding took 6 examples for --train-subset 5; and with one snapshot the
    served m is not 'chosen among m >= 2'."""
    code, repo = train_cli(
        *("--train-subset", "5", "--batch-size", "1", "--epochs", "1", "--cycles", "1"),
        *("--name", "sub"),
    )
    assert code == 0
    manifest = read_manifest(repo / "sub")
    assert manifest.training["dataset"]["train_examples"] == 5
    assert manifest.training["calibration"]["default_m_rule"] == "one snapshot: the run took one"

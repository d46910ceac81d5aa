"""The batch scorer: every input and output format, equality with the server, failed rows,
resume after a kill, the atomic output, the Ray engine, and bad input."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import tritonclient.http as triton
from PIL import Image

from server.runtime import EnsembleRuntime
from server.score.cli import main as score
from server.score.ray_engine import actor_threads
from server.settings import RuntimeSettings
from snapens.images import to_model_input
from tests.conftest import ROOT
from tests.server.conftest import FIGURES, LiveServer
from tests.snapens.test_images import tiff_with_strip_offsets_typed


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((pixels * 255 / 16).round().astype(np.uint8), mode="L").save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def read(path: Path) -> pa.Table:
    if path.suffix == ".parquet":
        return pq.read_table(path)
    if path.suffix == ".csv":
        return pacsv.read_csv(path)
    return pa.Table.from_pylist([json.loads(line) for line in path.read_text().splitlines()])


def probabilities(table: pa.Table, classes: int = 10) -> np.ndarray:
    if "probabilities" in table.column_names:
        return np.array(table.column("probabilities").to_pylist(), dtype=np.float64)
    return np.stack([table.column(f"p_{c}").to_numpy() for c in range(classes)], axis=1)


@pytest.fixture
def inputs(tmp_path: Path, digit_images: tuple[np.ndarray, np.ndarray]) -> dict[str, Path]:
    """The same 40 digits as every input type the scorer reads."""
    images = digit_images[0][:40]
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    names = []
    for i, image in enumerate(images):
        name = f"{'sub/' if i % 2 else ''}{i:03d}.png"
        (folder / name).write_bytes(png(image[0]))
        names.append(name)
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in names:
            zf.write(folder / name, f"batch/{name}")
    table = pa.table({"path": [f"images/{n}" for n in names], "note": list(range(40))})
    pq.write_table(table, tmp_path / "list.parquet")
    pacsv.write_csv(table, tmp_path / "list.csv")
    np.save(tmp_path / "digits.npy", images)
    np.savez(tmp_path / "digits.npz", x=images[:, 0])  # [N, H, W]: one channel implied
    return {
        "npy": tmp_path / "digits.npy",
        "npz": tmp_path / "digits.npz",
        "folder": folder,
        "zip": archive,
        "parquet": tmp_path / "list.parquet",
        "csv": tmp_path / "list.csv",
    }


@pytest.fixture
def expected(
    digits_repo: Path, digit_images: tuple[np.ndarray, np.ndarray]
) -> dict[str, np.ndarray]:
    """The runtime's own answer for the 40 digits, as arrays and as decoded PNGs."""
    runtime = EnsembleRuntime.load(digits_repo / "digits", None, RuntimeSettings())
    spec = runtime.manifest.input
    arrays = runtime.answer(digit_images[0][:40])
    decoded = runtime.answer(
        np.stack([to_model_input(png(im[0]), spec) for im in digit_images[0][:40]])
    )
    return {
        "arrays": arrays.result.probabilities,
        "images": decoded.result.probabilities,
        "labels": arrays.result.label,
    }


@pytest.mark.parametrize(
    ("kind", "suffix"),
    [
        ("npy", ".parquet"),
        ("npz", ".csv"),
        ("folder", ".jsonl"),
        ("zip", ".parquet"),
        ("parquet", ".csv"),
        ("csv", ".parquet"),
    ],
)
def test_every_input_and_output_format(
    digits_repo: Path,
    inputs: dict[str, Path],
    expected: dict[str, np.ndarray],
    tmp_path: Path,
    kind: str,
    suffix: str,
) -> None:
    out = tmp_path / f"scored{suffix}"
    assert (
        score(
            [
                "--repository",
                str(digits_repo),
                "--input",
                str(inputs[kind]),
                "--output",
                str(out),
                "--members",
                "--quiet",
                "--chunk-rows",
                "16",
                "--batch-size",
                "8",
            ]
        )
        == 0
    )
    table = read(out)
    assert table.num_rows == 40
    arrays = kind in ("npy", "npz")
    key = "id" if arrays else "path"
    keys = table.column(key).to_pylist()
    if arrays:
        assert keys == list(range(40))
    elif kind in ("folder", "zip"):  # sorted by path, as listed
        assert keys == sorted(keys) and len(set(keys)) == 40
    else:  # a table's own row order
        assert keys == read(inputs[kind]).column("path").to_pylist()
    order = list(range(40)) if arrays else [int(Path(k).stem) for k in keys]
    reference = expected["arrays" if arrays else "images"][order]
    np.testing.assert_allclose(probabilities(table), reference, atol=1e-6)
    for name in ("confidence", *FIGURES):
        assert table.column(name).null_count == 0
    assert table.column("error").null_count == 40
    if suffix == ".csv":  # one column per snapshot's label
        assert {f"member_{c}" for c in range(1, 6)} <= set(table.column_names)
    else:
        assert len(table.column("member_labels")[0]) == 5


def test_offline_scores_equal_the_servers(
    server: LiveServer,
    inputs: dict[str, Path],
    tmp_path: Path,
    digit_images: tuple[np.ndarray, np.ndarray],
) -> None:
    out = tmp_path / "offline.parquet"
    repo = server.settings.repository
    assert (
        score(
            [
                "--repository",
                str(repo),
                "--input",
                str(inputs["npy"]),
                "--output",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    offline = pq.read_table(out)
    x = digit_images[0][:40]
    client = triton.InferenceServerClient(server.address)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    online = client.infer("digits", [tensor])
    assert offline.column("label").to_pylist() == online.as_numpy("label").tolist()
    np.testing.assert_array_equal(
        probabilities(offline).astype(np.float32), online.as_numpy("probabilities")
    )
    for name in ("confidence", *FIGURES):
        np.testing.assert_array_equal(offline.column(name).to_numpy(), online.as_numpy(name))


def test_failed_rows_are_written_with_an_error_and_counted(
    digits_repo: Path, inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (inputs["folder"] / "broken.png").write_bytes(b"not an image")
    # Pillow fails on this one with a TypeError, which used to end the run.
    (inputs["folder"] / "strips.tif").write_bytes(tiff_with_strip_offsets_typed(12))
    with open(inputs["csv"], "a") as handle:
        handle.write("images/missing.png,99\n,100\n")
    for source, failed in ((inputs["folder"], 2), (inputs["csv"], 2)):
        out = tmp_path / f"{source.stem}.jsonl"
        assert (
            score(["--repository", str(digits_repo), "--input", str(source), "--output", str(out)])
            == 0
        )
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        bad = [r for r in rows if r["error"]]
        assert len(rows) == 40 + failed and len(bad) == failed
        assert all(r["label"] is None and r["probabilities"] is None for r in bad)
        assert f"({failed} failed)" in capsys.readouterr().err
    errors = {r["path"]: r["error"] for r in rows if r["error"]}
    assert errors["images/missing.png"].startswith("cannot read")
    assert errors[""] == "empty path"
    nan = tmp_path / "nan.npy"
    x = np.load(inputs["npy"])
    x[3, 0, 0, 0] = np.nan
    np.save(nan, x)
    out = tmp_path / "nan.parquet"
    assert (
        score(
            ["--repository", str(digits_repo), "--input", str(nan), "--output", str(out), "--quiet"]
        )
        == 0
    )
    table = pq.read_table(out)
    assert table.column("error").to_pylist()[3] == "row contains NaN or infinity"
    assert table.column("label").null_count == 1
    x[3, 0, 0, 0], x[5, 0, 1, 2] = 0, 255  # 0..255 in a model of 0..16: as the server says
    np.save(nan, x)
    out.unlink()
    assert score(["--repository", str(digits_repo), "--input", str(nan), "--output", str(out)]) == 0
    errors = pq.read_table(out).column("error").to_pylist()
    assert errors[5] == (
        "row has pixel values from 0 to 255; the model takes raw pixels in its pixel_range [0, 16]"
    )
    assert [i for i, e in enumerate(errors) if e] == [5]


def test_resume_after_a_kill_scores_every_row_exactly_once(
    digits_repo: Path, tmp_path: Path, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    big = tmp_path / "big.npy"
    np.save(big, np.tile(digit_images[0], (20, 1, 1, 1)))  # 35,940 rows
    reference = tmp_path / "reference.parquet"
    args = [
        "--repository",
        str(digits_repo),
        "--input",
        str(big),
        "--chunk-rows",
        "64",
        "--batch-size",
        "64",
    ]
    assert score([*args, "--output", str(reference), "--quiet"]) == 0

    out = tmp_path / "resumed.parquet"
    partial = tmp_path / "resumed.parquet.partial"
    command = [sys.executable, "-m", "server.score", *args, "--output", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = random.Random(3)
    for attempt in range(2):
        process = subprocess.Popen(command + (["--resume"] if attempt else []), cwd=ROOT, env=env)
        while (
            len(list(partial.glob("part-*.parquet"))) < 20 * (attempt + 1)
            and process.poll() is None
        ):
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not out.exists()  # the output appears only when complete
    assert subprocess.run([*command, "--resume"], cwd=ROOT, env=env, check=False).returncode == 0
    resumed, full = pq.read_table(out), pq.read_table(reference)
    assert resumed.column("id").to_pylist() == list(range(len(resumed))) == list(range(35940))
    assert resumed.equals(full)
    assert not partial.exists()


def test_an_interrupted_run_needs_resume_or_overwrite(
    digits_repo: Path, inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o.parquet"
    (tmp_path / "o.parquet.partial").mkdir()
    assert (
        score(
            ["--repository", str(digits_repo), "--input", str(inputs["npy"]), "--output", str(out)]
        )
        == 2
    )
    assert "holds an interrupted run: pass --resume" in capsys.readouterr().err
    assert (
        score(
            [
                "--repository",
                str(digits_repo),
                "--input",
                str(inputs["npy"]),
                "--output",
                str(out),
                "--overwrite",
                "--quiet",
            ]
        )
        == 0
    )
    assert pq.read_table(out).num_rows == 40


@pytest.mark.parametrize(
    ("asked", "cpus", "actors", "threads"),
    [(0, 16, 8, 2), (0, 2, 1, 2), (0, 2, 2, 1), (0, 3, 8, 1), (4, 16, 8, 4)],
)
def test_each_ray_actor_runs_its_share_of_the_cores_unless_told(
    asked: int, cpus: float, actors: int, threads: int
) -> None:
    assert actor_threads(asked, cpus, actors) == threads


def test_the_ray_engine_gives_the_local_engines_rows(
    digits_repo: Path, inputs: dict[str, Path], tmp_path: Path
) -> None:
    for kind in ("npy", "zip"):
        local, distributed = tmp_path / f"{kind}-local.parquet", tmp_path / f"{kind}-ray.parquet"
        args = [
            "--repository",
            str(digits_repo),
            "--input",
            str(inputs[kind]),
            "--members",
            "--quiet",
            "--batch-size",
            "16",
        ]
        assert score([*args, "--output", str(local)]) == 0
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "server.score",
                *args,
                "--output",
                str(distributed),
                "--engine",
                "ray",
                "--actors",
                "2",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert pq.read_table(distributed).equals(pq.read_table(local))


def _npy(path: Path, shape: tuple[int, ...]) -> Path:
    np.save(path, np.zeros(shape, np.float32))
    return path


BAD: list[tuple[str, Callable[[Path, Path], list[str]], str]] = [
    (
        "no valid manifest",
        lambda d, r: [
            "--repository",
            str(d),
            "--model",
            "nope",
            "--input",
            str(_npy(d / "x.npy", (2, 1, 8, 8))),
            "--output",
            str(d / "o.parquet"),
        ],
        "no manifest",
    ),
    (
        "shape mismatch",
        lambda d, r: [
            "--repository",
            str(r),
            "--input",
            str(_npy(d / "x.npy", (2, 3, 32, 32))),
            "--output",
            str(d / "o.parquet"),
        ],
        "the model takes [N, 1, 8, 8]",
    ),
    (
        "unknown file type",
        lambda d, r: [
            "--repository",
            str(r),
            "--input",
            str(d / "x.txt"),
            "--output",
            str(d / "o.parquet"),
        ],
        "unknown file type",
    ),
    (
        "unknown output type",
        lambda d, r: [
            "--repository",
            str(r),
            "--input",
            str(_npy(d / "x.npy", (2, 1, 8, 8))),
            "--output",
            str(d / "o.xlsx"),
        ],
        "expected .parquet, .csv or .jsonl",
    ),
    (
        "output exists",
        lambda d, r: [
            "--repository",
            str(r),
            "--input",
            str(_npy(d / "x.npy", (2, 1, 8, 8))),
            "--output",
            str(d / "exists.csv"),
        ],
        "exists: pass --overwrite",
    ),
    (
        "empty array",
        lambda d, r: [
            "--repository",
            str(r),
            "--input",
            str(_npy(d / "x.npy", (0, 1, 8, 8))),
            "--output",
            str(d / "o.parquet"),
        ],
        "empty input",
    ),
    (
        "empty folder",
        lambda d, r: [
            "--repository",
            str(r),
            "--input",
            str(d / "empty"),
            "--output",
            str(d / "o.parquet"),
        ],
        "empty input",
    ),
    (
        "missing path column",
        lambda d, r: [
            "--repository",
            str(r),
            "--input",
            str(d / "t.csv"),
            "--output",
            str(d / "o.parquet"),
        ],
        "no column 'path' of image paths",
    ),
]


@pytest.mark.parametrize(("case", "args", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_clear_message_and_leaves_nothing(
    digits_repo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    args: Callable[[Path, Path], list[str]],
    message: str,
) -> None:
    work = tmp_path / "work"
    (work / "empty").mkdir(parents=True)
    (work / "x.txt").write_text("hello")
    (work / "exists.csv").write_text("old")
    with open(work / "t.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["file"], ["a.png"]])
    before = set(work.rglob("*"))
    assert score(args(work, digits_repo)) == 2, case
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and "Traceback" not in err
    assert {
        p for p in work.rglob("*") if p.suffix in (".parquet", ".partial")
    } <= before  # nothing half-written
    assert (work / "exists.csv").read_text() == "old"


def test_a_parquet_column_that_is_not_paths_is_one_clear_message(
    digits_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, a list-typed column ended in pyarrow's ArrowNotImplementedError."""
    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"path": [["a.png", "b.png"]], "n": [1]}), table)
    out = tmp_path / "o.parquet"
    for column, held in (("path", "list<element: string>"), ("n", "int64")):
        argv = ["--repository", str(digits_repo), "--input", str(table), "--output", str(out)]
        assert score([*argv, "--column", column]) == 2
        err = capsys.readouterr().err
        assert f"column {column!r} holds {held}, not image paths (strings)" in err
        assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--batch-size", "0"), ("--batch-size", "-5"), ("--decode-workers", "0"),
     ("--chunk-rows", "-3"), ("--m", "0"), ("--actors", "two")],
)  # fmt: skip
def test_a_count_flag_below_one_is_a_usage_error(
    digits_repo: Path,
    inputs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    value: str,
) -> None:
    """Before, --batch-size 0 ended in a ZeroDivisionError, -5 in a traceback with the
    .partial left behind, --decode-workers 0 in the thread pool's ValueError, --chunk-rows
    -3 in 'empty input', and --m 0 meant the default."""
    out = tmp_path / "o.parquet"
    argv = ["--repository", str(digits_repo), "--input", str(inputs["npy"]), "--output", str(out)]
    with pytest.raises(SystemExit) as exited:
        score([*argv, flag, value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: expected a whole number of at least 1, got '{value}'" in err
    assert not list(tmp_path.glob("o.parquet*"))


def test_m_beyond_the_snapshots_is_said(
    digits_repo: Path, inputs: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """--m beyond the snapshots scores with those there are, and says so (a warning of the
    runtime's log, which the command prints)."""
    out = tmp_path / "o.parquet"
    argv = ["--repository", str(digits_repo), "--input", str(inputs["npy"]), "--output", str(out)]
    with caplog.at_level(logging.WARNING, logger="snapens.runtime"):
        assert score([*argv, "--m", "99", "--quiet"]) == 0
    assert "digits: asked for m=99, the manifest lists 5 snapshots: serving those" in [
        r.getMessage() for r in caplog.records
    ]


def test_images_over_the_pixel_limit_fail_as_rows_undecoded(
    digits_repo: Path, inputs: dict[str, Path], tmp_path: Path
) -> None:
    """The scorer refuses an image from its header as the server does: a failed row naming
    the limit, the rest scored."""
    buffer = io.BytesIO()
    Image.new("L", (12000, 12000)).save(buffer, "PNG", compress_level=1)
    (inputs["folder"] / "giant.png").write_bytes(buffer.getvalue())
    for limit, failed in ((None, 1), (63, 41)):  # the digits are 8×8 = 64-pixel PNGs
        out = tmp_path / f"limit-{limit}.jsonl"
        args = ["--repository", str(digits_repo), "--input", str(inputs["folder"]), "--quiet"]
        if limit is not None:
            args += ["--max-image-pixels", str(limit)]
        assert score([*args, "--output", str(out)]) == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        errors = {r["path"]: r["error"] for r in rows if r["error"]}
        assert len(rows) == 41 and len(errors) == failed
        assert "144000000 pixels exceeds the limit" in errors["giant.png"]
    assert "64 pixels exceeds the limit of 63 pixels" in errors["000.png"]

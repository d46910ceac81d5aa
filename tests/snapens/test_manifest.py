"""The manifest schema: what a reader accepts and what it refuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from snapens.manifest import Manifest, ManifestError, read_manifest, read_snapshot


def _valid(synthetic_digits: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((synthetic_digits / "manifest.json").read_text())
    return data


def test_trained_manifest_has_the_fields_design_names(synthetic_digits: Path) -> None:
    m = read_manifest(synthetic_digits)
    assert m.format_version == 1 and m.name == "digits" and m.created_at
    assert (
        m.input.shape == [-1, 1, 8, 8] and m.input.dtype == "float32" and m.input.layout == "NCHW"
    )
    assert m.input.pixel_range == (0.0, 16.0)
    assert m.output.kind == "logits" and m.output.shape == [-1, 10]
    assert len(m.classes) == 10
    s = m.snapshots[0]
    assert {s.file, s.sha256, s.cycle, s.epoch, s.step, s.lr, s.val_accuracy, s.val_nll}
    for key in ("dataset", "architecture", "schedule", "budget", "seed"):
        assert key in m.training
    assert [e.cycle for e in m.last(2)] == [4, 5]
    with pytest.raises(ManifestError, match=r"m must be 1\.\.5"):
        m.last(6)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["snapshots"][0].update(file="../../etc/passwd.onnx"), "snapshots/<name>"),
        (lambda d: d["snapshots"][0].update(file="/abs.onnx"), "snapshots/<name>"),
        (lambda d: d["snapshots"][0].update(file="snapshots/a\u0000.onnx"), "snapshots/<name>"),
        # one file under two spellings would pass a check that no two entries name one file
        (lambda d: d["snapshots"][1].update(file="./" + d["snapshots"][0]["file"]), "<name>"),
        (lambda d: d["snapshots"][0].update(bytes=-5), "bytes: Input should be greater"),
        (lambda d: d["snapshots"][0].update(bytes=10**30), "bytes: Input should be less"),
        (lambda d: d["snapshots"][0].update(lr=float("nan")), "lr: Input should be a finite"),
        (lambda d: d["snapshots"][0].update(val_accuracy=5), "val_accuracy: Input should be"),
        (lambda d: d["snapshots"][0].update(epoch=float("inf")), "epoch: Input should be a fin"),
        (lambda d: d["snapshots"][1].update(step=1), "snapshot steps must increase"),
        (lambda d: d["input"].update(pixel_range=[0, float("inf")]), "pixel_range.1: Input"),
        (lambda d: d["input"].update(shape=[-1, 1, 10**9, 10**9]), "from 1 to 8192"),
        (lambda d: d["classes"].__setitem__(1, d["classes"][0]), "distinct and not empty"),
        (lambda d: d["classes"].__setitem__(1, " "), "distinct and not empty"),
        (lambda d: d.update(default_m="2"), "default_m: Input should be a valid integer"),
        (lambda d: d.update(default_m=True), "default_m: Input should be a valid integer"),
        (lambda d: d.update(default_m=2.0), "default_m: Input should be a valid integer"),
        (lambda d: d.update(format_version=True), "format_version must be the number 1"),
        (lambda d: d.update(name="../../etc"), "a model name is a plain folder name"),
        (lambda d: d.update(temperature=1e-300), "temperature: Input should be greater"),
        (lambda d: d["snapshots"][0].update(sha256="abc"), "64 lowercase hex"),
        (lambda d: d.update(classes=["a", "b"]), "does not match 2 classes"),
        (lambda d: d["snapshots"].reverse(), "training order"),
        (lambda d: d.update(format_version=2), "format_version"),
        (lambda d: d["input"].update(shape=[1, 8, 8]), "-1, C, H, W"),
        (lambda d: d.update(extra_field=1), "extra_field"),
    ],
)
def test_untrustworthy_manifests_are_refused(
    synthetic_digits: Path, tmp_path: Path, mutate: Any, message: str
) -> None:
    data = _valid(synthetic_digits)
    mutate(data)
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=message):
        read_manifest(tmp_path)


def test_missing_and_malformed_manifests(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"default_m": ' + "9" * 5000 + "}")
    with pytest.raises(ManifestError, match=r"not a manifest .*4300 digits"):
        read_manifest(tmp_path)


def test_a_snapshot_of_another_length_than_listed_is_refused(
    synthetic_digits: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "digits"
    shutil.copytree(synthetic_digits, folder)
    manifest = read_manifest(folder)
    entry = manifest.snapshots[0]
    with (folder / entry.file).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ManifestError, match=f"{entry.bytes + 1} bytes, the manifest says"):
        read_snapshot(folder, entry)


def test_the_temperature_defaults_to_one_and_must_be_positive(synthetic_digits: Path) -> None:
    data = _valid(synthetic_digits)
    data.pop("temperature", None)  # a manifest written before the field existed
    assert Manifest.model_validate(data).temperature == 1.0
    assert Manifest.model_validate({**data, "temperature": 1.7}).temperature == 1.7
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValidationError):
            Manifest.model_validate({**data, "temperature": bad})

"""The manifest a run starts with: what the server reads, and what the run was made from."""

from __future__ import annotations

from pathlib import Path

import torch

from snapens.manifest import Manifest
from trainer.config_file import build_config
from trainer.data import Dataset
from trainer.manifest_builder import build_manifest
from trainer.runtime import Runtime
from trainer.schedules import make_plan


def rgb_dataset() -> Dataset:
    x = torch.zeros(20, 3, 16, 12, dtype=torch.uint8)
    y = torch.arange(20) % 4
    return Dataset(x, y, ["a", "b", "c", "d"], (0.0, 255.0), "RGB", "npz x.npz")


def test_the_initial_manifest_describes_input_output_and_the_run() -> None:
    cfg = build_config(
        {},
        {"schedule": "plateau", "epochs": 6, "cycles": 3, "dataset": "npz", "data": Path("x.npz")},
    )
    plan = make_plan(cfg, 4)
    rt = Runtime(torch.device("cpu"), rank=0, world_size=1, amp_dtype=None)
    manifest = build_manifest(
        cfg,
        rgb_dataset(),
        plan,
        rt,
        arch="resnet8",
        augment="crop-flip",
        parameters=1234,
        train_examples=18,
        val_examples=2,
    )
    assert manifest == Manifest.model_validate_json(manifest.model_dump_json())
    assert (manifest.name, manifest.state, manifest.snapshots) == ("x", "training", [])
    assert manifest.input.shape == [-1, 3, 16, 12]
    assert manifest.input.color_mode == "RGB" and manifest.input.pixel_range == (0.0, 255.0)
    assert manifest.output.shape == [-1, 4]
    assert manifest.classes == ["a", "b", "c", "d"]
    assert manifest.default_m == 3  # the snapshots the plan takes
    training = manifest.training
    assert training["dataset"] == {
        "kind": "npz",
        "source": "npz x.npz",
        "train_examples": 18,
        "val_examples": 2,
        "val_fraction": 0.1,
        "train_subset": None,
        "split_seed": 0,
        "augment": "crop-flip",
    }
    assert training["schedule"] == {
        "name": "plateau",
        "lr": 0.1,
        "cycles": 3,
        "warmup_epochs": 0,
        "patience": 5,
        "factor": 0.1,
    }
    assert training["optimizer"] == {
        "name": "sgd",
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 1e-4,
    }
    assert training["budget"] == {**plan.describe(), "batch_size": 64}
    assert training["budget"]["snapshot_steps"] == [8, 16, 24]
    assert (training["architecture"], training["parameters"]) == ("resnet8", 1234)
    assert (training["device"], training["world_size"], training["seed"]) == ("cpu", 1, 0)
    assert training["config"] == cfg.fingerprint()
    assert "resume" not in training["config"]  # runtime settings are not part of the run


def test_lipschitz_trains_with_plain_sgd() -> None:
    cfg = build_config({}, {"schedule": "lipschitz", "epochs": 4, "cycles": 1})
    rt = Runtime(torch.device("cpu"), rank=0, world_size=2, amp_dtype=None)
    data = Dataset(torch.zeros(10, 1, 8, 8), torch.arange(10) % 2, ["0", "1"], (0, 16), "L", "s")
    manifest = build_manifest(
        cfg,
        data,
        make_plan(cfg, 2),
        rt,
        arch="mlp",
        augment="none",
        parameters=1,
        train_examples=9,
        val_examples=1,
    )
    assert manifest.input.color_mode == "L"
    assert manifest.training["optimizer"]["momentum"] == 0.0
    assert manifest.training["optimizer"]["nesterov"] is False
    assert manifest.training["world_size"] == 2
    assert manifest.default_m == 1

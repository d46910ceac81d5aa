"""Files the contract package can make: a small but real model folder, without torch.

Each snapshot is a classifier written as an ONNX graph with `onnx.helper`, shaped as the
trainer's are (input `input` [-1, C, H, W] of raw pixels, normalisation inside the graph,
output `logits` [-1, K]):

    input ─▶ Sub(mean) ─▶ Div(std) ─▶ Flatten ─▶ MatMul ─▶ Add ─▶ Relu ─▶ MatMul ─▶ Add ─▶ logits

Its hidden layer is random (a seed per snapshot, so snapshots disagree now and then) and its
output layer is fitted by ridge least squares on the labelled images the caller passes in,
so the members are accurate on them. The folder is written through `ModelFolder`, as the
trainer writes one (atomic files, sha256 in the manifest, state `complete` at the end),
with the report files the demo page shows (`report.json` and three PNG plots drawn with
Pillow). The serving side's tests build their models with it, so they need neither torch
nor the trainer; nothing here imports them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from snapens.ensemble import (
    error_rate,
    negative_log_likelihood,
    softmax,
)
from snapens.folder import ModelFolder, SnapshotMeta
from snapens.manifest import FORMAT_VERSION, InputSpec, Manifest, OutputSpec, utc_now
from snapens.report import REPORT_JSON, ensemble_figures, snapshot_rows
from snapens.synthetic_plots import render_plots

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17
IR_VERSION = 8  # the IR of opset 17, which every onnxruntime that runs opset 17 reads
EPOCHS_PER_SNAPSHOT = 2
STEPS_PER_EPOCH = 25
LEARNING_RATE = 0.1


@dataclass(frozen=True)
class Classifier:
    """One snapshot's weights: normalisation, a ReLU hidden layer and the logits layer."""

    mean: np.ndarray  # [C], the training split's per-channel pixel mean
    std: np.ndarray  # [C]
    w1: np.ndarray  # [C·H·W, hidden]
    b1: np.ndarray  # [hidden]
    w2: np.ndarray  # [hidden, K]
    b2: np.ndarray  # [K]

    def logits(self, images: np.ndarray) -> np.ndarray:
        """What the ONNX graph computes, in numpy: [N, C, H, W] pixels to [N, K] logits."""
        shape = (1, -1, 1, 1)
        x = (images.astype(np.float32) - self.mean.reshape(shape)) / self.std.reshape(shape)
        hidden = np.maximum(x.reshape(len(x), -1) @ self.w1 + self.b1, 0)
        return np.asarray(hidden @ self.w2 + self.b2, dtype=np.float32)


def fit_classifiers(
    images: np.ndarray,
    labels: np.ndarray,
    count: int,
    classes: int,
    *,
    hidden: int = 128,
    seed: int = 0,
    ridge: float = 1.0,
    margin: float = 10.0,
) -> list[Classifier]:
    """`count` classifiers of [N, C, H, W] pixels into `classes` classes, each with its own
    random hidden layer (seeded by `seed` and its index) and an output layer fitted by ridge
    least squares to `margin` times the one-hot labels (so the right class wins by about
    `margin` logits)."""
    x = np.asarray(images, dtype=np.float64)
    mean = x.mean(axis=(0, 2, 3))
    std = np.maximum(x.std(axis=(0, 2, 3)), 1e-6)
    flat = ((x - mean[None, :, None, None]) / std[None, :, None, None]).reshape(len(x), -1)
    targets = margin * np.eye(classes)[np.asarray(labels, dtype=np.int64)]
    members = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        w1 = rng.normal(0.0, 1.0 / math.sqrt(flat.shape[1]), (flat.shape[1], hidden))
        b1 = rng.normal(0.0, 0.5, hidden)
        features = np.hstack([np.maximum(flat @ w1 + b1, 0), np.ones((len(flat), 1))])
        gram = features.T @ features + ridge * np.eye(hidden + 1)
        w2 = np.linalg.solve(gram, features.T @ targets)
        members.append(
            Classifier(
                mean=mean.astype(np.float32),
                std=std.astype(np.float32),
                w1=w1.astype(np.float32),
                b1=b1.astype(np.float32),
                w2=w2[:-1].astype(np.float32),
                b2=w2[-1].astype(np.float32),
            )
        )
    return members


def classifier_onnx(member: Classifier, input_shape: Sequence[int]) -> bytes:
    """The member as a serialized ONNX model: input `input` [-1, C, H, W] of raw pixels,
    output `logits` [-1, K], opset 17."""
    channels, height, width = input_shape[-3:]
    classes = int(member.w2.shape[1])
    weights = {
        "mean": member.mean.reshape(1, channels, 1, 1),
        "std": member.std.reshape(1, channels, 1, 1),
        "w1": member.w1,
        "b1": member.b1,
        "w2": member.w2,
        "b2": member.b2,
    }
    nodes = [
        helper.make_node("Sub", [INPUT_NAME, "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["normalised"]),
        helper.make_node("Flatten", ["normalised"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w1"], ["hidden_mm"]),
        helper.make_node("Add", ["hidden_mm", "b1"], ["hidden_pre"]),
        helper.make_node("Relu", ["hidden_pre"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "w2"], ["logits_mm"]),
        helper.make_node("Add", ["logits_mm", "b2"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes,
        "synthetic_classifier",
        [
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, ["batch", channels, height, width]
            )
        ],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", classes])],
        [
            numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name)
            for name, value in weights.items()
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="snapens.synthetic",
    )
    onnx.checker.check_model(model, full_check=True)
    data: bytes = model.SerializeToString()
    return data


def _snapshot_lr(step: int, cycle_steps: int) -> float:
    """The snapshot schedule's rate (Huang et al.) at `step`: cosine annealing restarted
    every `cycle_steps` iterations."""
    position = (step - 1) % cycle_steps
    return LEARNING_RATE / 2 * (math.cos(math.pi * position / cycle_steps) + 1)


def write_model_folder(
    repository: Path,
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    snapshots: int = 5,
    classes: Sequence[str] | None = None,
    pixel_range: tuple[float, float] | None = None,
    hidden: int = 128,
    seed: int = 0,
    val_fraction: float = 0.1,
    report: bool = True,
    after_snapshot: Callable[[int], None] | None = None,
) -> Path:
    """Write `repository/name/` (replacing it) with `snapshots` synthetic snapshots fitted to
    the labelled `images` [N, C, H, W] (C 1 or 3) and return the folder.

    A fixed-seed `val_fraction` of the images is held out: the manifest's `val_accuracy` and
    `val_nll` and the report are measured on it. `classes` default to "0".."K-1" and
    `pixel_range` to the images' own (min, max). The folder is created empty (state
    `training`), the snapshots are added one by one (`after_snapshot(cycle)` runs after each
    is listed, e.g. to watch a server pick it up), and the run is finished (state `complete`)
    after the report files are written."""
    x = np.asarray(images, dtype=np.float32)
    y = np.asarray(labels, dtype=np.int64)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or len(x) != len(y):
        raise ValueError(f"expected images [N, 1 or 3, H, W] and N labels, got {x.shape}")
    names = list(classes) if classes is not None else [str(k) for k in range(int(y.max()) + 1)]
    low, high = pixel_range if pixel_range is not None else (float(x.min()), float(x.max()))
    order = np.random.default_rng(seed).permutation(len(x))
    val_count = max(1, round(len(x) * val_fraction))
    val, train = order[:val_count], order[val_count:]
    members = fit_classifiers(x[train], y[train], snapshots, len(names), hidden=hidden, seed=seed)

    shape = [-1, *x.shape[1:]]
    cycle_steps = EPOCHS_PER_SNAPSHOT * STEPS_PER_EPOCH
    now = utc_now()
    folder = ModelFolder(repository, name)
    folder.create(
        Manifest(
            format_version=FORMAT_VERSION,
            name=name,
            created_at=now,
            updated_at=now,
            state="training",
            input=InputSpec(
                name=INPUT_NAME,
                shape=shape,
                pixel_range=(low, high),
                color_mode="L" if x.shape[1] == 1 else "RGB",
            ),
            output=OutputSpec(name=OUTPUT_NAME, shape=[-1, len(names)]),
            classes=names,
            default_m=snapshots,
            snapshots=[],
            training={
                "dataset": {
                    "kind": "arrays",
                    "source": "images given to snapens.synthetic",
                    "train_examples": len(train),
                    "val_examples": len(val),
                    "val_fraction": val_fraction,
                    "split_seed": seed,
                },
                "architecture": f"random-relu-{hidden}",
                "parameters": sum(w.size for w in (members[0].w1, members[0].b1))
                + sum(w.size for w in (members[0].w2, members[0].b2)),
                "schedule": {"name": "synthetic", "lr": LEARNING_RATE, "cycles": snapshots},
                "optimizer": {"name": "ridge least squares"},
                "budget": {
                    "epochs": EPOCHS_PER_SNAPSHOT * snapshots,
                    "iterations_per_epoch": STEPS_PER_EPOCH,
                    "iterations": cycle_steps * snapshots,
                    "snapshot_steps": [cycle_steps * c for c in range(1, snapshots + 1)],
                },
                "seed": seed,
                "device": "cpu",
                "world_size": 1,
                "config": {"synthetic": True, "hidden": hidden, "seed": seed},
            },
        )
    )
    val_probs = []
    for cycle, member in enumerate(members, start=1):
        probs = softmax(member.logits(x[val]).astype(np.float64))
        val_probs.append(probs)
        meta = SnapshotMeta(
            cycle=cycle,
            epoch=float(EPOCHS_PER_SNAPSHOT * cycle),
            step=cycle_steps * cycle,
            lr=_snapshot_lr(cycle_steps * cycle, cycle_steps),
            val_accuracy=1.0 - error_rate(probs, y[val]),
            val_nll=negative_log_likelihood(probs, y[val]),
        )
        folder.add_snapshot(classifier_onnx(member, shape), meta, export_diff=0.0)
        if after_snapshot is not None:
            after_snapshot(cycle)
    if report:
        contents = _report(folder.manifest, np.stack(val_probs), y[val], cycle_steps)
        folder.write_extra(REPORT_JSON, json.dumps(contents, indent=2).encode() + b"\n")
        for file, data in render_plots(contents).items():
            folder.write_extra(file, data)
    folder.finish()
    return folder.path


def _report(
    manifest: Manifest, member_probs: np.ndarray, targets: np.ndarray, cycle_steps: int
) -> dict[str, Any]:
    """report.json with the keys the trainer writes and the demo page and summary read."""
    cycles = [s.cycle for s in manifest.snapshots]
    steps = list(range(1, cycle_steps * len(cycles) + 1))
    return {
        "name": manifest.name,
        "created_at": utc_now(),
        "schedule": manifest.training["schedule"],
        "architecture": manifest.training["architecture"],
        "validation_examples": len(targets),
        "synthetic": True,
        "learning_rate": {
            "step": [float(s) for s in steps],
            "lr": [_snapshot_lr(s, cycle_steps) for s in steps],
            "snapshot_steps": [s.step for s in manifest.snapshots],
        },
        "snapshots": snapshot_rows(manifest),
    } | ensemble_figures(cycles, member_probs, targets)

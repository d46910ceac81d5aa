"""What a run resolves before training: the `auto` settings, the normalisation statistics,
the optimizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from trainer.choices import Augment
from trainer.config import TrainConfig
from trainer.config_file import build_config
from trainer.data import Dataset
from trainer.setup import (
    build_optimizer,
    memory_format,
    new_model,
    normalisation,
    resolve_arch,
    resolve_augment,
)


def dataset(channels: int, size: int) -> Dataset:
    x = torch.zeros(4, channels, size, size, dtype=torch.uint8)
    mode = "L" if channels == 1 else "RGB"
    return Dataset(x, torch.arange(4) % 2, ["a", "b"], (0.0, 255.0), mode, "test")


def config(**values: Any) -> TrainConfig:
    return build_config({}, {"dataset": "npz", "data": Path("x.npz"), **values})


@pytest.mark.parametrize(
    ("channels", "size", "augment", "expected"),
    [
        (3, 16, "auto", Augment.CROP_FLIP),
        (3, 8, "auto", Augment.NONE),
        (1, 32, "auto", Augment.NONE),
        (3, 32, "none", Augment.NONE),
        (1, 8, "crop-flip", Augment.CROP_FLIP),
    ],
)
def test_augment_auto_crops_and_flips_colour_images_of_16_px_and_more(
    channels: int, size: int, augment: str, expected: Augment
) -> None:
    assert resolve_augment(config(augment=augment), dataset(channels, size)) is expected


def test_arch_auto_is_an_mlp_for_8x8_and_a_resnet_otherwise() -> None:
    assert resolve_arch(config(), dataset(1, 8)) == "mlp"
    assert resolve_arch(config(), dataset(3, 32)) == "resnet20"
    assert resolve_arch(config(arch="wrn-16-2"), dataset(1, 8)) == "wrn-16-2"
    assert memory_format("mlp-64x2") == torch.contiguous_format
    assert memory_format("resnet8") == torch.channels_last


def test_normalisation_is_per_channel_and_never_divides_by_zero() -> None:
    x = torch.zeros(2, 2, 2, 2, dtype=torch.uint8)
    x[0, 0] = 2  # channel 0: four 2s and four 0s; channel 1: constant
    mean, std = normalisation(x)
    assert mean.tolist() == [1.0, 0.0]
    assert std[0].item() == pytest.approx(torch.tensor([2.0] * 4 + [0.0] * 4).std().item())
    assert std[1].item() == pytest.approx(1e-6)
    model = new_model("mlp", dataset(2, 2), mean, std)
    assert model.mean.flatten().tolist() == [1.0, 0.0]


def test_the_optimizer_is_sgd_with_the_configs_momentum() -> None:
    model = torch.nn.Linear(2, 2)
    sgd = build_optimizer(config(weight_decay=5e-4), model)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"]) == (0.1, 0.9, True)
    assert group["weight_decay"] == 5e-4
    plain = build_optimizer(config(schedule="lipschitz"), model).param_groups[0]
    assert (plain["momentum"], plain["nesterov"]) == (0.0, False)  # no Nesterov without momentum

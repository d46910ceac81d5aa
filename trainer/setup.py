"""What a run is built from, resolved from the config and the data before training: the
split on the device, the settings left to `auto`, the normalisation statistics, the network
(wrapped for DistributedDataParallel), the optimizer and the mixed-precision scaler."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainer.choices import Augment
from trainer.config import TrainConfig
from trainer.data import Dataset, stratified_split, stratified_subset
from trainer.errors import UserError
from trainer.nets import Normalized, build_network, default_arch
from trainer.runtime import Runtime

VERIFY_BATCH = 64  # validation images each export is verified on


@dataclass(frozen=True)
class Split:
    train_x: torch.Tensor  # raw pixels on the device
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    verify_batch: torch.Tensor  # float32 on the CPU


def split_on_device(cfg: TrainConfig, data: Dataset, device: torch.device) -> Split:
    train_idx, val_idx = stratified_split(
        data.y, cfg.resolved_val_fraction, cfg.split_seed, data.classes
    )
    if cfg.train_subset is not None:
        if cfg.train_subset >= len(train_idx):
            raise UserError(
                f"--train-subset {cfg.train_subset}: the training split has only "
                f"{len(train_idx)} examples"
            )
        kept = stratified_subset(data.y[train_idx], cfg.train_subset, cfg.split_seed + 1)
        train_idx = train_idx[kept]
    return Split(
        data.x[train_idx].to(device),
        data.y[train_idx].to(device),
        data.x[val_idx].to(device),
        data.y[val_idx].to(device),
        data.x[val_idx[:VERIFY_BATCH]].float(),
    )


def resolve_arch(cfg: TrainConfig, data: Dataset) -> str:
    return default_arch(data.input_shape) if cfg.arch == "auto" else cfg.arch


def resolve_augment(cfg: TrainConfig, data: Dataset) -> Augment:
    """auto: random crop and flip for RGB images of 16 px and more, nothing otherwise."""
    if cfg.augment is not Augment.AUTO:
        return cfg.augment
    if data.color_mode == "RGB" and min(data.input_shape[1:]) >= 16:
        return Augment.CROP_FLIP
    return Augment.NONE


def normalisation(train_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of the training split (on the CPU)."""
    stats = train_x.float()
    return stats.mean(dim=(0, 2, 3)).cpu(), stats.std(dim=(0, 2, 3)).clamp_min(1e-6).cpu()


def memory_format(arch: str) -> torch.memory_format:
    """Convolutions run faster on NHWC memory (CPU and tensor cores alike)."""
    return torch.contiguous_format if arch.startswith("mlp") else torch.channels_last


def new_model(arch: str, data: Dataset, mean: torch.Tensor, std: torch.Tensor) -> Normalized:
    net = build_network(arch, data.input_shape, len(data.classes))
    return Normalized(net, mean, std)


def distributed(model: nn.Module, rt: Runtime) -> nn.Module:
    """The module the loop calls: DDP-wrapped under torchrun, the model itself otherwise."""
    if not rt.distributed:
        return model
    return DistributedDataParallel(
        model, device_ids=[rt.device] if rt.device.type == "cuda" else None
    )


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.SGD:
    """SGD; the loop sets its rate before every step."""
    momentum = cfg.resolved_momentum
    return torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=momentum,
        nesterov=cfg.nesterov and momentum > 0,
        weight_decay=cfg.weight_decay,
    )


def grad_scaler(rt: Runtime) -> torch.amp.GradScaler | None:
    """float16 autocast needs loss scaling; bfloat16 and float32 do not."""
    return torch.amp.GradScaler("cuda") if rt.amp_dtype == torch.float16 else None

"""The manifest a new run starts its model folder with (`snapens.folder` writes it)."""

from __future__ import annotations

from snapens.manifest import FORMAT_VERSION, InputSpec, Manifest, OutputSpec, utc_now
from trainer.config import TrainConfig
from trainer.data import Dataset
from trainer.export import INPUT_NAME, OUTPUT_NAME
from trainer.runtime import Runtime
from trainer.schedules import Plan, describe_schedule


def build_manifest(
    cfg: TrainConfig,
    data: Dataset,
    plan: Plan,
    rt: Runtime,
    *,
    arch: str,
    augment: str,
    parameters: int,
    train_examples: int,
    val_examples: int,
) -> Manifest:
    """State "training", no snapshots yet, and everything the run was made from."""
    c, h, w = data.input_shape
    now = utc_now()
    momentum = cfg.resolved_momentum
    return Manifest(
        format_version=FORMAT_VERSION,
        name=cfg.model_name,
        created_at=now,
        updated_at=now,
        state="training",
        input=InputSpec(
            name=INPUT_NAME,
            shape=[-1, c, h, w],
            pixel_range=data.pixel_range,
            color_mode="L" if c == 1 else "RGB",
        ),
        output=OutputSpec(name=OUTPUT_NAME, shape=[-1, len(data.classes)]),
        classes=data.classes,
        default_m=max(1, plan.cycles),
        snapshots=[],
        training={
            "dataset": {
                "kind": str(cfg.dataset),
                "source": data.source,
                "train_examples": train_examples,
                "val_examples": val_examples,
                "val_fraction": cfg.resolved_val_fraction,
                "train_subset": cfg.train_subset,
                "split_seed": cfg.split_seed,
                "augment": augment,
            },
            "architecture": arch,
            "parameters": parameters,
            "schedule": describe_schedule(cfg, plan),
            "optimizer": {
                "name": "sgd",
                "momentum": momentum,
                "nesterov": cfg.nesterov and momentum > 0,
                "weight_decay": cfg.weight_decay,
            },
            "budget": {**plan.describe(), "batch_size": cfg.batch_size},
            "seed": cfg.seed,
            "device": str(rt.device),
            "world_size": rt.world_size,
            "config": cfg.fingerprint(),
        },
    )

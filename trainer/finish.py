"""The end of a run, on rank 0: calibrate the ensemble (the temperature and the served m),
write the SWA model when asked and the report, then mark the folder complete."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from snapens.folder import ModelFolder
from snapens.manifest import Manifest
from trainer.calibrate import calibrate
from trainer.config import TrainConfig
from trainer.report import write_report
from trainer.swa import swa_name, write_swa_model

if TYPE_CHECKING:
    from trainer.train import Trainer


def check_swa_target(cfg: TrainConfig, folder: ModelFolder) -> None:
    """With --swa, refuse (before training) to replace another run's `<name>-swa` folder
    unless --overwrite or --resume says this run owns it."""
    if cfg.swa:
        target = ModelFolder(cfg.repository, swa_name(folder.name))
        target.check_target(cfg.overwrite or cfg.resume, resume=False)


def finish_run(trainer: Trainer, seconds: float) -> tuple[Manifest, dict[str, Any]]:
    cfg, folder, history = trainer.cfg, trainer.folder, trainer.history
    targets = trainer.val_y.cpu().numpy().astype(np.int64)
    cycles = [s.cycle for s in folder.manifest.snapshots]
    extra: dict[str, Any] = {}
    changes: dict[str, Any] = {}
    if cycles:
        probs = np.stack([history.snapshot_probs[c].numpy() for c in cycles])
        calibration = calibrate(probs, targets, cfg.calibrate, cfg.default_m)
        extra["calibration"] = calibration.describe()
        changes = {
            "temperature": calibration.temperature,
            "default_m": calibration.default_m,
            "training": {**folder.manifest.training, "calibration": calibration.describe()},
        }
    # The folder is marked complete last: a run stopped before then (while writing the SWA
    # model or the report) is resumed and finished again, not left without them.
    manifest = folder.manifest.model_copy(update={**changes, "state": "complete"})
    if trainer.average is not None and trainer.average.count:
        began = time.perf_counter()
        network = trainer.average.network(trainer.training_pass())
        copy = trainer.fresh_copy()
        result = write_swa_model(
            ModelFolder(cfg.repository, swa_name(folder.name)),
            manifest,
            network,
            copy,
            trainer.data.input_shape,
            (trainer.val_x, trainer.val_y),
            trainer.verify_batch,
            trainer.average.count,
            cfg.calibrate,
        )
        # The SWA pass: batch-norm statistics, export, verification, evaluation, the folder.
        extra["swa"] = result.figures() | {"seconds": time.perf_counter() - began}
    report = write_report(
        folder,
        manifest,
        history,
        trainer.plan,
        trainer.schedule.lr_at,
        trainer.val_y.cpu(),
        seconds,
        extra,
    )
    return folder.finish(changes), report

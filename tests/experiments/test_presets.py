"""Every run of every preset is one the trainer accepts: its flags parse into a valid
configuration whose plan fits the budget (checked without the data or any training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.cifar10 import PRESETS, methods
from trainer.cli import build_parser
from trainer.config_file import build_config
from trainer.schedules import make_plan

# CIFAR-10's 45,000 training images at batch 128 (the subset preset's 5,000: 39).
ITERATIONS_PER_EPOCH = {"cpu": 351, "cpu-small": 39, "full": 351}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_run_of_the_preset_is_a_valid_trainer_run(name: str) -> None:
    preset = PRESETS[name]
    found = methods(preset, name)
    assert len({m.key for m in found}) == len(found)  # one result file each
    for base in ("step", "cosine", "snapshot_a0.2", "fge"):
        assert [m.seed for m in found if m.base == base] == list(preset.seeds)
    for method in found:
        for run in method.runs:
            flags = vars(build_parser().parse_args(list(run.args)))
            cfg = build_config({}, flags)
            plan = make_plan(cfg, ITERATIONS_PER_EPOCH[name])
            assert plan.epochs in (preset.epochs, preset.epochs // preset.cycles), run.name
            if method.base == "fge":
                assert cfg.swa and plan.cycles >= 2
            assert cfg.train_subset == preset.train_subset


def test_methods_can_be_chosen_by_name_in_order() -> None:
    from experiments.cifar10 import selected

    found = methods(PRESETS["cpu-small"], "cpu-small")
    chosen = selected(found, "fge_s1,cosine,step*")
    steps = ["step", *(f"step_s{seed}" for seed in PRESETS["cpu-small"].seeds[1:])]
    assert [m.key for m in chosen] == ["fge_s1", "cosine", *steps]
    assert selected(found, None) == found
    with pytest.raises(SystemExit, match="no method 'sgdr'"):
        selected(found, "sgdr")


def test_a_finished_result_is_evaluated_again_only_where_its_model_folders_are_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from experiments.cifar10 import finished_result

    fge = next(m for m in methods(PRESETS["cpu-small"], "cpu-small") if m.key == "fge")
    target = tmp_path / "fge.json"
    assert finished_result(fge, target) is None
    assert "not finished" in capsys.readouterr().out

    runs = [{"name": "fge", "folder": str(tmp_path / "fge"), "epochs": []}]
    target.write_text(json.dumps({"runs": runs}))
    (tmp_path / "fge").mkdir()
    (tmp_path / "fge" / "manifest.json").write_text("{}")
    assert finished_result(fge, target) is None  # its SWA model's folder is missing
    assert "fge-swa not here" in capsys.readouterr().out

    (tmp_path / "fge-swa").mkdir()
    (tmp_path / "fge-swa" / "manifest.json").write_text("{}")
    assert finished_result(fge, target) == {"runs": runs}


def test_the_served_ensemble_is_seed_0_of_the_best_method_whatever_else_is_here(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    synthetic_digits: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    from experiments import cifar10
    from snapens.manifest import read_manifest

    work, served = tmp_path / "work", tmp_path / "models"
    monkeypatch.setattr(cifar10, "ROOT", tmp_path)
    monkeypatch.setattr(cifar10, "WORK", work)
    monkeypatch.setattr(cifar10, "SERVED_REPOSITORY", served)
    served.mkdir()
    shutil.copytree(synthetic_digits, work / "cpu-small" / "snapshot_a0.2_s3")

    cifar10.install_served("cpu-small", "snapshot_a0.2")  # only another seed is here
    assert "snapshot_a0.2 (seed 0) is not here" in capsys.readouterr().out
    assert list(served.iterdir()) == []

    shutil.copytree(synthetic_digits, work / "cpu-small" / "snapshot_a0.2")
    (work / "cpu-small" / "snapshot_a0.2" / "checkpoint").mkdir(exist_ok=True)
    cifar10.install_served("cpu-small", "snapshot_a0.2")
    assert [p.name for p in served.iterdir()] == ["cifar10"]
    assert read_manifest(served / "cifar10").name == "cifar10"
    assert not (served / "cifar10" / "checkpoint").exists()
    assert "snapshot_a0.2 of the cpu-small preset is now models/cifar10" in capsys.readouterr().out

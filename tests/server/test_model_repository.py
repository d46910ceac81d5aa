"""The model repository: how many models it serves decides how their sessions' threads wait."""

from __future__ import annotations

import asyncio
import math
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from server.board import ProcessBoard
from server.errors import NotFound
from server.metrics import Metrics
from server.model import ServedModel
from server.model_repository import ModelRepository
from server.settings import ServerSettings
from tests.server.conftest import copy_model


def allow_spinning(model: ServedModel) -> str:
    """What the model's onnxruntime session was created with."""
    options = model.current().sessions[0].get_session_options()
    return str(options.get_session_config_entry("session.intra_op.allow_spinning"))


@pytest.mark.parametrize(
    ("models", "spinning", "expected"),
    [(1, "auto", "1"), (2, "auto", "0"), (2, "on", "1"), (1, "off", "0")],
)
def test_several_models_by_default_load_threads_that_do_not_spin(
    synthetic_digits: Path, tmp_path: Path, models: int, spinning: str, expected: str
) -> None:
    for i in range(models):
        copy_model(synthetic_digits, tmp_path, f"model{i}")
    settings = ServerSettings(repository=tmp_path, poll_interval_s=0, intra_op_spinning=spinning)

    async def loaded() -> list[str]:
        repository = ModelRepository(settings, Metrics())
        await repository.start()
        try:
            return [allow_spinning(model) for model in repository.models.values()]
        finally:
            await repository.close()

    assert asyncio.run(loaded()) == [expected] * models


def test_a_model_added_later_turns_spinning_off_at_each_next_load(
    synthetic_digits: Path, tmp_path: Path
) -> None:
    copy_model(synthetic_digits, tmp_path, "first")
    settings = ServerSettings(repository=tmp_path, poll_interval_s=0)

    async def spinning_after_each_step() -> list[dict[str, str]]:
        repository = ModelRepository(settings, Metrics())
        await repository.start()
        try:
            seen = [{n: allow_spinning(m) for n, m in repository.models.items()}]
            copy_model(synthetic_digits, tmp_path, "second")
            await repository.load("second")
            seen.append({n: allow_spinning(m) for n, m in repository.models.items()})
            await repository.load("first")
            seen.append({n: allow_spinning(m) for n, m in repository.models.items()})
            return seen
        finally:
            await repository.close()

    assert asyncio.run(spinning_after_each_step()) == [
        {"first": "1"},
        {"first": "1", "second": "0"},
        {"first": "0", "second": "0"},
    ]


def test_a_model_whose_folder_is_gone_is_unloaded_unless_the_repository_is(
    synthetic_digits: Path, tmp_path: Path
) -> None:
    """As Triton's polling: a removed model folder is unloaded at the next refresh (404
    after), but a repository that cannot be seen at all unloads nothing (before, a removed
    model went on being served and reported ready)."""
    root = tmp_path / "models"
    for name in ("first", "second"):
        copy_model(synthetic_digits, root, name)
    settings = ServerSettings(repository=root, poll_interval_s=0)

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        repository = ModelRepository(settings, Metrics())
        await repository.start()
        try:
            away = tmp_path / "away"
            root.rename(away)  # the volume is away: keep serving what is loaded
            await repository.refresh()
            kept = sorted(repository.models)
            away.rename(root)
            shutil.rmtree(root / "second")
            await repository.refresh()
            with pytest.raises(NotFound, match="unknown model 'second'"):
                repository.get("second")
            x = np.zeros((1, 1, 8, 8), np.float32)
            answered = (await repository.get("first").predict(x, None)).members
            return kept, sorted(repository.models), [str(c) for c in answered]
        finally:
            await repository.close()

    kept, after, answered = asyncio.run(scenario())
    assert kept == ["first", "second"]
    assert after == ["first"]
    assert answered


def test_one_of_several_processes_loads_its_share_of_the_cores_and_is_ready_with_the_others(
    synthetic_digits: Path, tmp_path: Path
) -> None:
    """Process 0 of two, given two threads: sessions of one thread under load (whose
    threads stop spinning after a run: the cores are the other process's too) and of two
    for a batch alone on the machine; ready only once process 1, which answers before its
    first load is done, has loaded too."""
    copy_model(synthetic_digits, tmp_path, "digits")
    settings = ServerSettings(repository=tmp_path, workers=2, intra_op_threads=2)
    loading = [1, 1]  # both answer before their first load is done
    board = ProcessBoard([-math.inf, -math.inf], loading, 0)

    async def scenario() -> tuple[list[tuple[int, str]], list[bool]]:
        repository = ModelRepository(settings, Metrics(), board)
        await repository.start()
        try:
            runtime = repository.get("digits").current()
            sessions = [runtime.groups[0].sessions[0], runtime.alone_groups[0].sessions[0]]
            seen = [(s.get_session_options().intra_op_num_threads, stops(s)) for s in sessions]
            readiness = [repository.ready]
            loading[1] = 0
            return seen, [*readiness, repository.ready]
        finally:
            await repository.close()

    seen, readiness = asyncio.run(scenario())
    assert seen == [(1, "1"), (2, "unset")]
    assert loading == [0, 0] and readiness == [False, True]


def stops(session: ort.InferenceSession) -> str:
    """Whether the session's threads stop spinning after each run."""
    options = session.get_session_options()
    try:
        return str(options.get_session_config_entry("session.force_spinning_stop"))
    except Exception:  # onnxruntime raises where the entry is not set
        return "unset"


def test_a_set_that_failed_to_load_loads_at_the_next_poll_once_its_files_are_repaired(
    synthetic_digits: Path, tmp_path: Path
) -> None:
    """A snapshot file missing, then put back without the manifest being rewritten (as an
    operator would): polling loads it. Before, only a load request did, and with several
    server processes it reaches one of them."""
    folder = copy_model(synthetic_digits, tmp_path, "digits") / "digits"
    snapshot = sorted((folder / "snapshots").iterdir())[-1]
    aside = tmp_path / snapshot.name
    snapshot.rename(aside)
    settings = ServerSettings(repository=tmp_path, poll_interval_s=0)

    metrics = Metrics()

    def failed_loads() -> float:
        labels = {"model": "digits", "outcome": "failed"}
        return metrics.registry.get_sample_value("snapens_reloads_total", labels) or 0.0

    async def scenario() -> list[tuple[bool, float]]:
        repository = ModelRepository(settings, metrics)
        await repository.start()
        try:
            seen = [(repository.ready, failed_loads())]
            await repository.refresh()  # nothing changed: no new attempt
            seen.append((repository.ready, failed_loads()))
            aside.rename(snapshot)
            await repository.refresh()
            return [*seen, (repository.ready, failed_loads())]
        finally:
            await repository.close()

    assert asyncio.run(scenario()) == [(False, 1.0), (False, 1.0), (True, 1.0)]

"""The manifest's default_m is what an answer averages by default; every snapshot is
loaded, so a request may ask for more (up to all of them) or fewer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from server.errors import Conflict
from server.metrics import Metrics
from server.model import Answer, ServedModel
from server.runtime import EnsembleRuntime
from server.settings import ServerSettings
from snapens.ensemble import combine, softmax
from snapens.manifest import read_manifest, write_manifest
from tests.server.conftest import FIGURES, LiveServer
from tests.server.test_runtime import own_outputs


def test_default_m_is_served_and_a_request_may_ask_for_any_loaded_m(
    serve: Callable[..., LiveServer], digits_repo: Path, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    folder = digits_repo / "digits"
    manifest = read_manifest(folder)
    write_manifest(folder, manifest.model_copy(update={"default_m": 2}))
    server = serve()
    body = {"instances": digit_images[0][:3].tolist()}
    with server.client() as http:
        meta = http.get("/v2/models/digits").json()["parameters"]
        assert meta["m"] == 2 and meta["loaded_snapshots"] == [1, 2, 3, 4, 5]
        assert [s["cycle"] for s in meta["snapshots"]] == [4, 5]
        default = http.post("/v1/models/digits:predict", json=body).json()
        assert default["m"] == 2 and default["snapshots"] == [4, 5]
        more = http.post("/v1/models/digits:predict", json={**body, "m": 4}).json()
        assert more["m"] == 4 and more["snapshots"] == [2, 3, 4, 5]
        too_many = http.post("/v1/models/digits:predict", json={**body, "m": 6})
        assert too_many.status_code == 400 and "between 1 and 5" in too_many.json()["error"]
    # The answers differ as the members averaged do.
    assert default["predictions"][0]["probabilities"] != more["predictions"][0]["probabilities"]


def test_the_server_setting_m_caps_what_is_loaded(
    serve: Callable[..., LiveServer], digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    server = serve(m=3)
    with server.client() as http:
        meta = http.get("/v2/models/digits").json()["parameters"]
        assert meta["m"] == 3 and meta["loaded_snapshots"] == [3, 4, 5]
        refused = http.post(
            "/v1/models/digits:predict",
            json={"instances": digit_images[0][:1].tolist(), "m": 4},
        )
        assert refused.status_code == 400


def test_an_answer_for_another_m_takes_its_figures_from_the_members_as_trained(
    serve: Callable[..., LiveServer], digits_repo: Path, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    folder = digits_repo / "digits"
    manifest = read_manifest(folder)
    write_manifest(folder, manifest.model_copy(update={"default_m": 2, "temperature": 3.0}))
    x = digit_images[0][:4]
    trained = own_outputs(folder, x, [2, 3, 4, 5])
    with serve().client() as http:
        body = http.post("/v1/models/digits:predict", json={"instances": x.tolist(), "m": 4}).json()
    expected = combine(softmax(np.log(trained) / 3.0), trained=trained)
    for n, prediction in enumerate(body["predictions"]):
        assert prediction["confidence"] == pytest.approx(expected.confidence[n], abs=1e-6)
        for name in FIGURES:
            assert prediction[name] == pytest.approx(getattr(expected, name)[n], abs=1e-6), name


def test_an_m_a_reload_took_away_while_the_request_waited_is_a_409(
    digits_repo: Path, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    """m is checked against the set serving when the request arrives; the batch runs on the
    set serving when it starts. If a reload swapped in fewer snapshots between the two, the
    answer must not quietly average fewer members than asked (it came back with m 4 or 2
    for m 5): the request gets a 409 saying so, as for a changed input."""
    folder = digits_repo / "digits"
    settings = ServerSettings(repository=digits_repo, providers="cpu")
    smaller = EnsembleRuntime.load(folder, 2, settings)
    x = digit_images[0][:1].astype(np.float32)

    async def scenario() -> tuple[BaseException | None, Answer]:
        model = ServedModel("digits", folder, settings, None, Metrics())
        await model.load()
        model.batcher.start()
        waiting = asyncio.create_task(model.predict(x, 5))
        await asyncio.sleep(0)  # m=5 checked against the five loaded; the batch not yet run
        model.runtime = smaller  # what a reload does
        refused = (await asyncio.gather(waiting, return_exceptions=True))[0]
        fitting = await model.predict(x, 2)
        await model.batcher.close()
        return refused if isinstance(refused, BaseException) else None, fitting

    refused, fitting = asyncio.run(scenario())
    assert isinstance(refused, Conflict) and refused.status == 409
    assert "now has 2 snapshots loaded, fewer than m=5" in refused.message
    assert fitting.members == [4, 5]

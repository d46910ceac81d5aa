"""The demo page at "/", driven end to end in headless Chromium against a real server,
and the read-only training-report route it shows plots from."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, FilePayload, Page, expect, sync_playwright

from tests.conftest import ROOT
from tests.server.conftest import LiveServer

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPORT_FILES = ("report.json", "learning_rate.png", "ensemble_size.png", "disagreement.png")
PLOTS_LOADED = """() => {
  const images = [...document.querySelectorAll('#report img')];
  return images.length > 0 && images.every((img) => img.complete && img.naturalWidth > 0);
}"""


def artifact(name: str) -> Path:
    folder = Path(os.environ.get("SNAPENS_TEST_ARTIFACTS") or ROOT / ".cache" / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def digit_png(pixels: np.ndarray, size: int = 128) -> bytes:
    """A digit image [1, 8, 8] in 0..16 as a greyscale PNG scaled up, as a user would send."""
    image = Image.fromarray((pixels[0] * 255 / 16).round().astype(np.uint8), mode="L")
    buffer = io.BytesIO()
    image.resize((size, size), Image.Resampling.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


def api_answer(server: LiveServer, image: bytes, **headers: str) -> dict[str, Any]:
    """The upload route's answer with every snapshot's vote: what the page must show."""
    with server.client(headers=headers) as http:
        response = http.post(
            "/v1/models/digits/images:predict",
            params={"members": "true"},
            content=image,
            headers={"Content-Type": "image/png"},
        )
    assert response.status_code == 200, response.text
    prediction: dict[str, Any] = response.json()["predictions"][0]
    return prediction


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if CHROMIUM is None:
        pytest.fail(
            "Chromium is not installed: install the package `chromium` (apt-get install chromium;"
            " `make test` does it when run as root)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab; fails the test on any uncaught script error or any request of the page
    answered 404."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on(
        "response",
        lambda response: errors.append(f"404 {response.url}") if response.status == 404 else None,
    )
    yield tab
    context.close()
    assert not errors, errors


def expect_votes(page: Page, prediction: dict[str, Any]) -> None:
    votes = page.locator("#votes li")
    expect(votes).to_have_count(len(prediction["members"]))
    for i, member in enumerate(prediction["members"]):
        vote = votes.nth(i)
        expect(vote.locator(".name")).to_have_text(member["class"])
        expect(vote.locator(".snapshot")).to_have_text(f"snapshot {member['cycle']}")
        drawn = re.fullmatch(
            r"--size: ([\d.]+)%;", vote.locator(".fill").get_attribute("style") or ""
        )
        assert drawn, "the bar has no size"
        share = member["probabilities"][member["label"]]
        assert float(drawn[1]) == pytest.approx(100 * share, abs=0.01)


def test_demo_page_shows_the_answer_the_votes_and_the_training_report(
    server: LiveServer, page: Page, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    image = digit_png(digit_images[0][0])
    expected = api_answer(server, image)
    page.goto(f"{server.url}/")
    expect(page.locator("#model option")).to_have_text(["digits"])
    page.select_option("#model", "digits")
    expect(page.locator("#model-info")).to_contain_text("5 snapshots loaded (cycles 1–5)")
    upload: FilePayload = {"name": "digit.png", "mimeType": "image/png", "buffer": image}
    page.set_input_files("#file", files=[upload])

    expect(page.locator("#answer-class")).to_have_text(expected["class"])
    expect(page.locator("#top li").first).to_have_attribute("data-class", expected["class"])
    expect(page.locator("#top li")).to_have_count(5)
    expect_votes(page, expected)
    differ = sum(member["label"] != expected["label"] for member in expected["members"])
    expect(page.locator("#verdict")).to_contain_text(
        f"{differ} of 5 snapshots voted differently" if differ else "All 5 snapshots agree"
    )
    figures = page.locator("#figures")
    expect(figures).to_contain_text("beyond the image being ambiguous")
    expect(figures).to_contain_text(f"{expected['mutual_information']:.3f} nats")
    expect(figures).to_contain_text(f"{expected['predictive_entropy']:.3f} nats")

    page.wait_for_function(PLOTS_LOADED)
    plots = page.locator("#report img")
    expect(plots).to_have_count(3)
    for i in range(3):
        assert (plots.nth(i).get_attribute("src") or "").startswith("blob:")
        assert plots.nth(i).get_attribute("alt")
    expect(page.locator("#report-summary")).to_contain_text("5 snapshots")
    page.screenshot(path=artifact("demo.png"), full_page=True)

    # Fewer snapshots: the page asks again and draws one bar per snapshot used.
    page.locator("#m").fill("2")
    expect(page.locator("#votes li")).to_have_count(2)
    expect(page.locator("#votes .snapshot")).to_have_text(["snapshot 4", "snapshot 5"])

    # A file the server cannot read: its error replaces the answer to the previous image.
    broken: FilePayload = {"name": "broken.png", "mimeType": "image/png", "buffer": b"not a png"}
    with server.client() as http:
        refused = http.post(
            "/v1/models/digits/images:predict",
            files={"file": ("broken.png", broken["buffer"], "image/png")},
        )
    assert refused.status_code in {400, 415}, refused.text
    page.set_input_files("#file", files=[broken])
    expect(page.locator("#status")).to_have_text(refused.json()["error"])
    expect(page.locator("#status")).to_have_class(re.compile(r"\berror\b"))
    expect(page.locator("#results")).to_be_hidden()
    # A file of the wrong type is refused by the page itself, with the same effect.
    page.set_input_files("#file", files=[upload])
    expect(page.locator("#results")).to_be_visible()
    text: FilePayload = {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"7"}
    page.set_input_files("#file", files=[text])
    expect(page.locator("#status")).to_have_text("notes.txt is not a PNG or JPEG image.")
    expect(page.locator("#results")).to_be_hidden()


def test_demo_page_has_an_icon(server: LiveServer, page: Page) -> None:
    """The icon the page names, and the same at /favicon.ico where browsers look unasked."""
    page.goto(f"{server.url}/")
    href = page.locator('link[rel="icon"]').get_attribute("href")
    assert href
    icons = [page.request.get(server.url + path) for path in (href, "/favicon.ico")]
    for icon in icons:
        assert icon.status == 200, icon.url
        assert icon.headers["content-type"] == "image/svg+xml"
        assert icon.body().lstrip().startswith(b"<svg")
    assert icons[0].body() == icons[1].body()
    # The page draws it: an image the browser can decode, as wide as its viewBox says.
    width = page.evaluate(
        """async (href) => {
          const img = new Image();
          img.src = href;
          await img.decode();
          return img.naturalWidth;
        }""",
        href,
    )
    assert width > 0


def test_demo_page_asks_for_the_api_key_and_sends_it(
    serve: Callable[..., LiveServer], page: Page, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    server = serve(api_key="s3cret")
    with server.client() as http:
        for path in ("/", "/demo/demo.js", "/demo/demo.css", "/demo/favicon.svg", "/favicon.ico"):
            assert http.get(path).status_code == 200, path
        assert http.get("/demo/__init__.py").status_code == 401
        assert http.get("/v1/models/digits/report/learning_rate.png").status_code == 401
    image = digit_png(digit_images[0][3])
    expected = api_answer(server, image, **{"X-API-Key": "s3cret"})

    page.goto(f"{server.url}/")
    expect(page.locator("#key-form")).to_be_visible()
    expect(page.locator("#status")).to_have_text("This server needs an API key.")
    page.fill("#api-key", "wrong")
    page.click("#key-form button")
    expect(page.locator("#key-form label")).to_contain_text("refused")
    page.fill("#api-key", "s3cret")
    page.click("#key-form button")
    expect(page.locator("#key-form")).to_be_hidden()
    expect(page.locator("#model")).to_have_value("digits")
    page.wait_for_function(PLOTS_LOADED)

    # Dropped rather than chosen: the drop zone takes the file from the drag's data.
    data = page.evaluate_handle(
        """(b64) => {
          const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
          const transfer = new DataTransfer();
          transfer.items.add(new File([bytes], 'digit.png', { type: 'image/png' }));
          return transfer;
        }""",
        base64.b64encode(image).decode(),
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": data})
    expect(page.locator("#answer-class")).to_have_text(expected["class"])
    expect_votes(page, expected)


def test_report_route_serves_only_the_trainers_report_files(
    serve: Callable[..., LiveServer], digits_repo: Path
) -> None:
    folder = digits_repo / "digits"
    server = serve()
    with server.client() as http:
        for name in REPORT_FILES:
            response = http.get(f"/v1/models/digits/report/{name}")
            assert response.status_code == 200, name
            assert response.content == (folder / name).read_bytes()
            kind = "application/json" if name.endswith(".json") else "image/png"
            assert response.headers["content-type"] == kind
        for name in ("manifest.json", "snapshots", "checkpoint", "001.onnx", "REPORT.JSON"):
            response = http.get(f"/v1/models/digits/report/{name}")
            assert response.status_code == 404 and "report files" in response.json()["error"]
        for raw in (
            "/v1/models/digits/report/..%2Fmanifest.json",
            "/v1/models/digits/report/%2E%2E%2Fdigits%2Fmanifest.json",
            "/v1/models/digits/report/snapshots%2F001.onnx",
            "/v1/models/..%2Fdigits/report/report.json",
        ):
            assert httpx.get(server.url + raw).status_code == 404, raw
        assert http.get("/v1/models/cats/report/report.json").status_code == 404
        (folder / "disagreement.png").unlink()
        missing = http.get("/v1/models/digits/report/disagreement.png")
        assert missing.status_code == 404 and "did not write" in missing.json()["error"]
        paths = http.get("/openapi.json").json()["paths"]
    assert "/v1/models/{name}/report/{file}" in paths
    assert "/" not in paths


def test_demo_page_starts_at_the_served_m_and_offers_every_loaded_snapshot(
    serve: Callable[..., LiveServer],
    digits_repo: Path,
    page: Page,
    digit_images: tuple[np.ndarray, np.ndarray],
) -> None:
    from snapens.manifest import read_manifest, write_manifest

    folder = digits_repo / "digits"
    write_manifest(folder, read_manifest(folder).model_copy(update={"default_m": 2}))
    server = serve()
    page.goto(f"{server.url}/")
    page.select_option("#model", "digits")
    expect(page.locator("#model-info")).to_contain_text(
        "5 snapshots loaded (cycles 1–5), the last 2 answer by default"
    )
    slider = page.locator("#m")
    expect(slider).to_have_value("2")
    expect(slider).to_have_attribute("max", "5")
    upload: FilePayload = {
        "name": "digit.png",
        "mimeType": "image/png",
        "buffer": digit_png(digit_images[0][0]),
    }
    page.set_input_files("#file", files=[upload])
    expect(page.locator("#votes li")).to_have_count(2)
    slider.fill("5")
    expect(page.locator("#votes li")).to_have_count(5)

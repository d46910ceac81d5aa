"""Regenerate docs/demo.png from what `make run` trains: the default digits ensemble,
served by `python -m server`, in headless Chromium, answering a held-out digit on which
its snapshots disagree.

    python docs/demo_screenshot.py      # needs the test tools (make test installs them)
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from playwright.sync_api import expect, sync_playwright
from sklearn.datasets import load_digits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fuzz import free_port, wait_ready  # noqa: E402
from tests.server.test_demo import CHROMIUM, CHROMIUM_ARGS, PLOTS_LOADED  # noqa: E402


def png(pixels: np.ndarray, size: int = 128) -> bytes:
    image = Image.fromarray((pixels * 255 / 16).round().astype(np.uint8), mode="L")
    buffer = io.BytesIO()
    image.resize((size, size), Image.Resampling.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


def most_disputed(url: str) -> np.ndarray:
    """The digit whose snapshots' votes split the most (ties: the most uncertain)."""
    images = load_digits().images
    predictions = []
    with httpx.Client(base_url=url, timeout=60) as http:
        for start in range(0, len(images), 256):  # the server's largest request
            batch = images[start : start + 256].tolist()
            answer = http.post("/v1/models/digits:predict", json={"instances": batch, "m": 5})
            predictions += answer.json()["predictions"]
    scores = [(p["vote_disagreement"], p["mutual_information"]) for p in predictions]
    return np.asarray(images[max(range(len(scores)), key=scores.__getitem__)])


def main() -> int:
    if CHROMIUM is None:
        raise SystemExit("Chromium is needed: apt-get install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        repository = Path(tmp) / "models"
        # make run's training command
        train = ["-m", "trainer", "--dataset", "digits", "--skip-if-exists", "--quiet"]
        subprocess.run([sys.executable, *train, "--repository", str(repository)], check=True)
        port = free_port()
        serve = ["-m", "server", "--port", str(port), "--log-level", "warning"]
        server = subprocess.Popen([sys.executable, *serve, "--repository", str(repository)])
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url)
            image = png(most_disputed(url))
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1100, "height": 900})
                page.goto(f"{url}/")
                page.select_option("#model", "digits")
                expect(page.locator("#model-info")).to_contain_text("5 snapshots loaded")
                page.locator("#m").fill("5")
                upload = {"name": "digit.png", "mimeType": "image/png", "buffer": image}
                page.set_input_files("#file", files=[upload])  # type: ignore[list-item]
                expect(page.locator("#votes li")).to_have_count(5)
                page.wait_for_function(PLOTS_LOADED)
                page.screenshot(path=str(ROOT / "docs" / "demo.png"), full_page=True)
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    print("docs/demo.png written")
    return 0


if __name__ == "__main__":
    sys.exit(main())

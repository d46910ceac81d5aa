"""/docs renders the API's operations in headless Chromium with every request off this
server blocked: Swagger UI comes from the package's files, not a CDN."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest
from playwright.sync_api import Route, expect, sync_playwright

from tests.server.conftest import LiveServer
from tests.server.test_demo import CHROMIUM, CHROMIUM_ARGS


def test_docs_render_their_operations_without_the_network(server: LiveServer) -> None:
    if CHROMIUM is None:
        pytest.fail("Chromium is not installed: apt-get install chromium (`make test` does it)")
    own_host = urlparse(server.url).netloc
    blocked: list[str] = []

    def only_this_server(route: Route) -> None:
        if urlparse(route.request.url).netloc == own_host:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort("internetdisconnected")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.route("**/*", only_this_server)
            page = context.new_page()
            page.goto(f"{server.url}/docs")
            operations = page.locator(".opblock")
            expect(operations.first).to_be_visible(timeout=30_000)
            summaries = page.locator(".opblock-summary-path").all_inner_texts()
            errors = page.locator(".errors-wrapper").count()
        finally:
            browser.close()
    assert blocked == []
    assert errors == 0
    assert len(summaries) >= 16
    assert "/v2/models/{name}/infer" in {s.replace("\u200b", "") for s in summaries}

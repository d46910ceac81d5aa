"""The deployment files, parsed once: the Dockerfile's stages and every YAML manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.deploy.dockerfile import Stage, parse

DEPLOY = ROOT / "deploy"
COMPOSE_FILES = (ROOT / "compose.yaml", ROOT / "compose.gpu.yaml")


def manifest_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml"), *COMPOSE_FILES])


def load_all(path: Path) -> list[dict[str, Any]]:
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


@pytest.fixture(scope="session")
def stages() -> dict[str, Stage]:
    return parse(ROOT / "Dockerfile")


@pytest.fixture(scope="session")
def serving_stage(stages: dict[str, Stage]) -> Stage:
    """The default build target: the last stage."""
    return list(stages.values())[-1]


@pytest.fixture(scope="session")
def kube_objects() -> dict[tuple[str, str], dict[str, Any]]:
    """Every Kubernetes object under deploy/, by (kind, name)."""
    objects = {}
    for path in manifest_files():
        for doc in load_all(path):
            if "kind" in doc and "apiVersion" in doc and doc["kind"] != "Kustomization":
                objects[doc["kind"], doc["metadata"]["name"]] = doc
    return objects

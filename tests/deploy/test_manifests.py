"""Compose, Kubernetes, KServe and Prometheus files: they load, and what their probes, ports,
secrets and volumes name exists and agrees with the image and the server's routes."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT
from tests.deploy.conftest import DEPLOY, load_all, manifest_files
from tests.deploy.dockerfile import Stage, env, exec_form, healthcheck
from tests.server.conftest import start_server

Objects = dict[tuple[str, str], dict[str, Any]]
Get = Callable[..., int]
API_KEY = "manifest-test-key"


@pytest.fixture(scope="module")
def get(trained_digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Get]:
    """GET a path of a live server (digits loaded, an API key set): the status code."""
    repository = tmp_path_factory.mktemp("served")
    shutil.copytree(
        trained_digits, repository / "digits", ignore=shutil.ignore_patterns("checkpoint")
    )
    server = start_server(repository, api_key=API_KEY)

    def status(path: str, key: str | None = None) -> int:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.get(server.url + path, headers=headers, timeout=10).status_code

    yield status
    server.stop()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_all(ROOT / "compose.yaml")[0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def probe_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's port as a number (probes may name the container port)."""
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == port)


def secret_keys(objects: Objects, name: str) -> set[str]:
    secret = objects["Secret", name]
    return {*secret.get("stringData", {}), *secret.get("data", {})}


def check_server_container(
    container: dict[str, Any], objects: Objects, get: Get, port: int
) -> None:
    """Port, probes and API key of a container running the serving image."""
    assert [p["containerPort"] for p in container["ports"]] == [port]
    variables = env_of(container)
    assert variables["SNAPENS_PORT"] == str(port)
    key = variables["SNAPENS_API_KEY"]["secretKeyRef"]
    assert key["key"] in secret_keys(objects, key["name"])
    expected = {"readinessProbe": "/v2/health/ready", "livenessProbe": "/v2/health/live"}
    for probe, path in expected.items():
        http = container[probe]["httpGet"]
        assert http["path"] == path and get(path) == 200  # probes send no API key
        assert probe_port(container, http["port"]) == port


def check_gpu_resources(resources: dict[str, Any]) -> None:
    for bound in ("requests", "limits"):
        assert int(resources[bound]["nvidia.com/gpu"]) == 1
        assert {"cpu", "memory"} <= set(resources[bound])


def image_user(stages: dict[str, Stage], stage: str) -> int:
    return int(stages[stage].last("USER").split(":")[0])


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_manifest_loads(path: Path) -> None:
    documents = load_all(path)
    assert documents and all(isinstance(doc, dict) for doc in documents)


def test_deployment_probes_gpu_secret_and_security(
    kube_objects: Objects, get: Get, stages: dict[str, Stage]
) -> None:
    pod = kube_objects["Deployment", "snapens-server"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    check_server_container(container, kube_objects, get, port=8000)
    startup = container["startupProbe"]["httpGet"]
    assert get(startup["path"]) == 200 and probe_port(container, startup["port"]) == 8000
    check_gpu_resources(container["resources"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == image_user(stages, "server")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    drain = float(env_of(container)["SNAPENS_GRACEFUL_SHUTDOWN_S"])
    assert pod["terminationGracePeriodSeconds"] > drain + 5  # the preStop pause, then the drain
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    claim = volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in kube_objects
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


def test_service_reaches_the_server_pods(kube_objects: Objects) -> None:
    deployment = kube_objects["Deployment", "snapens-server"]["spec"]
    service = kube_objects["Service", "snapens"]["spec"]
    labels = deployment["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    assert deployment["selector"]["matchLabels"].items() <= labels.items()
    (container,) = deployment["template"]["spec"]["containers"]
    (port,) = service["ports"]
    assert probe_port(container, port["targetPort"]) == 8000


def test_trainer_job_fills_the_served_volume(
    kube_objects: Objects, stages: dict[str, Stage]
) -> None:
    job = kube_objects["Job", "snapens-trainer"]["spec"]["template"]["spec"]
    (container,) = job["containers"]
    assert container["args"] == exec_form(stages["trainer"].last("CMD"))
    assert job["securityContext"]["runAsUser"] == image_user(stages, "trainer")
    volumes = {v["name"]: v for v in job["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert not mounts["/models"].get("readOnly", False)
    served = kube_objects["Deployment", "snapens-server"]["spec"]["template"]["spec"]["volumes"]
    claims = {
        v["persistentVolumeClaim"]["claimName"] for v in served if "persistentVolumeClaim" in v
    }
    assert volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]["claimName"] in claims


def test_kustomization_applies_everything_but_the_secret_example() -> None:
    (kustomization,) = load_all(DEPLOY / "kubernetes" / "kustomization.yaml")
    resources = kustomization["resources"]
    assert all((DEPLOY / "kubernetes" / name).is_file() for name in resources)
    assert "secret.example.yaml" not in resources


def test_kserve_runtime_speaks_v2_on_its_port(
    kube_objects: Objects, get: Get, stages: dict[str, Stage]
) -> None:
    service = kube_objects["InferenceService", "snapens"]["spec"]["predictor"]["model"]
    assert service["protocolVersion"] == "v2"
    assert service["storageUri"].startswith("pvc://")
    check_gpu_resources(service["resources"])
    runtime = kube_objects["ServingRuntime", service["runtime"]]["spec"]
    assert "v2" in runtime["protocolVersions"]
    assert service["modelFormat"]["name"] in {f["name"] for f in runtime["supportedModelFormats"]}
    (container,) = runtime["containers"]
    assert container["name"] == "kserve-container"
    check_server_container(container, kube_objects, get, port=8080)
    assert env_of(container)["SNAPENS_REPOSITORY"] == "/mnt/models"  # where KServe mounts it
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["runAsUser"] == image_user(stages, "server")


def test_compose_trains_then_serves_the_shared_volume(
    compose: dict[str, Any], stages: dict[str, Stage], serving_stage: Stage
) -> None:
    services = compose["services"]
    trainer, server = services["trainer"], services["server"]
    assert trainer["build"]["target"] == "trainer" and "trainer" in stages
    assert server["build"]["target"] == serving_stage.name
    assert server["depends_on"]["trainer"]["condition"] == "service_completed_successfully"
    assert trainer["command"] == exec_form(stages["trainer"].last("CMD"))
    volume = "models"
    assert f"{volume}:/models" in trainer["volumes"] and f"{volume}:/models:ro" in server["volumes"]
    assert volume in compose["volumes"]
    image_env = env(stages, serving_stage.name)
    published = [mapping.rsplit(":", 1)[1] for mapping in server["ports"]]
    assert published == [image_env["SNAPENS_PORT"]]
    _, command = healthcheck(serving_stage.last("HEALTHCHECK"))
    assert server["healthcheck"]["test"] == ["CMD", *command]
    assert server["environment"]["SNAPENS_API_KEY"].startswith("${SNAPENS_API_KEY:?")
    grace = float(server["stop_grace_period"].removesuffix("s"))
    assert grace > float(image_env["SNAPENS_GRACEFUL_SHUTDOWN_S"])


def test_prometheus_scrapes_the_servers_metrics_with_the_key(
    compose: dict[str, Any], get: Get, stages: dict[str, Stage], serving_stage: Stage
) -> None:
    prometheus = compose["services"]["prometheus"]
    assert prometheus["depends_on"]["server"]["condition"] == "service_healthy"
    config_mounts = [
        v for v in prometheus["volumes"] if v.endswith(":/etc/prometheus/prometheus.yml:ro")
    ]
    (mount,) = config_mounts
    (config,) = load_all(ROOT / mount.split(":")[0])
    (job,) = config["scrape_configs"]
    assert get(job["metrics_path"]) == 401
    assert get(job["metrics_path"], key=API_KEY) == 200
    port = env(stages, serving_stage.name)["SNAPENS_PORT"]
    assert job["static_configs"][0]["targets"] == [f"server:{port}"]
    (secret,) = prometheus["secrets"]
    assert job["authorization"]["credentials_file"] == f"/run/secrets/{secret}"
    assert compose["secrets"][secret] == {"environment": "SNAPENS_API_KEY"}


def test_gpu_override_reserves_an_nvidia_gpu_for_the_gpu_image() -> None:
    (override,) = load_all(ROOT / "compose.gpu.yaml")
    server = override["services"]["server"]
    assert server["build"]["args"]["ORT"] == "gpu"
    (device,) = server["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]

"""The serving image's own entry command and health check, run as real processes with the
image's environment (the repository and port swapped for a temporary folder and a free
port), and the image's static settings: user, port, build context."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.conftest import ROOT
from tests.deploy.dockerfile import Stage, env, exec_form, healthcheck, ignored
from tests.server.conftest import free_port, log_records, wait_until

API_KEY = "container-test-key"


def local(command: list[str]) -> list[str]:
    """The image's command with its `python` as this interpreter."""
    assert command[0] == "python", command
    return [sys.executable, *command[1:]]


def entry_command(stage: Stage) -> list[str]:
    """ENTRYPOINT then CMD, as Docker joins them."""
    command = exec_form(stage.last("ENTRYPOINT"))
    if stage.all("CMD"):
        command += exec_form(stage.last("CMD"))
    return local(command)


def image_environment(
    stages: dict[str, Stage], stage: str, repository: Path, port: int
) -> dict[str, str]:
    image = env(stages, stage)
    assert image["SNAPENS_REPOSITORY"] == "/models"
    outside = {k: v for k, v in os.environ.items() if not k.startswith("SNAPENS_")}
    # The API key as compose and Kubernetes pass it: the health check must not need it.
    return (
        outside
        | image
        | {
            "SNAPENS_REPOSITORY": str(repository),
            "SNAPENS_PORT": str(port),
            "SNAPENS_API_KEY": API_KEY,
        }
    )


def run_healthcheck(command: list[str], environment: dict[str, str], cwd: Path) -> int:
    return subprocess.run(
        command, env=environment, cwd=cwd, capture_output=True, timeout=30, check=False
    ).returncode


def live(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_entry_command_serves_passes_its_health_check_and_stops_on_sigterm(
    stages: dict[str, Stage], serving_stage: Stage, trained_digits: Path, tmp_path: Path
) -> None:
    entry = entry_command(serving_stage)
    options, check = healthcheck(serving_stage.last("HEALTHCHECK"))
    check = local(check)
    repository = tmp_path / "models"
    repository.mkdir()
    workdir = tmp_path / "workdir"  # the image's WORKDIR: nothing of the project in it
    workdir.mkdir()
    port = free_port()
    environment = image_environment(stages, serving_stage.name, repository, port)

    assert run_healthcheck(check, environment, workdir) == 1  # nothing listens yet
    process = subprocess.Popen(
        entry,
        env=environment,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: live(port), timeout=60)
        assert run_healthcheck(check, environment, workdir) == 1  # live, but no model yet

        # A trainer finishing into the volume: the folder appears whole, by a rename.
        staging = repository / ".digits.partial"
        shutil.copytree(trained_digits, staging, ignore=shutil.ignore_patterns("checkpoint"))
        staging.rename(repository / "digits")
        wait_until(lambda: run_healthcheck(check, environment, workdir) == 0, timeout=60)

        images = load_digits().images[:4, None].astype(np.float32)
        body = {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(images.shape),
                    "datatype": "FP32",
                    "data": images.reshape(-1).tolist(),
                }
            ],
            "outputs": [{"name": "probabilities"}, {"name": "label"}],
        }
        url = f"http://127.0.0.1:{port}/v2/models/digits/infer"
        assert httpx.post(url, json=body, timeout=30).status_code == 401
        answer = httpx.post(url, json=body, headers={"X-API-Key": API_KEY}, timeout=30)
        assert answer.status_code == 200, answer.text
        outputs = {
            o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in answer.json()["outputs"]
        }
        np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1, atol=1e-5)
        assert (outputs["label"] == outputs["probabilities"].argmax(axis=1)).all()

        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    # uvicorn drains, shuts down, then re-raises SIGTERM (as PID 1 in a container that
    # re-raise is ignored and the exit status is 0).
    assert process.returncode in (0, -signal.SIGTERM), out
    assert f"listening on http://0.0.0.0:{port}" in out
    records = log_records(out)
    assert any(r["msg"] == "stopped" for r in records), out
    assert not [r for r in records if r["level"] == "error"], out
    assert run_healthcheck(check, environment, workdir) == 1
    assert {"interval", "timeout", "start-period", "retries"} <= set(options)


def test_trainer_entry_command_keeps_a_complete_model(
    stages: dict[str, Stage], trained_digits: Path, tmp_path: Path
) -> None:
    trainer = stages["trainer"]
    command = entry_command(trainer)
    assert command[1:3] == ["-m", "trainer"]
    repository = tmp_path / "models"
    shutil.copytree(trained_digits, repository / "digits")
    manifest = (repository / "digits" / "manifest.json").read_bytes()
    assert command.count("/models") == 1
    command[command.index("/models")] = str(repository)
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert (repository / "digits" / "manifest.json").read_bytes() == manifest


def test_serving_image_runs_as_a_user_on_its_exposed_port_without_torch(
    stages: dict[str, Stage], serving_stage: Stage
) -> None:
    for stage in (serving_stage, stages["trainer"]):
        user = stage.last("USER").split(":")[0]
        assert user not in ("0", "root")
    assert serving_stage.last("EXPOSE") == env(stages, serving_stage.name)["SNAPENS_PORT"]
    assert env(stages, serving_stage.name)["SNAPENS_HOST"] == "0.0.0.0"
    assert serving_stage.last("STOPSIGNAL") == "SIGTERM"
    chain = [serving_stage]
    while chain[-1].base in stages:
        chain.append(stages[chain[-1].base])
    installs = " ".join(run for stage in chain for run in stage.all("RUN"))
    assert "torch" not in installs and "[train" not in installs
    images = [stage.base for stage in stages.values() if stage.base not in stages]
    assert images and all(":" in image and not image.endswith(":latest") for image in images)


@pytest.mark.parametrize(
    ("path", "left_out"),
    [
        (".venv/bin/python", True),
        (".git/HEAD", True),
        ("models/digits/manifest.json", True),
        ("models/digits/snapshots/001.onnx", True),
        ("data/cifar10/train.zip", True),
        ("experiments/results/cpu/report.json", True),
        (".cache/snapens/datasets/x.npz", True),
        ("snapens.egg-info/PKG-INFO", True),
        ("server/__pycache__/cli.cpython-311.pyc", True),
        ("tests/conftest.py", True),
        ("pyproject.toml", False),
        ("README.md", False),
        ("server/cli.py", False),
        ("server/protocol/v2_endpoints.py", False),
        ("server/demo/index.html", False),
        ("trainer/cli.py", False),
    ],
)
def test_build_context_holds_only_what_the_images_need(path: str, left_out: bool) -> None:
    assert ignored(ROOT / ".dockerignore", path) is left_out


def test_every_package_the_wheel_holds_reaches_the_build() -> None:
    """Each top-level package pyproject.toml packages is both in the build context and
    copied by the builder stage (a missing one builds an image that cannot import)."""
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    packages = [pattern.removesuffix("*") for pattern in include]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert packages
    for package in packages:
        assert (ROOT / package / "__init__.py").is_file(), package
        assert not ignored(ROOT / ".dockerignore", f"{package}/__init__.py"), package
        assert f"COPY {package} ./{package}" in dockerfile, package

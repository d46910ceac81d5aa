"""The server needs no torch: in an interpreter where `torch` and `trainer` cannot be
imported, every module of `server` imports, a model folder is written (snapens.synthetic),
the app serves it and the batch scorer scores with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import ROOT

SCRIPT = r"""
import importlib
import importlib.abc
import io
import json
import pkgutil
import runpy
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

BLOCKED = ("torch", "trainer")


class Blocked(importlib.abc.MetaPathFinder):
    # Refuses the blocked packages wherever they are installed.
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{name} cannot be imported here: the server must not need it")
        return None


sys.meta_path.insert(0, Blocked())
for name in BLOCKED:
    try:
        importlib.import_module(name)
    except ImportError:
        pass
    else:
        raise AssertionError(f"{name} imported despite the block")

import numpy as np
import pyarrow.parquet as pq

work = Path(sys.argv[1])
images, labels = np.load(work / "x.npy"), np.load(work / "y.npy")

from snapens.synthetic import write_model_folder

repo = work / "models"
write_model_folder(repo, "digits", images, labels, pixel_range=(0, 16))

import server

modules = sorted(m.name for m in pkgutil.walk_packages(server.__path__, "server."))
for name in modules:
    if name.rpartition(".")[2] == "__main__":
        # An entry point runs on import: run it as `python -m` would, asking for its help.
        sys.argv = [name, "--help"]
        with redirect_stdout(io.StringIO()) as help_text:
            try:
                runpy.run_module(name.removesuffix(".__main__"), run_name="__main__")
            except SystemExit as exit:
                assert exit.code == 0, (name, exit.code)
        assert "--repository" in help_text.getvalue(), name
    else:
        importlib.import_module(name)

from fastapi.testclient import TestClient

from server.app import create_app
from server.score.cli import main as score
from server.settings import ServerSettings

app = create_app(ServerSettings(repository=repo))
with TestClient(app) as http:
    deadline = time.monotonic() + 60
    while http.get("/v2/health/ready").status_code != 200:
        assert time.monotonic() < deadline, "the model did not load"
        time.sleep(0.05)
    answer = http.post("/v1/models/digits:predict", json={"instances": images[:8].tolist()})
assert answer.status_code == 200, answer.text
served = [p["label"] for p in answer.json()["predictions"]]

out = work / "scored.parquet"
assert score(["--repository", str(repo), "--input", str(work / "first.npy"), "--output", str(out),
              "--quiet"]) == 0
scored = pq.read_table(out).column("label").to_pylist()

loaded = sorted({m.partition(".")[0] for m in sys.modules} & set(BLOCKED))
print(json.dumps({"modules": modules, "served": served, "scored": scored, "blocked": loaded}))
"""


def test_the_server_imports_serves_and_scores_without_torch(
    tmp_path: Path, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = digit_images
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", labels)
    np.save(tmp_path / "first.npy", images[:40])
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    modules = set(report["modules"])
    assert {"server.app", "server.cli", "server.score.cli", "server.runtime"} <= modules
    assert {"server.__main__", "server.score.__main__", "server.score.ray_engine"} <= modules
    assert report["blocked"] == []
    assert len(report["scored"]) == 40 and report["scored"][:8] == report["served"]
    assert np.mean(np.array(report["scored"]) == labels[:40]) >= 0.9  # a fitted model

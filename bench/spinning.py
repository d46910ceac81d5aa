"""When onnxruntime's intra-op threads spin: the server's --intra-op-spinning, measured.

    python bench/spinning.py [--seconds 3] [--rounds 3]

onnxruntime's worker threads spin-wait for work instead of sleeping. `on` (onnxruntime's
own default) lets them go on spinning after a run until they give up; `run` stops them as
soon as a run ends (session.force_spinning_stop); `off` never spins; `auto`, the server's
default, is `on` for one fused model, `run` with one session per snapshot and `off` where
a server holds several models. With one session,
spinning between runs costs nothing but a core nobody else wanted; with several sessions
in one process (one per snapshot with --execution per-member, or several models) each
session has its own thread pool, and one pool's spinning takes the cores from the next
session's run. This measures, for each setting, on the serving benchmark's ensemble
(CIFAR-10 ResNet-20, 5 snapshots; bench/serve_load.py builds it the first time), over
loopback with v2 binary requests of one image:
- one model, fused graph, at concurrency 1 and 32;
- one model, one session per snapshot (--execution per-member), at concurrency 1 and 8;
- two models in one server (the same ensemble under two names), fused, at concurrency 2
  and 32, the clients split between the two models.
Each setting has its own three servers (one model fused, one model per-member, two models
fused); while one is measured every other is paused (SIGSTOP).
Interleaved rounds; prints the medians of images/s and p50 latency.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_load import Figures, ensure_model, load, load_arguments, serve, v2_request
from serve_peers import Idle, stop

SETTINGS = ("auto", "on", "run", "off")
MODELS = ("a", "b")  # the bench ensemble under two names


@dataclass(frozen=True)
class Scenario:
    name: str
    execution: str  # the server's --execution
    models: int  # the server's models, between which the clients are split
    concurrency: int

    @property
    def server(self) -> tuple[str, int]:
        return self.execution, self.models


SCENARIOS = (
    Scenario("one model, fused, concurrency 1", "fused", 1, 1),
    Scenario("one model, fused, concurrency 32", "fused", 1, 32),
    Scenario("one model, per-member, concurrency 1", "per-member", 1, 1),
    Scenario("one model, per-member, concurrency 8", "per-member", 1, 8),
    Scenario("two models, fused, concurrency 2", "fused", 2, 2),
    Scenario("two models, fused, concurrency 32", "fused", 2, 32),
)
SERVERS = tuple(dict.fromkeys(s.server for s in SCENARIOS))


def main() -> None:
    opts = load_arguments(__doc__, seconds=3.0).parse_args()
    folder = ensure_model(opts.repository, opts.model)
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 32, 32))
    requests = [v2_request(name, x) for name in MODELS]
    idle = Idle()
    started = []
    samples: dict[tuple[str, str], list[Figures]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repositories = {1: Path(tmp) / "one", 2: Path(tmp) / "two"}
        for count, repository in repositories.items():
            for name in MODELS[:count]:
                shutil.copytree(folder, repository / name)
        try:
            ports = {}
            for setting in SETTINGS:
                for execution, models in SERVERS:
                    process, port = serve(
                        repositories[models],
                        "--execution",
                        execution,
                        "--intra-op-spinning",
                        setting,
                        *opts.server_args.split(),
                    )
                    started.append(process)
                    key = f"{setting} {execution} {models}"
                    idle.add(key, process.pid, group=False)
                    ports[key] = port
            for _ in range(opts.rounds):
                for scenario in SCENARIOS:
                    for setting in SETTINGS:
                        key = f"{setting} {scenario.execution} {scenario.models}"
                        with idle.while_measuring(key):
                            figures = load(
                                ports[key],
                                requests[: scenario.models],
                                scenario.concurrency,
                                1,
                                opts.seconds,
                            )
                        samples.setdefault((scenario.name, setting), []).append(figures)
                        print(f"{scenario.name:40s} {setting:4s} {figures.row()}", flush=True)
        finally:
            for process in started:
                stop(process)
    print(f"\nmedians of {opts.rounds} interleaved rounds of {opts.seconds:g} s")
    header = " | ".join(f"{s}: img/s | {s}: p50 ms" for s in SETTINGS)
    print(f"| scenario | {header} |\n|---|{'---|' * 2 * len(SETTINGS)}")
    for scenario in SCENARIOS:
        cells = []
        for setting in SETTINGS:
            runs = samples[(scenario.name, setting)]
            cells.append(f"{statistics.median(f.images_per_s for f in runs):.1f}")
            cells.append(f"{statistics.median(f.p50_ms for f in runs):.2f}")
        print(f"| {scenario.name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()

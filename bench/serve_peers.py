"""This project's server against peer serving frameworks, on the same fused ensemble graph.

    python bench/serve_peers.py [--seconds 5] [--rounds 3] [--peers litserve,kserve,ray]
                                [--peer-figures graph|numpy]
                                [--keep-others-running] [--repository DIR --model NAME]
                                [--server-args="--intra-op-threads 1"]

The ensemble is serve_load's CIFAR-10 ResNet-20 of 5 snapshots (trained on first use).
Its fused graph (serve_load.fused_graph: server.fusion.fuse on the manifest's last
default_m snapshots, with its temperature) is written once under .cache/peers/: by
default with the label, confidence and disagreement figures in the graph, exactly as the
server's runtime builds and runs it; with --peer-figures numpy, the probabilities only,
the peers then computing the figures with snapens.ensemble.combine. Each peer serves
that file from one onnxruntime session (CPU provider) with the server's default session
options (bench/peers/common.py), answering each image with its mean probabilities,
label and disagreement figures:
- LitServe: a LitAPI with LitServe's batching (<= 32 requests, 2 ms), JSON
  (bench/peers/litserve_app.py);
- KServe: a kserve.Model in KServe's Python ModelServer on the Open Inference Protocol
  REST endpoint, measured with the very requests this server gets (v2 with binary
  tensors) and as v2 JSON; no batching, the Python server has none
  (bench/peers/kserve_app.py);
- Ray Serve: one replica with @serve.batch (<= 32 requests, 2 ms), JSON
  (bench/peers/rayserve_app.py).
Each peer is installed on first use into its own virtual environment under
.cache/peers/<peer>/venv, at the versions pinned below. This server runs with
SNAPENS_PROVIDERS=cpu unless the environment says otherwise (the raw path, serve_load's,
is on the CPU provider; it runs the graph without the figures).

Every server listens on 127.0.0.1, is started once and kept up across rounds, and is
checked before measuring: its answer to a test image must have this server's label, and
its probabilities and mutual information within 1e-5. Each round then measures, one
path after the other, raw in-process onnxruntime (batch 32 and batch 1), this server (v2
binary and v2 JSON) and each peer, with single-image requests at concurrency 32 and 1
from serve_load's closed-loop load generator (one keep-alive connection per client,
reading replies by their Content-Length or in chunks, as KServe's binary replies and Ray
Serve's come). While one path is measured, every other server is paused (SIGSTOP),
because LitServe's idle workers poll and would take CPU from whichever is measured;
with --keep-others-running they stay up. Either way the CPU they use meanwhile is
reported (paused, it should be next to none: a check that the pause holds). Prints
the medians over rounds as a markdown table, then ratios.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH / "peers"))

import common  # noqa: E402
from serve_load import (  # noqa: E402
    HOST,
    ROOT,
    Figures,
    ensure_model,
    free_port,
    fused_graph,
    load,
    load_arguments,
    median_figures,
    raw,
    serve,
    v2_json_request,
    v2_request,
)

from server.fused_figures import ANSWER_OUTPUTS  # noqa: E402
from server.fusion import (  # noqa: E402
    MEMBER_PROBABILITIES,
    PROBABILITIES,
    TRAINED_MEMBER_PROBABILITIES,
)
from server.settings import RuntimeSettings  # noqa: E402
from snapens.manifest import read_manifest  # noqa: E402

PEERS_DIR = ROOT / ".cache" / "peers"
ONNXRUNTIME = "onnxruntime==1.31.1"
NUMPY = "numpy==2.4.6"
TOLERANCE = 1e-5
CONCURRENCY = (32, 1)
READY_TIMEOUT_S = 300.0  # a Ray instance takes a while to start on a busy small machine


@dataclass(frozen=True)
class Peer:
    key: str  # as --peers names it
    title: str
    distribution: str  # whose version the table shows
    requirements: tuple[str, ...]  # pinned: what was installed when this was written
    app: str  # under bench/peers
    protocols: tuple[str, ...]  # see peer_request(); the first also tells when it is ready
    how: str  # its batching, as the table says it

    @property
    def venv(self) -> Path:
        return PEERS_DIR / self.key / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


PEERS = {
    peer.key: peer
    for peer in (
        Peer(
            "litserve",
            "LitServe",
            "litserve",
            ("litserve==0.2.19", ONNXRUNTIME, NUMPY),
            "litserve_app.py",
            ("JSON",),
            "batch <= 32, 2 ms",
        ),
        Peer(
            "kserve",
            "KServe ModelServer",
            "kserve",
            ("kserve==0.21.0", ONNXRUNTIME, NUMPY),
            "kserve_app.py",
            ("v2 binary", "v2 JSON"),
            "no batching",
        ),
        Peer(
            "ray",
            "Ray Serve",
            "ray",
            ("ray[serve]==2.60.0", ONNXRUNTIME, NUMPY),
            "rayserve_app.py",
            ("JSON",),
            "@serve.batch <= 32, 2 ms",
        ),
    )
}


# The fused graph and the peers' environments --------------------------------------------


def export_graph(folder: Path, answer: bool) -> Path:
    """serve_load.fused_graph() of the model's served snapshots (with `answer`, the figures
    in the graph, as the server runs it) as a file under .cache/peers/, named by its
    content: the graph is built on every run, so a change to the snapshots, the temperature
    or the way the server fuses them gives a new file, never a stale one."""
    manifest = read_manifest(folder)
    members = manifest.last(manifest.default_m)
    kind = "answer" if answer else "probabilities"
    graph = fused_graph(folder, answer)
    key = hashlib.sha256(graph).hexdigest()[:12]
    path = PEERS_DIR / f"{manifest.name}-m{len(members)}-{key}-{kind}.onnx"
    if not path.is_file():
        PEERS_DIR.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_bytes(graph)
        partial.replace(path)
    return path


def ensure_venv(peer: Peer) -> None:
    """The peer's own virtual environment with its pinned requirements, made on first use."""
    stamp = peer.venv / "snapens-requirements.txt"
    wanted = "\n".join(peer.requirements) + "\n"
    if peer.python.is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return
    print(
        f"installing {peer.title} into {peer.venv.relative_to(ROOT)}: {' '.join(peer.requirements)}"
    )
    log = peer.venv.parent / "install.log"
    peer.venv.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        steps = [
            [sys.executable, "-m", "venv", str(peer.venv)],
            [str(peer.python), "-m", "pip", "install", "--quiet", *peer.requirements],
        ]
        for step in steps:
            if subprocess.run(step, check=False, stdout=out, stderr=subprocess.STDOUT).returncode:
                last = log.read_text().strip().splitlines()[-1:] or ["no output"]
                raise RuntimeError(f"installing it failed ({last[0]}): see {log}")
    stamp.write_text(wanted)


def versions(python: Path, distributions: list[str]) -> dict[str, str]:
    """The installed versions of `distributions` in the environment of `python`."""
    script = (
        "import importlib.metadata as m, json, sys\n"
        "found = {}\n"
        "for d in sys.argv[1:]:\n"
        "    try: found[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(found))\n"
    )
    out = subprocess.run(
        [str(python), "-c", script, *distributions], capture_output=True, check=True, text=True
    ).stdout
    found: dict[str, str] = json.loads(out)
    return found


def check_common() -> None:
    """bench/peers/common.py still has the server's default session options and its fused
    graph's output names."""
    names = (ANSWER_OUTPUTS, MEMBER_PROBABILITIES, PROBABILITIES, TRAINED_MEMBER_PROBABILITIES)
    theirs = (
        common.ANSWER_OUTPUTS,
        common.MEMBER_PROBABILITIES,
        common.PROBABILITIES,
        common.TRAINED_MEMBER_PROBABILITIES,
    )
    if theirs != names:
        raise SystemExit(
            f"bench/peers/common.py names the fused graph's outputs {theirs}, "
            f"server.fusion and server.fused_figures {names}: update it"
        )
    fields = RuntimeSettings.model_fields
    ours = {
        "intra_op_threads": common.INTRA_OP_THREADS,
        "inter_op_threads": common.INTER_OP_THREADS,
        "intra_op_spinning": common.INTRA_OP_SPINNING,
        "parallel_execution": common.PARALLEL_EXECUTION,
        "graph_optimization": common.GRAPH_OPTIMIZATION,
    }
    for name, value in ours.items():
        if fields[name].default != value:
            raise SystemExit(
                f"bench/peers/common.py has {name} = {value!r}, the server's default is now "
                f"{fields[name].default!r}: update it"
            )


# Requests and answers --------------------------------------------------------------------


def json_request(path: str, x: np.ndarray) -> bytes:
    """A complete HTTP/1.1 request: one image as {"input": [flat pixel values]}."""
    body = json.dumps({"input": x.astype(np.float32).reshape(-1).tolist()}).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


def exchange(port: int, request: bytes, timeout: float = 60.0) -> Reply:
    """One request on a fresh connection, and its reply."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(request)
        stream = sock.makefile("rb")
        status = int(stream.readline().split()[1])
        headers = {}
        while (line := stream.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if not chunked(headers):
            return Reply(status, headers, stream.read(int(headers.get("content-length", 0))))
        parts = []
        while size := int(stream.readline().split(b";")[0], 16):
            parts.append(stream.read(size + 2)[:-2])
        return Reply(status, headers, b"".join(parts))


def chunked(headers: dict[str, str]) -> bool:
    return "chunked" in headers.get("transfer-encoding", "").lower()


V2_DATATYPES = {"FP32": "<f4", "INT64": "<i8"}


def v2_arrays(reply: Reply) -> dict[str, np.ndarray]:
    """The outputs of a v2 answer, JSON or with binary tensor data."""
    length = reply.headers.get("inference-header-content-length")
    split = int(length) if length else len(reply.body)
    header, blob = json.loads(reply.body[:split]), reply.body[split:]
    arrays, offset = {}, 0
    for output in header["outputs"]:
        dtype = V2_DATATYPES[output["datatype"]]
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:
            array = np.asarray(output["data"], dtype=dtype)
        else:
            array = np.frombuffer(blob[offset : offset + size], dtype=dtype)
            offset += size
        arrays[output["name"]] = array.reshape(output["shape"])
    return arrays


def json_arrays(reply: Reply) -> dict[str, np.ndarray]:
    """The answer of a JSON peer for one image, as arrays over a batch of one."""
    return {name: np.asarray([value]) for name, value in json.loads(reply.body).items()}


def same_answer(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> str | None:
    """What differs between two answers (label, probabilities, and any figure both carry);
    None when nothing does."""
    if "label" not in theirs or "probabilities" not in theirs:
        return f"no label or probabilities in the answer (it has {', '.join(theirs)})"
    if not np.array_equal(ours["label"], theirs["label"]):
        return f"label {theirs['label'].tolist()}, ours {ours['label'].tolist()}"
    for name in sorted(set(ours) & set(theirs) - {"label"}):
        if ours[name].shape != theirs[name].shape:
            return f"{name} of shape {theirs[name].shape}, ours {ours[name].shape}"
        gap = float(np.abs(ours[name].astype(np.float64) - theirs[name]).max())
        if gap > TOLERANCE:
            return f"{name} differs from ours by {gap:.2e}"
    return None


# Servers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """One measured path: where its requests go and how its answers read."""

    name: str
    server: str  # the process serving it, as `Idle` names it
    port: int
    request: bytes
    decode: Callable[[Reply], dict[str, np.ndarray]]
    model: str = ""  # whose batch histogram the server reports (this server only)
    how: str = ""  # its batching, for the table
    in_chunks: bool = False  # replies without Content-Length, in chunks (said in the table)

    def note(self) -> str:
        said = [self.how] if self.how else []
        if self.in_chunks:
            said.append("chunked replies")
        return f" ({', '.join(said)})" if said else ""

    def measure(self, concurrency: int, seconds: float) -> Figures:
        return load(self.port, self.request, concurrency, 1, seconds, self.model)


def peer_request(
    protocol: str, x: np.ndarray
) -> tuple[bytes, Callable[[Reply], dict[str, np.ndarray]]]:
    """The request a peer gets in `protocol` for the image x, and how its answer reads."""
    if protocol == "v2 binary":
        return v2_request(common.MODEL_NAME, x), v2_arrays
    if protocol == "v2 JSON":
        return v2_json_request(common.MODEL_NAME, x), v2_arrays
    return json_request("/predict", x), json_arrays


def _stat_fields(pid: str) -> list[str] | None:
    """/proc/PID/stat after the command's ")": state ppid pgrp session ..., utime and stime
    at 11 and 12; None where the process has gone (or off Linux)."""
    try:
        return (Path("/proc") / pid / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _processes() -> Iterator[tuple[int, list[str]]]:
    """(pid, stat fields) of every process /proc lists; none off Linux."""
    if not Path("/proc/self/stat").exists():
        return
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(entry.name)) is not None:
            yield int(entry.name), fields


def session_processes(leader: int) -> list[int]:
    """Every process of the session `leader` started (a peer's); off Linux, the leader. A
    session, not a process group: Ray puts each of its actors (the Serve controller, proxy
    and replicas) in a group of its own, inside the session of the process that started
    the cluster."""
    if not Path("/proc/self/stat").exists():
        return [leader]
    return [pid for pid, fields in _processes() if int(fields[3]) == leader]


def _signal_session(leader: int, signum: int) -> None:
    for pid in session_processes(leader):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def stop(process: subprocess.Popen[bytes], group: bool = False) -> None:
    """SIGTERM, then SIGKILL after 30 s; with `group` (a peer, started as the leader of its
    own session), then SIGKILL to whatever it left behind in that session."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if group:
        _signal_session(process.pid, signal.SIGKILL)


def start_peer(
    peer: Peer, graph: Path, request: bytes, started: list[subprocess.Popen[bytes]]
) -> int:
    """The peer's app on a free loopback port, once it answers `request` with a 200 (the
    process is appended to `started` at once, so that it is stopped whatever happens);
    RuntimeError if it exits or does not answer in time."""
    port = free_port()
    log = PEERS_DIR / peer.key / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(peer.python), str(BENCH / "peers" / peer.app), str(graph), str(port)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session, which stop() ends
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"},
        )
    started.append(process)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with status {process.returncode}: see {log}")
        with contextlib.suppress(OSError, ValueError, IndexError):
            if exchange(port, request, timeout=10).status == 200:
                return port
        time.sleep(0.5)
    raise RuntimeError(f"no answer within {READY_TIMEOUT_S:g} s: see {log}")


class Idle:
    """The servers not being measured. By default each is paused (SIGSTOP to its process,
    or to every process of its session, a peer's) while another is measured and resumed
    after, so that no idle server's polling takes CPU from the one measured: LitServe's
    workers poll even when idle, about a sixth of a core. With `pause` off they stay up.
    Either way this counts the CPU they use meanwhile, from the user and system time /proc
    gives (Linux only; elsewhere it reports nothing): paused, it should be next to none."""

    def __init__(self, pause: bool = True) -> None:
        self.pause = pause
        self.servers: dict[str, tuple[int, bool]] = {}  # name: (pid, group)
        self.cpu_s: dict[str, float] = {}
        self.wall_s: dict[str, float] = {}

    def add(self, name: str, pid: int, group: bool) -> None:
        self.servers[name] = (pid, group)

    def cpu(self) -> dict[str, float]:
        """CPU seconds each server has used so far."""
        ticks = dict.fromkeys(self.servers, 0)
        leaders = {pid: name for name, (pid, group) in self.servers.items() if group}
        alone = {pid: name for name, (pid, group) in self.servers.items() if not group}
        for pid, fields in _processes():
            name = alone.get(pid) or leaders.get(int(fields[3]))
            if name is not None:
                ticks[name] += int(fields[11]) + int(fields[12])
        per_s = os.sysconf("SC_CLK_TCK")
        return {name: count / per_s for name, count in ticks.items()}

    def _signal(self, name: str, signum: int) -> None:
        pid, group = self.servers[name]
        if group:
            _signal_session(pid, signum)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)

    @contextlib.contextmanager
    def while_measuring(self, busy: str | None) -> Iterator[None]:
        """Pauses every server but `busy` during the block (unless pausing is off), and
        counts the CPU they use meanwhile: next to none where the pause holds them all."""
        others = [name for name in self.servers if name != busy]
        if self.pause:
            for name in others:
                self._signal(name, signal.SIGSTOP)
        before, started = self.cpu(), time.perf_counter()
        try:
            yield
        finally:
            after, elapsed = self.cpu(), time.perf_counter() - started
            if self.pause:
                for name in others:
                    self._signal(name, signal.SIGCONT)
        for name in others:
            self.cpu_s[name] = self.cpu_s.get(name, 0.0) + after[name] - before[name]
            self.wall_s[name] = self.wall_s.get(name, 0.0) + elapsed

    def report(self) -> str:
        cores = [
            f"{name} {self.cpu_s[name] / self.wall_s[name]:.2f}"
            for name in self.servers
            if self.wall_s.get(name)
        ]
        if not cores:
            return ""
        state = "paused" if self.pause else "idle"
        return (
            f"\nCPU cores each server used while {state}, during the other measurements: "
            + ", ".join(cores)
        )


# Report ----------------------------------------------------------------------------------

RAW = "raw onnxruntime, in-process"
OURS = "this server"


def table(names: list[str], results: dict[tuple[str, int], Figures], notes: dict[str, str]) -> None:
    print("| path | c=32 img/s | c=32 p50 ms | c=1 img/s | c=1 p50 ms |\n|---|---|---|---|---|")
    notes = {RAW: " (batch 32 / batch 1, no figures)", **notes}
    for name in names:
        many, one = results[(name, 32)], results[(name, 1)]
        print(
            f"| {name}{notes.get(name, '')} | {many.images_per_s:.1f} | {many.p50_ms:.2f} | "
            f"{one.images_per_s:.1f} | {one.p50_ms:.2f} |"
        )


def ratios(ours: str, peers: list[str], results: dict[tuple[str, int], Figures]) -> None:
    o32, o1 = results[(ours, 32)], results[(ours, 1)]
    print(f"\n{ours}, against:")
    for name in peers:
        p32, p1 = results[(name, 32)], results[(name, 1)]
        print(
            f"- {name}: images/s at c=32 {o32.images_per_s / p32.images_per_s:.2f}x theirs; "
            f"p50 at c=1 {o1.p50_ms:.2f} ms against {p1.p50_ms:.2f} ms "
            f"(theirs {p1.p50_ms / o1.p50_ms:.2f}x ours, {p1.p50_ms - o1.p50_ms:+.2f} ms)"
        )
    r32, r1 = results[(RAW, 32)], results[(RAW, 1)]
    print(
        f"- {RAW}: images/s at c=32 / at batch 32 {o32.images_per_s / r32.images_per_s:.2f}; "
        f"p50 at c=1 - at batch 1 {o1.p50_ms - r1.p50_ms:+.2f} ms"
    )


def versions_line(title: str, found: dict[str, str]) -> str:
    return f"{title}: " + ", ".join(f"{name} {version}" for name, version in found.items())


def interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the servers as Ctrl-C does


# Main ------------------------------------------------------------------------------------


def start_peers(
    peers: list[Peer],
    graph: Path,
    x: np.ndarray,
    started: list[subprocess.Popen[bytes]],
    skipped: dict[str, str],
    idle: Idle,
) -> list[Served]:
    """Each peer's paths, once it answers (and its processes, to `idle`); a peer that does
    not goes to `skipped`."""
    paths = []
    for peer in peers:
        print(f"starting {peer.title}", flush=True)
        try:
            port = start_peer(peer, graph, peer_request(peer.protocols[0], x)[0], started)
        except RuntimeError as exc:
            skipped[peer.title] = str(exc)
            print(f"{peer.title} NOT MEASURED: {exc}", flush=True)
            continue
        idle.add(peer.title, started[-1].pid, group=True)
        for protocol in peer.protocols:
            request, decode = peer_request(protocol, x)
            name = f"{peer.title}, {protocol}"
            paths.append(Served(name, peer.title, port, request, decode, how=peer.how))
    return paths


def checked(
    paths: list[Served], reference: dict[str, np.ndarray], skipped: dict[str, str]
) -> list[Served]:
    """The paths whose answer to the test image is this server's (`reference`), marked to
    be read in chunks where they answer so; the others go to `skipped`."""
    kept = []
    for path in paths:
        why: str | None
        try:
            reply = exchange(path.port, path.request)
            if reply.status != 200:
                why = f"answered {reply.status}: {reply.body[:300]!r}"
            else:
                why = same_answer(reference, path.decode(reply))
        except (OSError, ValueError, KeyError, IndexError) as exc:
            why = f"no answer that reads ({exc!r})"
        if why is not None:
            skipped[path.name] = f"its answer is not this server's: {why}"
            print(f"{path.name} NOT MEASURED: {skipped[path.name]}", flush=True)
            continue
        kept.append(replace(path, in_chunks=chunked(reply.headers)))
    return kept


def main() -> None:
    parser = load_arguments(__doc__, seconds=5.0)
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"comma-separated subset of {','.join(PEERS)} (empty: none)",
    )
    parser.add_argument(
        "--peer-figures",
        choices=("graph", "numpy"),
        default="graph",
        help="where the peers get the label and figures: graph, from the fused graph as this "
        "server does (the same work); numpy, from snapens.ensemble.combine on the graph's "
        "probabilities (what a user of a peer would write, without server.fused_figures)",
    )
    parser.add_argument(
        "--keep-others-running",
        action="store_true",
        help="leave the servers not being measured running (default: paused with SIGSTOP) "
        "and report the CPU they use while idle",
    )
    opts = parser.parse_args()
    chosen = [p.strip() for p in opts.peers.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PEERS]
    if unknown:
        parser.error(f"unknown peers {', '.join(unknown)}: choose among {', '.join(PEERS)}")
    signal.signal(signal.SIGTERM, interrupted)
    # The peers and the raw path run onnxruntime's CPU provider; so does this server, unless
    # the environment says otherwise.
    os.environ.setdefault("SNAPENS_PROVIDERS", "cpu")

    check_common()
    folder = ensure_model(opts.repository, opts.model)
    manifest = read_manifest(folder)
    graph = export_graph(folder, answer=opts.peer_figures == "graph")
    skipped: dict[str, str] = {}
    peers, theirs = [], {}
    for peer in (PEERS[p] for p in dict.fromkeys(chosen)):
        try:
            ensure_venv(peer)
            theirs[peer.key] = versions(peer.python, [peer.distribution, "onnxruntime", "numpy"])
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            skipped[peer.title] = str(exc)
            print(f"{peer.title} NOT MEASURED: {exc}", flush=True)
            continue
        peers.append(peer)
    installed = {d.metadata["Name"] for d in importlib.metadata.distributions()}
    runtime = "onnxruntime-gpu" if "onnxruntime-gpu" in installed else "onnxruntime"
    ours = versions(Path(sys.executable), [runtime, "fastapi", "uvicorn"])
    figures_from = {
        "graph": "in the fused graph, as this server computes them",
        "numpy": "snapens.ensemble.combine (numpy) after the graph",
    }
    print(
        f"model {manifest.name}: {manifest.training['architecture']}, fused graph of its "
        f"last {manifest.default_m} snapshots ({graph.relative_to(ROOT)}); "
        f"{os.cpu_count()} CPU cores; {opts.rounds} rounds of {opts.seconds:g} s per "
        "measurement; single-image requests",
        f"the peers' label and figures: {figures_from[opts.peer_figures]}",
        versions_line(
            f"this server (--providers {os.environ['SNAPENS_PROVIDERS']} "
            f"{opts.server_args})".replace(" )", ")"),
            ours,
        ),
        *(versions_line(p.title, theirs[p.key]) for p in peers),
        sep="\n",
        flush=True,
    )
    peers = [replace(p, title=f"{p.title} {theirs[p.key].get(p.distribution, '?')}") for p in peers]

    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 32, 32))
    ours_started: list[subprocess.Popen[bytes]] = []  # this server, in our process group
    started: list[subprocess.Popen[bytes]] = []  # the peers, each in its own
    samples: dict[tuple[str, int], list[Figures]] = {}
    idle = Idle(pause=not opts.keep_others_running)
    try:
        server, port = serve(
            opts.repository,
            "--execution",
            "fused",
            "--max-batch-size",
            "64",
            *shlex.split(opts.server_args),
        )
        ours_started.append(server)
        idle.add(OURS, server.pid, group=False)
        mine = [
            Served(
                OURS + ", v2 binary", OURS, port, v2_request(opts.model, x), v2_arrays, opts.model
            ),
            Served(
                OURS + ", v2 JSON",
                OURS,
                port,
                v2_json_request(opts.model, x),
                v2_arrays,
                opts.model,
            ),
        ]
        reference = v2_arrays(exchange(port, mine[1].request))
        peer_paths = start_peers(peers, graph, x, started, skipped, idle)
        paths = checked(mine, reference, skipped)
        if len(paths) < len(mine):
            raise SystemExit(f"this server does not answer as expected: {skipped}")
        paths += checked(peer_paths, reference, skipped)
        print(
            f"checked: each path measured answers the test image with this server's label, "
            f"probabilities and mutual information (within {TOLERANCE:g})",
            flush=True,
        )

        for round_ in range(1, opts.rounds + 1):
            for concurrency in CONCURRENCY:
                with idle.while_measuring(None):
                    figures = raw(folder, concurrency, opts.seconds)
                samples.setdefault((RAW, concurrency), []).append(figures)
                print(
                    f"round {round_}  {RAW:44s} batch {concurrency:2d}  {figures.row()}", flush=True
                )
            for path in list(paths):
                for concurrency in CONCURRENCY:
                    try:
                        with idle.while_measuring(path.server):
                            figures = path.measure(concurrency, opts.seconds)
                    except (OSError, RuntimeError, asyncio.IncompleteReadError) as exc:
                        if path.model:  # this server: no table without it
                            raise
                        skipped[path.name] = f"failed in round {round_}: {exc!r}"
                        print(f"{path.name} NOT MEASURED: {skipped[path.name]}", flush=True)
                        paths.remove(path)
                        break
                    samples.setdefault((path.name, concurrency), []).append(figures)
                    print(
                        f"round {round_}  {path.name:44s} c={concurrency:2d}      {figures.row()}",
                        flush=True,
                    )
    finally:
        for process in started:
            stop(process, group=True)
        for process in ours_started:
            stop(process)

    results = {key: median_figures(values) for key, values in samples.items()}
    print(f"\nmedians of {opts.rounds} interleaved rounds of {opts.seconds:g} s")
    table([RAW, *(p.name for p in paths)], results, {p.name: p.note() for p in paths})
    ratios(paths[0].name, [p.name for p in paths[2:]], results)
    if idle.report():
        print(idle.report())
    for name, why in skipped.items():
        print(f"\n{name} was not measured: {why}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)  # the servers were stopped on the way out

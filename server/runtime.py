"""The ensemble runtime on onnxruntime: the last m snapshots of one model folder, loaded
and checked, ready to turn a batch of pixels into member probabilities.

Shared by the HTTP server and the batch scorer. Two execution paths give the same
numbers: `fused` (one graph, one session.run per batch; see server.fusion) and
`per-member` (one session per snapshot, kept for comparison). Which providers the
sessions ask for is server.providers' choice.

The members are run in two groups: the served ones (the last default_m, what a default
answer averages) and the earlier ones, loaded so that a request may ask for a larger m.
A batch runs the earlier group only when one of its requests asks for them, so loading
every snapshot costs memory, not time.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from server.fused_figures import ANSWER_OUTPUTS
from server.fusion import (
    MEMBER_PROBABILITIES,
    PROBABILITIES,
    TRAINED_MEMBER_PROBABILITIES,
    fuse,
)
from server.providers import (
    CPU,
    GPU_PROVIDERS,
    PREFERENCE,
    ProviderUnavailable,
    RuntimeLoadError,
    choose_providers,
    provider_options,
)
from server.settings import Execution, GraphOptimization, Providers, RuntimeSettings, Spinning
from snapens.ensemble import EnsembleResult, combine, softmax
from snapens.manifest import Manifest, ManifestError, SnapshotEntry, read_manifest, read_snapshot

__all__ = [
    "BatchAnswer",
    "EnsembleRuntime",
    "Float32Array",
    "MemberGroup",
    "Prediction",
    "RuntimeLoadError",
    "intra_op_spinning",
    "session_options",
]

log = logging.getLogger("snapens.runtime")

OPTIMIZATION = {
    GraphOptimization.DISABLE: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    GraphOptimization.BASIC: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    GraphOptimization.EXTENDED: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    GraphOptimization.ALL: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

Float32Array = npt.NDArray[np.float32]


def intra_op_spinning(settings: RuntimeSettings, models: int = 1, processes: int = 1) -> Spinning:
    """What --intra-op-spinning auto means where `models` are served (bench/spinning.py):
    on for one fused model; run with one session per snapshot, whose pools would each spin
    against the next session's run, or for the sessions of one of several server processes
    under load, whose pools would spin against the other processes' batches; off for
    several models, whose batches run at once."""
    if settings.intra_op_spinning != Spinning.AUTO:
        return settings.intra_op_spinning
    if models > 1:
        return Spinning.OFF
    if processes > 1 or settings.execution != Execution.FUSED:
        return Spinning.RUN
    return Spinning.ON


R = TypeVar("R", bound=RuntimeSettings)


def available_cores() -> int:
    """The cores this process may run on (its affinity, where the system tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def process_share(settings: R, processes: int) -> R:
    """The settings of the sessions of one of `processes` server processes under load:
    its share of the intra-op threads (--intra-op-threads, 0: every core)."""
    threads = settings.intra_op_threads or available_cores()
    return settings.model_copy(update={"intra_op_threads": max(1, threads // processes)})


def session_options(settings: RuntimeSettings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.graph_optimization_level = OPTIMIZATION[settings.graph_optimization]
    options.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL
        if settings.parallel_execution
        else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    options.log_severity_level = 3
    spinning = intra_op_spinning(settings)
    allow = "0" if spinning == Spinning.OFF else "1"
    options.add_session_config_entry("session.intra_op.allow_spinning", allow)
    if spinning == Spinning.RUN:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


@dataclass(frozen=True)
class Prediction:
    member_probs: Float32Array  # [m, N, K] softmax(z / T)
    mean: Float32Array  # [N, K]
    result: EnsembleResult | None = None  # the served members' answer, where the graph gave it
    trained: Float32Array | None = None  # [m, N, K] softmax(z), where T is not 1

    @property
    def trained_probs(self) -> Float32Array:
        """The members as trained (temperature 1), which the disagreement figures describe."""
        return self.member_probs if self.trained is None else self.trained


@dataclass(frozen=True)
class BatchAnswer:
    """A batch's member probabilities (the last k loaded, at least the served) and the
    ensemble's answer from the served members."""

    prediction: Prediction
    result: EnsembleResult

    def rows(self, start: int, stop: int) -> BatchAnswer:
        p = self.prediction
        trained = None if p.trained is None else p.trained[:, start:stop]
        part = Prediction(p.member_probs[:, start:stop], p.mean[start:stop], None, trained)
        return BatchAnswer(part, self.result.rows(start, stop))


@dataclass(frozen=True)
class MemberGroup:
    """Consecutive members run together: one fused session, or one session per member.
    A fused group that `answers` also returns its ensemble's label and figures."""

    size: int
    sessions: list[ort.InferenceSession]
    execution: Execution
    manifest: Manifest
    answers: bool = False

    def run(self, x: Float32Array) -> Prediction:
        feed = {self.manifest.input.name: x}
        temperature = self.manifest.temperature
        if self.execution == Execution.FUSED:
            names = [MEMBER_PROBABILITIES, PROBABILITIES]
            if temperature != 1.0:
                names.append(TRAINED_MEMBER_PROBABILITIES)
            if self.answers:
                names += ANSWER_OUTPUTS
            member_probs, mean, *rest = self.sessions[0].run(names, feed)
            trained = rest.pop(0) if temperature != 1.0 else None
            result = None
            if rest:
                figures = dict(zip(ANSWER_OUTPUTS, rest, strict=True))
                result = EnsembleResult(probabilities=mean, **figures)
            return Prediction(member_probs, mean, result, trained)
        output = self.manifest.output.name
        logits = np.stack([s.run([output], feed)[0] for s in self.sessions])
        stacked = softmax(logits / temperature).astype(np.float32)
        trained = softmax(logits).astype(np.float32) if temperature != 1.0 else None
        return Prediction(stacked, stacked.mean(axis=0), None, trained)


@dataclass
class EnsembleRuntime:
    """The last m snapshots of one model, on onnxruntime sessions."""

    model_dir: Path
    manifest: Manifest
    members: list[SnapshotEntry]
    execution: Execution
    groups: list[MemberGroup]  # the earlier members (if any are loaded), then the served
    providers: list[str]
    warnings: list[str] = field(default_factory=list)
    # The same groups on sessions that use every core, for a batch that runs alone on the
    # machine where several server processes share it (server.board); else none.
    alone_groups: list[MemberGroup] = field(default_factory=list)

    @property
    def m(self) -> int:
        """The snapshots loaded."""
        return len(self.members)

    @property
    def default_m(self) -> int:
        """The snapshots an answer averages unless a request asks for another m."""
        return self.groups[-1].size

    @property
    def served(self) -> list[SnapshotEntry]:
        """The members a default answer averages: the last default_m loaded."""
        return self.members[-self.default_m :]

    @property
    def sessions(self) -> list[ort.InferenceSession]:
        return [s for group in self.groups for s in group.sessions]

    @classmethod
    def load(
        cls,
        model_dir: Path,
        m: int | None,
        settings: RuntimeSettings,
        every_snapshot: bool = False,
        alone: RuntimeSettings | None = None,
    ) -> EnsembleRuntime:
        """Load and check the last m snapshots (at most the number there are); m None: the
        manifest's default_m, or with every_snapshot all of them, so that a request may ask
        for more than the default (the server does). Answers default to m, else the
        manifest's default_m. With `alone`, the settings of a batch that runs alone on the
        machine, a second set of sessions is loaded with them where the snapshots run on
        the CPU. Raises ManifestError or RuntimeLoadError saying why."""
        model_dir = Path(model_dir)
        manifest = read_manifest(model_dir)
        if not manifest.snapshots:
            raise ManifestError(f"{model_dir}: no snapshots yet (state {manifest.state})")
        wanted = m or manifest.default_m
        loaded = m or (len(manifest.snapshots) if every_snapshot else manifest.default_m)
        members = manifest.last(min(loaded, len(manifest.snapshots)))
        warnings = []
        if manifest.training.get("calibration", {}).get("beats_last_member") is False:
            warnings.append(
                "no ensemble of m >= 2 snapshots has a lower validation NLL than the last "
                "snapshot alone: the trainer's report shows the NLL of every m"
            )
        if wanted > len(members):
            warnings.append(
                f"asked for m={wanted}, the manifest lists {len(members)} snapshots: serving those"
            )
            log.warning("%s: %s", manifest.name, warnings[-1])
        graphs = []
        for entry in members:
            data = read_snapshot(model_dir, entry)
            try:
                graphs.append(onnx.load_from_string(data))
            except Exception as exc:  # the protobuf parser raises several types
                raise RuntimeLoadError(
                    f"{model_dir / entry.file}: not a valid ONNX graph ({exc})"
                ) from None

        choice = choose_providers(settings.providers)
        providers = choice.providers
        per_provider = provider_options(providers, settings)
        io = manifest.input.name, manifest.output.name

        def group(
            part: list[onnx.ModelProto], answers: bool, options: ort.SessionOptions
        ) -> MemberGroup:
            if settings.execution == Execution.FUSED:
                graph = fuse(part, *io, manifest.temperature, answer=answers)
                fused = graph.SerializeToString()
                sessions = [ort.InferenceSession(fused, options, providers, per_provider)]
            else:
                sessions = [
                    ort.InferenceSession(g.SerializeToString(), options, providers, per_provider)
                    for g in part
                ]
            outputs = {o.name for o in sessions[0].get_outputs()}
            in_graph = settings.execution == Execution.FUSED and ANSWER_OUTPUTS[0] in outputs
            return MemberGroup(len(part), sessions, settings.execution, manifest, in_graph)

        served = min(wanted, len(graphs))
        parts = [(p, a) for p, a in ((graphs[:-served], False), (graphs[-served:], True)) if p]
        try:
            options = session_options(settings)
            groups = [group(part, answers, options) for part, answers in parts]
            got = groups[0].sessions[0].get_providers()
            alone_groups = []
            if alone is not None and got[0] == CPU:
                options = session_options(alone)
                alone_groups = [group(part, answers, options) for part, answers in parts]
        except Exception as exc:  # onnxruntime raises its own exception types
            raise RuntimeLoadError(
                f"{model_dir}: onnxruntime cannot load the snapshots: {exc}"
            ) from None

        problems = [choice.skipped] if choice.skipped else []
        asked_gpu = [p for p in providers if p in GPU_PROVIDERS]
        lost = [p for p in asked_gpu if p not in got]
        required = PREFERENCE[settings.providers][0]
        if settings.providers != Providers.AUTO and required not in got:
            raise ProviderUnavailable(
                f"--providers {settings.providers}: onnxruntime did not start {required} "
                f"(the session got {', '.join(got)})"
            )
        if lost:
            problems.append(
                f"asked for {', '.join(asked_gpu)} but the session got {', '.join(got)}"
            )
            log.warning("GPU NOT IN USE for %s: %s", manifest.name, problems[-1])
        runtime = cls(
            model_dir,
            manifest,
            members,
            settings.execution,
            groups,
            got,
            warnings + problems,
            alone_groups,
        )
        try:  # fail now, not on the first request
            for on_alone in (False, True)[: 1 + bool(alone_groups)]:
                x = np.zeros((1, *manifest.input.shape[1:]), dtype=np.float32)
                runtime.run(x, alone=on_alone)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise RuntimeLoadError(
                f"{model_dir}: the snapshots do not answer an input of the manifest's shape "
                f"{manifest.input.shape}: {exc}"
            ) from None
        log.info(
            "loaded %s: snapshots %s (%s) on %s",
            manifest.name,
            [e.cycle for e in members],
            settings.execution,
            ", ".join(got),
        )
        return runtime

    def run(self, x: Float32Array, members: int | None = None, alone: bool = False) -> Prediction:
        """The probabilities (softmax of logits / the manifest's temperature) of the last
        `members` loaded members (None: all of them) and their mean, for a batch x
        [N, C, H, W] of raw pixels, and where the temperature is not 1 the members'
        probabilities at temperature 1. Only the groups holding those members run; `alone`:
        on the sessions that use every core, where there are such."""
        k = self.m if members is None else max(1, min(members, self.m))
        groups = self.alone_groups if alone and self.alone_groups else self.groups
        served = groups[-1].run(x)
        if k == self.default_m:
            return served
        if k < self.default_m:
            probs, trained = served.member_probs[-k:], served.trained_probs[-k:]
        else:
            earlier = groups[0].run(x)
            probs, trained = (
                np.concatenate([p[-(k - self.default_m) :], q])
                for p, q in (
                    (earlier.member_probs, served.member_probs),
                    (earlier.trained_probs, served.trained_probs),
                )
            )
        scaled = self.manifest.temperature != 1.0
        return Prediction(probs, probs.mean(axis=0), served.result, trained if scaled else None)

    def answer(
        self,
        x: Float32Array,
        batch_size: int | None = None,
        members: int | None = None,
        alone: bool = False,
    ) -> BatchAnswer:
        """The probabilities of the last `members` loaded members (None: all of them; at
        least the served ones), in batches of batch_size rows, and the ensemble's answer
        from the served members (the last default_m); `alone` as in run()."""
        k = max(self.m if members is None else members, self.default_m)
        if batch_size is None or len(x) <= batch_size:
            prediction = self.run(x, k, alone)
        else:
            parts = [
                self.run(x[i : i + batch_size], k, alone) for i in range(0, len(x), batch_size)
            ]
            results = [p.result for p in parts if p.result is not None]
            trained = [p.trained for p in parts if p.trained is not None]
            prediction = Prediction(
                np.concatenate([p.member_probs for p in parts], axis=1),
                np.concatenate([p.mean for p in parts]),
                EnsembleResult.concatenate(results) if len(results) == len(parts) else None,
                np.concatenate(trained, axis=1) if trained else None,
            )
        if prediction.result is not None:  # computed in the fused graph
            return BatchAnswer(prediction, prediction.result)
        served = slice(-self.default_m, None)
        mean = prediction.mean if k == self.default_m else None
        result = combine(
            prediction.member_probs[served], mean=mean, trained=prediction.trained_probs[served]
        )
        return BatchAnswer(prediction, result)

    def predict_members(
        self, x: Float32Array, m: int | None = None, batch_size: int = 256, trained: bool = False
    ) -> Float32Array:
        """[m, N, K] member probabilities of the last m loaded members, in batches: as
        served (at the manifest's temperature), or `trained` (at temperature 1)."""
        k = m or self.m
        prediction = self.answer(x, batch_size, k).prediction
        return (prediction.trained_probs if trained else prediction.member_probs)[-k:]

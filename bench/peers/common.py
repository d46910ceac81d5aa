"""What every peer app of bench/serve_peers.py shares: one onnxruntime session on the fused
ensemble graph, with the session options of this project's server, and the ensemble's
answer as the server gives it.

The graph is server.fusion.fuse's. Built with `answer` (as the server runs it), it returns
the label, confidence and disagreement figures itself (server.fused_figures); built
without, it returns the probabilities and the figures come from the contract's numpy
arithmetic, snapens.ensemble.combine. `Ensemble` reads whichever the graph holds.

Runs in each peer's own virtual environment (numpy and onnxruntime, no onnx, no
pydantic): it imports snapens.ensemble, which needs only numpy, from the repository root.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# snapens first: importing it turns onnxruntime's telemetry off, as in this project's server
from snapens.ensemble import DISAGREEMENT_FIGURES, EnsembleResult, combine  # noqa: E402

# isort: split
import onnxruntime as ort  # noqa: E402

HOST = "127.0.0.1"  # every peer listens on loopback only
MODEL_NAME = "ensemble"  # the name a peer serves the graph under, where it takes one

# server.settings.RuntimeSettings' defaults, which the server runs with unless told
# otherwise, as server.runtime.session_options() applies them; and the outputs a fused
# graph built with `answer` adds (server.fused_figures.ANSWER_OUTPUTS).
# bench/serve_peers.py checks that they still are.
INTRA_OP_THREADS = 0  # 0: onnxruntime's choice, all cores
INTER_OP_THREADS = 0
INTRA_OP_SPINNING = "auto"  # auto (for one fused session: as on), on, run (only during a run), off
PARALLEL_EXECUTION = False
GRAPH_OPTIMIZATION = "all"
ANSWER_OUTPUTS = ("label", "confidence", "member_labels", *DISAGREEMENT_FIGURES)

MEMBER_PROBABILITIES = "member_probabilities"
PROBABILITIES = "probabilities"
TRAINED_MEMBER_PROBABILITIES = "trained_member_probabilities"  # where the temperature is not 1

Float32Array = npt.NDArray[np.float32]


def session(graph: Path) -> ort.InferenceSession:
    """One CPU session on the fused graph, with the server's default session options."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = INTRA_OP_THREADS
    options.inter_op_num_threads = INTER_OP_THREADS
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL if PARALLEL_EXECUTION else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    options.log_severity_level = 3
    options.add_session_config_entry(
        "session.intra_op.allow_spinning", "0" if INTRA_OP_SPINNING == "off" else "1"
    )
    if INTRA_OP_SPINNING == "run":
        options.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


class Ensemble:
    """The fused graph in one session, answering batches of raw pixels."""

    def __init__(self, graph: Path) -> None:
        self.session = session(graph)
        source = self.session.get_inputs()[0]
        self.input_name: str = source.name
        self.shape = tuple(int(d) for d in source.shape[1:])  # (C, H, W) of one image
        self.in_graph = ANSWER_OUTPUTS[0] in {o.name for o in self.session.get_outputs()}
        # What the server fetches from its fused session.
        answers = ANSWER_OUTPUTS if self.in_graph else ()
        graph_outputs = {o.name for o in self.session.get_outputs()}
        self.scaled = TRAINED_MEMBER_PROBABILITIES in graph_outputs  # a temperature is not 1
        trained = [TRAINED_MEMBER_PROBABILITIES] if self.scaled and not self.in_graph else []
        self.fetch = [MEMBER_PROBABILITIES, PROBABILITIES, *answers, *trained]

    def answer(self, x: Float32Array) -> EnsembleResult:
        """The ensemble's answer for a batch x [N, C, H, W]: one session.run of the fused
        graph, and where the graph has no figures, snapens.ensemble.combine."""
        member_probs, mean, *answer = self.session.run(self.fetch, {self.input_name: x})
        if not self.in_graph:
            return combine(member_probs, mean=mean, trained=answer[0] if self.scaled else None)
        figures = dict(zip(ANSWER_OUTPUTS, answer, strict=True))
        return EnsembleResult(probabilities=mean, **figures)

    def pixels(self, values: Any) -> Float32Array:
        """One image from a JSON request's flat list of pixel values."""
        return np.asarray(values, dtype=np.float32).reshape(self.shape)


def outputs(result: EnsembleResult) -> dict[str, np.ndarray]:
    """The answer's arrays, as this project's server names them (v2 output names)."""
    return {
        "probabilities": result.probabilities.astype(np.float32),
        "label": result.label.astype(np.int64),
        **{name: getattr(result, name).astype(np.float32) for name in DISAGREEMENT_FIGURES},
    }


def rows(result: EnsembleResult) -> list[dict[str, Any]]:
    """One JSON-ready answer per image: its mean probabilities, label and figures."""
    arrays = outputs(result)
    return [
        {name: array[i].tolist() for name, array in arrays.items()}
        for i in range(len(result.label))
    ]

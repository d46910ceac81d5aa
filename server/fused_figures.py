"""The ensemble's answer as ONNX nodes, appended to the fused graph so that one
`session.run` returns the label, the confidence and every disagreement figure.

This is snapens.ensemble.combine written in ONNX ops, for the served members on the hot
path: at batch 1 the numpy version costs about as much as a tenth of the network. Its
definition stays snapens.ensemble; tests/server/test_fusion.py holds the two equal to
1e-6 on every figure.
"""

from __future__ import annotations

from typing import Any

import onnx
from onnx import TensorProto, helper

from snapens.ensemble import DISAGREEMENT_FIGURES

LABEL = "label"
CONFIDENCE = "confidence"
MEMBER_LABELS = "member_labels"
# What a fused session returns beyond the probabilities, in this order.
ANSWER_OUTPUTS = (LABEL, CONFIDENCE, MEMBER_LABELS, *DISAGREEMENT_FIGURES)


class NodeBuilder:
    """Appends nodes with fresh intermediate names; reductions spelt for the opset (axes
    became an input of ReduceSum in opset 13, of the other Reduce* ops in 18)."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._constants: set[str] = set()
        self._count = 0

    def const(self, name: str, dtype: int, dims: list[int], values: list[float]) -> str:
        full = f"fused_{name}"
        if full not in self._constants:
            self._constants.add(full)
            self.initializers.append(helper.make_tensor(full, dtype, dims, values))
        return full

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs: Any) -> str:
        if output is None:
            self._count += 1
            output = f"fused_t{self._count}"
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attrs))
        return output

    def reduce(
        self, op_type: str, x: str, axis: int, output: str | None = None, keepdims: int = 0
    ) -> str:
        if self.opset >= 18 or (op_type == "ReduceSum" and self.opset >= 13):
            axes = self.const(f"axes{axis}".replace("-", "_"), TensorProto.INT64, [1], [axis])
            return self.op(op_type, [x, axes], output, keepdims=keepdims)
        return self.op(op_type, [x], output, axes=[axis], keepdims=keepdims)


def _entropy(b: NodeBuilder, p: str, zero: str, one: str, output: str | None = None) -> str:
    """-Σ p ln p over the last axis, with 0·ln 0 = 0."""
    safe = b.op("Where", [b.op("Greater", [p, zero]), p, one])
    return b.op("Neg", [b.reduce("ReduceSum", b.op("Mul", [p, b.op("Log", [safe])]), -1)], output)


def answer_nodes(
    b: NodeBuilder, mean: str, trained: str, trained_mean: str, members: int, classes: int
) -> None:
    """Appends to `b` the nodes computing ANSWER_OUTPUTS as snapens.ensemble.combine defines
    them: the label and confidence from the served mean [N, K], the disagreement from the
    members as trained (temperature 1), [m, N, K], and their mean."""
    f32 = TensorProto.FLOAT
    zero = b.const("zero", f32, [], [0.0])
    one = b.const("one", f32, [], [1.0])
    axis0 = b.const("axes0", TensorProto.INT64, [1], [0])
    depth = b.const("classes", TensorProto.INT64, [], [classes])
    off_on = b.const("off_on", f32, [2], [0.0, 1.0])

    label = b.op("ArgMax", [mean], LABEL, axis=-1, keepdims=0)
    b.reduce("ReduceMax", mean, -1, CONFIDENCE)
    member_labels = b.op("ArgMax", [trained], MEMBER_LABELS, axis=-1, keepdims=0)

    agrees = b.op("Equal", [member_labels, b.op("Unsqueeze", [label, axis0])])
    disagrees = b.op("Cast", [b.op("Not", [agrees])], to=f32)
    b.reduce("ReduceMean", disagrees, 0, "vote_disagreement")

    if members > 1:
        # Votes per class c_k; agreeing pairs Σ c_k(c_k-1)/2 of m(m-1)/2.
        counts = b.reduce("ReduceSum", b.op("OneHot", [member_labels, depth, off_on]), 0)
        pairs_per_class = b.op("Mul", [counts, b.op("Sub", [counts, one])])  # twice c(c-1)/2
        twice_agreeing = b.reduce("ReduceSum", pairs_per_class, -1)
        all_pairs = b.const("all_pairs", f32, [], [members * (members - 1)])
        b.op("Sub", [one, b.op("Div", [twice_agreeing, all_pairs])], "pairwise_disagreement")
    else:
        b.op("Mul", [b.op("Cast", [label], to=f32), zero], "pairwise_disagreement")

    predictive = _entropy(b, trained_mean, zero, one, "predictive_entropy")
    expected = b.reduce("ReduceMean", _entropy(b, trained, zero, one), 0, "expected_entropy")
    b.op("Max", [b.op("Sub", [predictive, expected]), zero], "mutual_information")

    # Each member's probability of the ensemble's label, and their spread over members.
    chosen = b.op("OneHot", [label, depth, off_on])
    picked = b.reduce("ReduceSum", b.op("Mul", [trained, chosen]), -1)
    centred = b.op("Sub", [picked, b.op("Unsqueeze", [b.reduce("ReduceMean", picked, 0), axis0])])
    variance = b.reduce("ReduceMean", b.op("Mul", [centred, centred]), 0)
    b.op("Sqrt", [variance], "member_std")


def answer_value_infos(members: int, batch: str | None) -> list[onnx.ValueInfoProto]:
    """The graph outputs ANSWER_OUTPUTS declares: [N] each, member labels [m, N]."""
    infos = [
        helper.make_tensor_value_info(LABEL, TensorProto.INT64, [batch]),
        helper.make_tensor_value_info(CONFIDENCE, TensorProto.FLOAT, [batch]),
        helper.make_tensor_value_info(MEMBER_LABELS, TensorProto.INT64, [members, batch]),
    ]
    infos += [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch])
        for name in DISAGREEMENT_FIGURES
    ]
    return infos

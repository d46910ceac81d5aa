"""The fused ensemble graph: one ONNX graph that feeds the shared input to every member,
takes each member's softmax, stacks them and averages them, so a batch costs one
`session.run` instead of m.

    input ──▶ member 1 ──▶ Softmax ──▶ Unsqueeze ─┐
          ──▶ member 2 ──▶ Softmax ──▶ Unsqueeze ─┼─▶ Concat ──▶ (trained_)member_probabilities
          ──▶ ...                                 ┘     └──▶ p^(1/T) / Σ ──▶ member_probabilities
                                                                   └──▶ ReduceMean ──▶ probabilities

T is the manifest's temperature: softmax(z)^(1/T), renormalised, is softmax(z / T), so
the members as trained (which the disagreement figures describe, see
snapens.ensemble.combine) and as served come from one softmax each. With T = 1 the
scaling is left out and the two are one output. With `answer`, the graph also returns
the ensemble's label, confidence and disagreement figures (server.fused_figures), so the
served members' answer is one `session.run`.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, compose, helper

from server.fused_figures import NodeBuilder, answer_nodes, answer_value_infos

MEMBER_PROBABILITIES = "member_probabilities"
PROBABILITIES = "probabilities"
# The members at temperature 1, an output only where the temperature is not 1.
TRAINED_MEMBER_PROBABILITIES = "trained_member_probabilities"


def _member_subgraph(
    model: onnx.ModelProto, index: int, input_name: str, output_name: str
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """Member `index`'s nodes and weights, renamed apart from the others and reading the
    shared input; returns (nodes, initializers, name of its logits)."""
    prefix = f"m{index}_"
    renamed = compose.add_prefix(model, prefix=prefix)
    graph = renamed.graph
    own_input = prefix + input_name
    nodes = []
    for node in graph.node:
        node.input[:] = [input_name if name == own_input else name for name in node.input]
        nodes.append(node)
    return nodes, list(graph.initializer), prefix + output_name


def fuse(
    members: list[onnx.ModelProto],
    input_name: str,
    output_name: str,
    temperature: float = 1.0,
    answer: bool = False,
) -> onnx.ModelProto:
    """One graph computing every member's softmax(logits / temperature), stacked, and their
    mean; where the temperature is not 1 also the members at temperature 1
    (TRAINED_MEMBER_PROBABILITIES); with `answer` also the ensemble's answer
    (server.fused_figures.ANSWER_OUTPUTS), where the members declare a fixed number of
    classes (else the caller combines)."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    first = members[0].graph
    shared_input = next(i for i in first.input if i.name == input_name)
    classes = first.output[0].type.tensor_type.shape.dim[-1]

    opset = next(o.version for o in members[0].opset_import if o.domain in ("", "ai.onnx"))
    b = NodeBuilder(opset)
    scaled = temperature != 1.0
    stacked = []
    for index, member in enumerate(members):
        member_nodes, weights, logits = _member_subgraph(member, index, input_name, output_name)
        b.nodes += member_nodes
        b.initializers += weights
        probs = b.op("Softmax", [logits], f"m{index}_softmax", axis=-1)
        stack_axis = b.const("stack_axis", TensorProto.INT64, [1], [0])
        stacked.append(b.op("Unsqueeze", [probs, stack_axis], f"m{index}_expanded"))
    trained = TRAINED_MEMBER_PROBABILITIES if scaled else MEMBER_PROBABILITIES
    b.op("Concat", stacked, trained, axis=0)
    if scaled:
        inverse = b.const("inverse_temperature", TensorProto.FLOAT, [], [1.0 / temperature])
        powered = b.op("Pow", [trained, inverse])
        total = b.reduce("ReduceSum", powered, -1, keepdims=1)
        b.op("Div", [powered, total], MEMBER_PROBABILITIES)
    b.reduce("ReduceMean", MEMBER_PROBABILITIES, 0, PROBABILITIES)

    batch = shared_input.type.tensor_type.shape.dim[0]
    k = classes.dim_value if classes.HasField("dim_value") else None
    extra_outputs = []
    if scaled:
        extra_outputs.append(
            helper.make_tensor_value_info(
                trained, TensorProto.FLOAT, [len(members), batch.dim_param or None, k]
            )
        )
    if answer and k is not None:  # OneHot needs the number of classes
        trained_mean = b.reduce("ReduceMean", trained, 0) if scaled else PROBABILITIES
        answer_nodes(b, PROBABILITIES, trained, trained_mean, len(members), k)
        extra_outputs += answer_value_infos(len(members), batch.dim_param or None)
    outputs = [
        helper.make_tensor_value_info(
            MEMBER_PROBABILITIES, TensorProto.FLOAT, [len(members), batch.dim_param or None, k]
        ),
        helper.make_tensor_value_info(
            PROBABILITIES, TensorProto.FLOAT, [batch.dim_param or None, k]
        ),
        *extra_outputs,
    ]
    graph = helper.make_graph(b.nodes, "snapshot_ensemble", [shared_input], outputs, b.initializers)
    fused = helper.make_model(graph, opset_imports=list(members[0].opset_import))
    fused.ir_version = members[0].ir_version
    onnx.checker.check_model(fused)
    return fused

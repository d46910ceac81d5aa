"""The fused ensemble graph: one ONNX graph that feeds the shared input to every member,
takes each member's softmax, stacks them and averages them, so a batch costs one
`session.run` instead of m.

    input ──▶ member 1 ──▶ ÷T ──▶ Softmax ──▶ Unsqueeze ─┐
          ──▶ member 2 ──▶ ÷T ──▶ Softmax ──▶ Unsqueeze ─┼─▶ Concat ──▶ member_probabilities
          ──▶ ...                                        ┘       └──▶ ReduceMean ──▶ probabilities

T is the manifest's temperature; with T = 1 the division is left out. With `answer`,
the graph also returns the ensemble's label, confidence and disagreement figures
(server.fused_figures), so the served members' answer is one `session.run`.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, compose, helper

from server.fused_figures import answer_nodes, answer_value_infos

MEMBER_PROBABILITIES = "member_probabilities"
PROBABILITIES = "probabilities"


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
    mean; with `answer` also the ensemble's answer (server.fused_figures.ANSWER_OUTPUTS),
    where the members declare a fixed number of classes (else the caller combines)."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    first = members[0].graph
    shared_input = next(i for i in first.input if i.name == input_name)
    classes = first.output[0].type.tensor_type.shape.dim[-1]

    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = [
        helper.make_tensor("stack_axis", TensorProto.INT64, [1], [0]),
    ]
    if temperature != 1.0:
        initializers.append(helper.make_tensor("temperature", TensorProto.FLOAT, [], [temperature]))
    stacked = []
    for index, member in enumerate(members):
        member_nodes, weights, logits = _member_subgraph(member, index, input_name, output_name)
        nodes += member_nodes
        initializers += weights
        probs, expanded = f"m{index}_softmax", f"m{index}_expanded"
        if temperature != 1.0:
            scaled = f"m{index}_scaled"
            nodes.append(helper.make_node("Div", [logits, "temperature"], [scaled]))
            logits = scaled
        nodes.append(helper.make_node("Softmax", [logits], [probs], axis=-1))
        nodes.append(helper.make_node("Unsqueeze", [probs, "stack_axis"], [expanded]))
        stacked.append(expanded)
    nodes.append(helper.make_node("Concat", stacked, [MEMBER_PROBABILITIES], axis=0))
    opset = next(o.version for o in members[0].opset_import if o.domain in ("", "ai.onnx"))
    if opset >= 18:  # axes became an input in opset 18
        mean = helper.make_node(
            "ReduceMean", [MEMBER_PROBABILITIES, "stack_axis"], [PROBABILITIES], keepdims=0
        )
    else:
        mean = helper.make_node(
            "ReduceMean", [MEMBER_PROBABILITIES], [PROBABILITIES], axes=[0], keepdims=0
        )
    nodes.append(mean)

    batch = shared_input.type.tensor_type.shape.dim[0]
    k = classes.dim_value if classes.HasField("dim_value") else None
    extra_outputs = []
    if answer and k is not None:  # OneHot needs the number of classes
        extra_nodes, constants = answer_nodes(
            MEMBER_PROBABILITIES, PROBABILITIES, len(members), k, opset
        )
        nodes += extra_nodes
        initializers += constants
        extra_outputs = answer_value_infos(len(members), batch.dim_param or None)
    outputs = [
        helper.make_tensor_value_info(
            MEMBER_PROBABILITIES, TensorProto.FLOAT, [len(members), batch.dim_param or None, k]
        ),
        helper.make_tensor_value_info(
            PROBABILITIES, TensorProto.FLOAT, [batch.dim_param or None, k]
        ),
        *extra_outputs,
    ]
    graph = helper.make_graph(nodes, "snapshot_ensemble", [shared_input], outputs, initializers)
    fused = helper.make_model(graph, opset_imports=list(members[0].opset_import))
    fused.ir_version = members[0].ir_version
    onnx.checker.check_model(fused)
    return fused

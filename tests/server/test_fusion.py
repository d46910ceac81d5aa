"""The fused ensemble graph (server.fusion) against its definition: each member run by its
own onnxruntime session, then the ensemble arithmetic of snapens.ensemble.

The members are tiny classifiers built here with onnx.helper (no torch, no training):
[N, 1, 8, 8] pixels, flattened, times a random [64, 10] matrix plus a random bias."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from server.fused_figures import ANSWER_OUTPUTS
from server.fusion import (
    MEMBER_PROBABILITIES,
    PROBABILITIES,
    TRAINED_MEMBER_PROBABILITIES,
    fuse,
)
from snapens.ensemble import DISAGREEMENT_FIGURES, combine, softmax

INPUT, LOGITS = "input", "logits"
CLASSES = 10
CPU = ["CPUExecutionProvider"]


def classifier(seed: int, opset: int = 17, classes: int = CLASSES) -> onnx.ModelProto:
    """A MatMul+Add classifier: [N, 1, 8, 8] -> [N, classes] logits, random weights. Every
    member names its weights alike ("W", "B"), as exports of one network do."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 0.02, size=(64, classes)).astype(np.float32)
    bias = rng.normal(0, 1, size=classes).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", [INPUT], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["scores"]),
        helper.make_node("Add", ["scores", "B"], [LOGITS]),
    ]
    graph = helper.make_graph(
        nodes,
        f"classifier_{seed}",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def pixels(n: int, seed: int = 0) -> np.ndarray:
    """A batch of n digit-like images: float32 [n, 1, 8, 8] in 0..16."""
    return np.random.default_rng(seed).uniform(0, 16, size=(n, 1, 8, 8)).astype(np.float32)


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=CPU)


def members_alone(
    members: list[onnx.ModelProto], x: np.ndarray, temperature: float = 1.0
) -> np.ndarray:
    """The reference: each member in its own session, softmax(z / T) in float64: [m, N, K]."""
    return np.stack(
        [
            softmax(session(m).run([LOGITS], {INPUT: x})[0].astype(np.float64) / temperature)
            for m in members
        ]
    )


@pytest.mark.parametrize("opset", [17, 18])  # ReduceMean takes its axes as an input from 18
@pytest.mark.parametrize("m", [1, 3, 5])
def test_the_fused_graph_equals_each_member_alone_and_the_ensemble_arithmetic(
    opset: int, m: int
) -> None:
    members = [classifier(seed, opset) for seed in range(m)]
    x = pixels(32)
    member_probs, mean = session(fuse(members, INPUT, LOGITS)).run(
        [MEMBER_PROBABILITIES, PROBABILITIES], {INPUT: x}
    )
    reference = members_alone(members, x)
    assert member_probs.dtype == np.float32 and member_probs.shape == (m, 32, CLASSES)
    assert mean.shape == (32, CLASSES)
    np.testing.assert_allclose(member_probs, reference, atol=1e-6)
    np.testing.assert_allclose(mean, reference.mean(axis=0), atol=1e-6)

    fused = combine(member_probs, mean=mean)
    expected = combine(reference)
    np.testing.assert_array_equal(fused.label, expected.label)
    np.testing.assert_array_equal(fused.member_labels, expected.member_labels)
    np.testing.assert_allclose(fused.confidence, expected.confidence, atol=1e-6)
    for name in DISAGREEMENT_FIGURES:
        np.testing.assert_allclose(getattr(fused, name), getattr(expected, name), atol=1e-6)


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("m", [1, 2, 5])
@pytest.mark.parametrize("temperature", [1.0, 2.5, 0.6])
def test_the_answer_in_the_graph_equals_the_ensemble_arithmetic(
    opset: int, m: int, temperature: float
) -> None:
    """Label, confidence, member labels and every figure from the graph, against
    snapens.ensemble.combine on the same member probabilities: the temperature-scaled ones
    answer, the ones as trained (temperature 1) give the disagreement."""
    members = [classifier(seed, opset) for seed in range(m)]
    x = pixels(200, seed=3)
    graph = session(fuse(members, INPUT, LOGITS, temperature, answer=True))
    trained_output = [TRAINED_MEMBER_PROBABILITIES] if temperature != 1.0 else []
    outputs = graph.run(
        [MEMBER_PROBABILITIES, PROBABILITIES, *ANSWER_OUTPUTS, *trained_output], {INPUT: x}
    )
    member_probs, mean, *answer = outputs[: 2 + len(ANSWER_OUTPUTS)]
    trained = outputs[-1] if trained_output else member_probs
    np.testing.assert_allclose(member_probs, members_alone(members, x, temperature), atol=1e-6)
    np.testing.assert_allclose(trained, members_alone(members, x), atol=1e-6)
    got = dict(zip(ANSWER_OUTPUTS, answer, strict=True))
    expected = combine(member_probs, mean=mean, trained=trained)
    np.testing.assert_array_equal(got["label"], expected.label)
    np.testing.assert_array_equal(got["member_labels"], expected.member_labels)
    for name in ("confidence", *DISAGREEMENT_FIGURES):
        assert got[name].dtype == np.float32 and got[name].shape == (200,)
        np.testing.assert_allclose(got[name], getattr(expected, name), rtol=0, atol=1e-6)
    if m > 1:  # the members disagree on some inputs, so every figure is exercised
        assert (expected.vote_disagreement > 0).any() and (expected.mutual_information > 0).any()


def test_members_without_a_fixed_number_of_classes_get_no_answer_in_the_graph() -> None:
    members = [classifier(seed) for seed in range(2)]
    for member in members:
        member.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "K"
    fused = fuse(members, INPUT, LOGITS, answer=True)
    assert [o.name for o in fused.graph.output] == [MEMBER_PROBABILITIES, PROBABILITIES]


def test_members_with_the_same_weight_names_stay_apart() -> None:
    """Every member's weights are called W and B; each member's output is still its own."""
    members = [classifier(seed) for seed in (7, 8, 9)]
    x = pixels(4, seed=1)
    member_probs = session(fuse(members, INPUT, LOGITS)).run([MEMBER_PROBABILITIES], {INPUT: x})[0]
    reference = members_alone(members, x)
    assert not np.allclose(reference[0], reference[1])  # the members differ
    for i in range(3):
        np.testing.assert_allclose(member_probs[i], reference[i], atol=1e-6)


def test_the_fused_graph_has_one_shared_input_and_a_free_batch_axis() -> None:
    members = [classifier(seed) for seed in range(3)]
    fused = fuse(members, INPUT, LOGITS)
    assert [i.name for i in fused.graph.input] == [INPUT]
    assert [o.name for o in fused.graph.output] == [MEMBER_PROBABILITIES, PROBABILITIES]
    shapes = {
        o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim]
        for o in fused.graph.output
    }
    assert shapes == {MEMBER_PROBABILITIES: [3, "N", CLASSES], PROBABILITIES: ["N", CLASSES]}
    assert fused.ir_version == members[0].ir_version
    assert list(fused.opset_import) == list(members[0].opset_import)
    run = session(fused)
    for n in (1, 7, 64):
        probs, mean = run.run([MEMBER_PROBABILITIES, PROBABILITIES], {INPUT: pixels(n)})
        assert probs.shape == (3, n, CLASSES) and mean.shape == (n, CLASSES)
        np.testing.assert_allclose(mean.sum(axis=-1), 1.0, atol=1e-6)


def test_an_ensemble_needs_a_member() -> None:
    with pytest.raises(ValueError, match="at least one member"):
        fuse([], INPUT, LOGITS)

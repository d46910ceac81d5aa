"""Networks and their ONNX export."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from snapens.ensemble import softmax
from trainer.errors import UserError
from trainer.export import INPUT_NAME, ExportError, SnapshotExporter, verify_onnx
from trainer.nets import Normalized, build_network


def params(arch: str, shape: tuple[int, int, int] = (3, 32, 32)) -> int:
    return sum(p.numel() for p in build_network(arch, shape, 10).parameters())


@pytest.mark.parametrize(
    ("arch", "shape"),
    [
        ("mlp", (1, 8, 8)),
        ("mlp-32x3", (1, 8, 8)),
        ("resnet8", (3, 32, 32)),
        ("preresnet20", (3, 32, 32)),
        ("resnet8x2", (3, 16, 16)),
        ("wrn-10-2", (3, 32, 32)),
    ],
)
def test_networks_map_images_to_logits(arch: str, shape: tuple[int, int, int]) -> None:
    net = build_network(arch, shape, 7)
    assert net(torch.zeros(3, *shape)).shape == (3, 7)
    assert isinstance(net.fc, torch.nn.Linear)


def test_depth_and_width_scale_as_in_the_papers() -> None:
    # ResNet-20 is ~0.27M parameters (He et al.); WRN-16-4 ~2.7M (Zagoruyko & Komodakis).
    assert 0.26e6 < params("resnet20") < 0.29e6
    assert params("resnet32") > params("resnet20") > params("resnet8")
    assert 2.6e6 < params("wrn-16-4") < 2.8e6
    assert params("resnet20x2") > 3.5 * params("resnet20")


@pytest.mark.parametrize("arch", ["resnet21", "wrn-15-2", "vgg16"])
def test_unknown_or_malformed_architectures_are_refused(arch: str) -> None:
    with pytest.raises(UserError, match=f"--arch {arch}"):
        build_network(arch, (3, 32, 32), 10)


def _model(arch: str, shape: tuple[int, int, int]) -> Normalized:
    torch.manual_seed(0)
    model = Normalized(
        build_network(arch, shape, 10),
        torch.full((shape[0],), 100.0),
        torch.full((shape[0],), 50.0),
    )
    # Non-trivial batch-norm statistics, as after training.
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, *shape) * 255)
    return model.eval()


@pytest.mark.parametrize(("arch", "shape"), [("mlp", (1, 8, 8)), ("resnet8", (3, 32, 32))])
def test_export_has_dynamic_batch_and_normalisation_inside(
    arch: str, shape: tuple[int, int, int]
) -> None:
    model = _model(arch, shape)
    onnx_bytes = SnapshotExporter(model, shape).export(model)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == INPUT_NAME
    assert session.get_inputs()[0].shape[0] == "batch"
    for n in (1, 5, 33):
        raw = torch.rand(n, *shape) * 255  # raw pixels: the graph normalises them
        (logits,) = session.run(None, {INPUT_NAME: raw.numpy()})
        with torch.no_grad():
            expected = torch.softmax(model(raw), -1).numpy()
        assert np.abs(softmax(logits) - expected).max() < 1e-4
    diff = verify_onnx(onnx_bytes, model, torch.rand(8, *shape) * 255)
    assert 0 <= diff <= 1e-4


def test_verification_catches_a_graph_that_differs() -> None:
    shape = (1, 8, 8)
    model = _model("mlp", shape)
    exported = SnapshotExporter(model, shape).export(model)
    other = _model("mlp", shape)
    with torch.no_grad():
        other.fc.bias += 5 * torch.arange(10.0)
    with pytest.raises(ExportError, match="max \\|Δ softmax\\|"):
        verify_onnx(exported, other, torch.rand(8, *shape) * 16)


@pytest.mark.parametrize(("arch", "shape"), [("mlp", (1, 8, 8)), ("preresnet8", (3, 16, 16))])
def test_one_traced_graph_exports_every_snapshot_of_the_network(
    arch: str, shape: tuple[int, int, int]
) -> None:
    # Traced from the fresh network, whose batch-norm scales are all 1 and biases all 0:
    # each must still get its own initializer, as the snapshots' values differ.
    model = _model(arch, shape)
    exporter = SnapshotExporter(model, shape)
    batch = torch.rand(16, *shape) * 255
    assert verify_onnx(exporter.export(model), model, batch) <= 1e-4
    for step in range(2):
        with torch.no_grad():
            for tensor in model.state_dict().values():
                if tensor.is_floating_point():
                    tensor.mul_(2 * torch.rand_like(tensor)).add_(0.1 * (step + 1))
        onnx_bytes = exporter.export(model)
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        (logits,) = session.run(None, {INPUT_NAME: batch.numpy()})
        with torch.no_grad():
            expected = model(batch).numpy()
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_verification_catches_a_tensor_the_traced_graph_keeps_as_a_constant() -> None:
    class Scaled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(64, 10)
            self.register_buffer("scale", torch.ones(64), persistent=False)  # not in state_dict

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1) * self.scale)

    model = Scaled().eval()
    exporter = SnapshotExporter(model, (1, 8, 8))
    batch = torch.rand(8, 1, 8, 8)
    assert verify_onnx(exporter.export(model), model, batch) <= 1e-4
    model.scale.mul_(3)
    with pytest.raises(ExportError, match="max \\|Δ softmax\\|"):
        verify_onnx(exporter.export(model), model, batch)

"""Networks: a small MLP and CIFAR-style ResNets (He et al. 2016, basic and
pre-activation) and Wide ResNets (Zagoruyko & Komodakis 2016).

Every network ends in `self.fc`, a Linear layer whose input is the penultimate
activation (the Lipschitz schedule measures it).

Architecture names:
    mlp, mlp-512x3           hidden width x hidden layers (default 256x2)
    resnet20, resnet32x2     depth 6n+2, optional width multiplier
    preresnet20              pre-activation ResNet, depth 6n+2
    wrn-16-4                 Wide ResNet, depth 6n+4, widening factor k
"""

from __future__ import annotations

import re

import torch
from torch import nn

from trainer.errors import UserError


class Normalized(nn.Module):
    """The served graph: raw pixels in, logits out. Normalisation lives inside, so the
    server and the scorer never re-implement preprocessing."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1).float())
        self.register_buffer("std", std.reshape(1, -1, 1, 1).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)  # type: ignore[no-any-return]

    @property
    def fc(self) -> nn.Linear:
        fc = self.net.fc
        assert isinstance(fc, nn.Linear)
        return fc


class MLP(nn.Module):
    def __init__(self, in_features: int, classes: int, width: int = 256, depth: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(depth):
            layers += [nn.Linear(in_features if i == 0 else width, width), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(width if depth else in_features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))  # type: ignore[no-any-return]


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Conv-BN-ReLU ×2 with a projection shortcut where the shape changes (post-activation)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip: torch.Tensor = self.shortcut(x)
        return torch.relu(out + skip)


class PreActBlock(nn.Module):
    """BN-ReLU-Conv ×2 (He et al., identity mappings); used by pre-activation ResNets and WRNs."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.shortcut: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        skip: torch.Tensor = x if self.shortcut is None else self.shortcut(pre)
        out: torch.Tensor = self.conv2(torch.relu(self.bn2(self.conv1(pre))))
        return out + skip


class CifarResNet(nn.Module):
    """Three stages of n blocks at widths w, 2w, 4w, strides 1, 2, 2; global pool; fc."""

    def __init__(
        self,
        in_channels: int,
        classes: int,
        blocks_per_stage: int,
        widths: tuple[int, int, int],
        stem_width: int,
        preact: bool,
    ) -> None:
        super().__init__()
        block = PreActBlock if preact else BasicBlock
        self.stem = nn.Sequential(_conv3x3(in_channels, stem_width))
        if not preact:
            self.stem.append(nn.BatchNorm2d(stem_width))
            self.stem.append(nn.ReLU(inplace=True))
        stages: list[nn.Module] = []
        cin = stem_width
        for stage, width in enumerate(widths):
            for i in range(blocks_per_stage):
                stages.append(block(cin, width, 2 if stage > 0 and i == 0 else 1))
                cin = width
        self.stages = nn.Sequential(*stages)
        self.head: nn.Module = (
            nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True)) if preact else nn.Identity()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.stages(self.stem(x)))
        return self.fc(torch.flatten(self.pool(out), 1))  # type: ignore[no-any-return]


ARCH_HELP = "mlp, mlp-WIDTHxDEPTH, resnet{6n+2}[xW], preresnet{6n+2}[xW], wrn-{6n+4}-{k}"


def build_network(arch: str, input_shape: tuple[int, int, int], classes: int) -> nn.Module:
    c, h, w = input_shape
    if match := re.fullmatch(r"mlp(?:-(\d+)x(\d+))?", arch):
        width, depth = (int(match[1]), int(match[2])) if match[1] else (256, 2)
        if width < 1 or depth < 1:
            raise UserError(f"--arch {arch}: an MLP needs a width and depth of at least 1")
        return MLP(c * h * w, classes, width, depth)
    if match := re.fullmatch(r"(pre)?resnet(\d+)(?:x(\d+))?", arch):
        depth, mult = int(match[2]), int(match[3] or 1)
        if (depth - 2) % 6 or depth < 8:
            raise UserError(
                f"--arch {arch}: ResNet depth must be 6n+2 (8, 20, 32, 56, 110), got {depth}"
            )
        if mult < 1:
            raise UserError(f"--arch {arch}: the width multiplier must be at least 1")
        base = 16 * mult
        return CifarResNet(
            c, classes, (depth - 2) // 6, (base, 2 * base, 4 * base), base, bool(match[1])
        )
    if match := re.fullmatch(r"wrn-(\d+)-(\d+)", arch):
        depth, k = int(match[1]), int(match[2])
        if (depth - 4) % 6 or depth < 10:
            raise UserError(f"--arch {arch}: WRN depth must be 6n+4 (10, 16, 28, 40), got {depth}")
        if k < 1:
            raise UserError(f"--arch {arch}: the widening factor must be at least 1")
        return CifarResNet(c, classes, (depth - 4) // 6, (16 * k, 32 * k, 64 * k), 16, preact=True)
    raise UserError(f"--arch {arch}: unknown architecture; expected one of {ARCH_HELP}")


def default_arch(input_shape: tuple[int, int, int]) -> str:
    """mlp for tiny inputs such as 8×8 digits, ResNet-20 for real images."""
    _, h, w = input_shape
    return "mlp" if min(h, w) < 16 else "resnet20"

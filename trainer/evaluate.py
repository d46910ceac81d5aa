"""The validation pass: softmax, NLL and accuracy of a network on in-memory tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Evaluation:
    probs: torch.Tensor  # [N, K] float32 on the CPU
    loss: float
    accuracy: float


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, amp: torch.dtype | None
) -> Evaluation:
    was_training = model.training
    model.eval()
    probs, nll, correct = [], torch.zeros((), device=x.device), torch.zeros((), device=x.device)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size].float(), y[start : start + batch_size]
        with torch.autocast(x.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            logits = model(xb)
        log_p = torch.log_softmax(logits.float(), dim=-1)
        nll += F.nll_loss(log_p, yb, reduction="sum")
        correct += (log_p.argmax(-1) == yb).sum()
        probs.append(log_p.exp().cpu())
    model.train(was_training)
    return Evaluation(torch.cat(probs), float(nll) / len(x), float(correct) / len(x))

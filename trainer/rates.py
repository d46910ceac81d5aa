"""Learning-rate schedules as functions of the iteration.

`lr_at(step)` is the rate of the optimizer step taken after `step` steps have completed
(step = 0, 1, ..., T − 1; the papers' t is step + 1). The training loop sets every
parameter group's rate to it before each step. The classes are built from plain numbers
by `trainer.schedules.build_schedule`.

Closed form (no state at all):

- `CosineRestarts`: SGDR (Loshchilov & Hutter), η = η_min + ½(η_max − η_min)(1 + cos(π·T_cur/T_i)),
  T_i = T_0·T_mult^i, in iterations; Huang et al.'s snapshot schedule is the case T_mult = 1,
  η_min = 0, T_0 = ⌈T/M⌉: α(t) = α0/2·(cos(π·mod(t−1, ⌈T/M⌉)/⌈T/M⌉) + 1).
- `StepDecay`: ×γ at each milestone (the baseline: ×0.1 at 50% and 75% of the budget).
- `FastGeometric`: FGE (Garipov et al. 2018): one cosine decay from α0 to α1 over a first,
  long phase, then cycles of c epochs whose rate falls linearly from α1 to α2 at mid-cycle
  and rises back, a snapshot at each mid-cycle.
- `Warmup`: a linear ramp from lr/W to lr over W iterations, then another schedule shifted
  by W.

Reactive (their state is plain data, saved in the checkpoint, so that `lr_at` stays a
function of the step for every step already taken):

- `Plateau`: ReduceLROnPlateau's rule on the validation loss after each epoch; it keeps the
  best loss, the epochs without improvement and the steps at which it cut the rate.
- `Lipschitz`: Yedida & Saha's lr = 1/K, measured on the network at the start of each
  epoch (`measure_lipschitz`); it keeps the rate of each epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from trainer.nets import Normalized

# ReduceLROnPlateau's defaults (mode "min", relative threshold), kept so the rule is torch's.
PLATEAU_THRESHOLD = 1e-4
PLATEAU_EPS = 1e-8


class LRSchedule:
    """The rate as a function of the iteration, plus hooks for the schedules that react
    to the run. The hooks do nothing for the closed-form schedules."""

    def lr_at(self, step: int) -> float:
        raise NotImplementedError

    def begin_epoch(self, epoch: int, model: Normalized, train_x: torch.Tensor) -> None:
        """Called before the first step of each epoch (epochs count from 0)."""

    def end_epoch(self, step: int, val_loss: float | None) -> None:
        """Called after each epoch, `step` steps done, with the validation loss (rank 0's)."""

    def state(self) -> dict[str, Any]:
        """What a resumed run needs besides the step: plain numbers and lists."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what `state` returned."""

    def diverged(self, epoch: int, loss: float) -> str:
        """The message for a run whose training loss became NaN or infinite."""
        return f"training diverged in epoch {epoch} (loss {loss}): lower --lr"


@dataclass(frozen=True)
class CosineRestarts(LRSchedule):
    """Cosine annealing from lr_max to lr_min, restarted after T_0, T_0·T_mult, ... steps.

    The same arithmetic as torch's CosineAnnealingWarmRestarts stepped once per iteration."""

    lr_max: float
    period: int  # T_0, in iterations
    t_mult: int = 1
    lr_min: float = 0.0

    def lr_at(self, step: int) -> float:
        t_cur, t_i = step, self.period
        if self.t_mult == 1:
            t_cur %= t_i
        else:
            while t_cur >= t_i:
                t_cur, t_i = t_cur - t_i, t_i * self.t_mult
        return self.lr_min + (self.lr_max - self.lr_min) * (1 + math.cos(math.pi * t_cur / t_i)) / 2


@dataclass(frozen=True)
class StepDecay(LRSchedule):
    """lr, multiplied by gamma at each milestone step reached."""

    lr: float
    milestones: tuple[int, ...]
    gamma: float = 0.1

    def lr_at(self, step: int) -> float:
        lr = self.lr
        for milestone in self.milestones:
            if step >= milestone:
                lr *= self.gamma
        return lr


@dataclass(frozen=True)
class FastGeometric(LRSchedule):
    """FGE's rate: lr_high + ½(lr0 − lr_high)(1 + cos(π·step/first)) for the first `first`
    steps; then, with t = ((step − first) mod cycle)/cycle, the piecewise-linear cycle of
    Garipov et al.'s code: (1 − 2t)·lr_high + 2t·lr_low for t < ½ and
    (2 − 2t)·lr_low + (2t − 1)·lr_high after, so the rate is lr_low at every mid-cycle."""

    lr0: float  # α0
    first: int  # steps of the first phase
    cycle: int  # steps of one cycle (c epochs)
    lr_high: float  # α1
    lr_low: float  # α2

    def lr_at(self, step: int) -> float:
        if step < self.first:
            cosine = (1 + math.cos(math.pi * step / self.first)) / 2
            return self.lr_high + (self.lr0 - self.lr_high) * cosine
        t = ((step - self.first) % self.cycle) / self.cycle
        if t < 0.5:
            return (1 - 2 * t) * self.lr_high + 2 * t * self.lr_low
        return (2 - 2 * t) * self.lr_low + (2 * t - 1) * self.lr_high


@dataclass(frozen=True)
class Warmup(LRSchedule):
    """lr·(1/W + (1 − 1/W)·step/W) for the first W steps, then `then` from its step 0."""

    lr: float
    iterations: int  # W
    then: LRSchedule

    def lr_at(self, step: int) -> float:
        if step >= self.iterations:
            return self.then.lr_at(step - self.iterations)
        start = 1.0 / self.iterations
        return self.lr * (start + (1.0 - start) * step / self.iterations)

    def begin_epoch(self, epoch: int, model: Normalized, train_x: torch.Tensor) -> None:
        self.then.begin_epoch(epoch, model, train_x)

    def end_epoch(self, step: int, val_loss: float | None) -> None:
        if step >= self.iterations:  # the rule starts once the warmup is over
            self.then.end_epoch(step - self.iterations, val_loss)

    def state(self) -> dict[str, Any]:
        return self.then.state()

    def load_state(self, state: dict[str, Any]) -> None:
        self.then.load_state(state)

    def diverged(self, epoch: int, loss: float) -> str:
        return self.then.diverged(epoch, loss)


@dataclass
class Plateau(LRSchedule):
    """ReduceLROnPlateau (mode min, relative threshold 1e-4, no cooldown) on the validation
    loss of each epoch: after more than `patience` epochs without improvement the rate is
    multiplied by `factor` from the next step on."""

    lr: float
    patience: int
    factor: float
    best: float = math.inf
    bad_epochs: int = 0
    reductions: list[int] = field(default_factory=list)  # steps from which the rate is cut

    def lr_at(self, step: int) -> float:
        lr = self.lr
        for at in self.reductions:
            if step >= at:
                lr *= self.factor
        return lr

    def end_epoch(self, step: int, val_loss: float | None) -> None:
        if val_loss is None:
            raise RuntimeError("plateau needs the validation loss every epoch")
        if val_loss < self.best * (1.0 - PLATEAU_THRESHOLD):
            self.best, self.bad_epochs = val_loss, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            current = self.lr_at(step)
            if current - current * self.factor > PLATEAU_EPS:
                self.reductions.append(step)
            self.bad_epochs = 0

    def state(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "reductions": list(self.reductions),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
        self.reductions = [int(at) for at in state["reductions"]]


def lipschitz_lr(
    max_activation_norm: float,
    classes: int,
    batch_size: int,
    max_weight_norm: float,
    weight_decay: float,
) -> float:
    """Yedida & Saha: lr = 1/K, K = (k−1)·K_z/(k·m), plus 1e-4·max‖W‖ when weight decay is on."""
    k = (classes - 1) * max_activation_norm / (classes * batch_size)
    if weight_decay > 0:
        k += 1e-4 * max_weight_norm
    if not k > 0:
        raise RuntimeError("the Lipschitz constant is zero: penultimate activations are all zero")
    return 1.0 / k


def max_weight_norm(model: torch.nn.Module) -> float:
    return max(float(p.detach().float().norm()) for p in model.parameters())


@torch.no_grad()
def measure_lipschitz(model: Normalized, x: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """(K_z, max‖W‖): the largest Frobenius norm of a batch's penultimate activations over
    one pass of the (unaugmented) training data, as the authors compute it, and the largest
    Frobenius norm of a parameter tensor."""
    norms: list[torch.Tensor] = []
    hook = model.fc.register_forward_hook(
        lambda _m, inputs, _o: norms.append(inputs[0].float().norm())
    )
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(x), batch_size):
            model(x[start : start + batch_size].float())
    finally:
        hook.remove()
        model.train(was_training)
    return float(torch.stack(norms).max()), max_weight_norm(model)


@dataclass
class Lipschitz(LRSchedule):
    """lr = 1/K for a whole epoch, K measured on the network at the epoch's start."""

    classes: int
    batch_size: int
    weight_decay: float
    iterations_per_epoch: int
    rates: list[float] = field(default_factory=list)  # the rate of each epoch begun

    def lr_at(self, step: int) -> float:
        return self.rates[step // self.iterations_per_epoch]

    def begin_epoch(self, epoch: int, model: Normalized, train_x: torch.Tensor) -> None:
        if len(self.rates) < epoch:
            raise RuntimeError(f"lipschitz: epoch {epoch} begun without the rates before it")
        kz, max_w = measure_lipschitz(model, train_x, self.batch_size)
        del self.rates[epoch:]
        self.rates.append(lipschitz_lr(kz, self.classes, self.batch_size, max_w, self.weight_decay))

    def state(self) -> dict[str, Any]:
        return {"rates": list(self.rates)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.rates = [float(rate) for rate in state["rates"]]

    def diverged(self, epoch: int, loss: float) -> str:
        return (
            f"the Lipschitz rate diverged in epoch {epoch} (loss {loss}): "
            "its 1/K rate can be too large for networks without batch normalisation "
            "(try --arch resnet8)"
        )

"""Where training runs: one device, or one process per device under torchrun (DDP); and
SIGINT/SIGTERM turned into a request to stop at the next iteration."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from trainer.errors import UserError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int
    world_size: int
    amp_dtype: torch.dtype | None  # autocast dtype on CUDA, None on the CPU

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_float(self, value: float | None) -> float | None:
        """Rank 0's value on every rank (None stays None)."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def _pick_device(flag: str, local_rank: int) -> torch.device:
    if flag == "cpu" or (flag == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"--device {flag}: CUDA is not available on this machine; use --device cpu")
    if flag.startswith("cuda:"):
        return torch.device(flag)
    return torch.device("cuda", local_rank)


@contextmanager
def runtime(device_flag: str) -> Iterator[Runtime]:
    """Set up the device and, under torchrun (WORLD_SIZE > 1), the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _pick_device(device_flag, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        amp: torch.dtype | None = (
            torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        )
    else:
        amp = None
    if world > 1:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield Runtime(device, rank, world, amp)
        if world > 1:
            # Leave together: a gloo rank that tears its group down while a peer is still
            # writing the report can abort ("terminate called without an active exception").
            dist.barrier()
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


@contextmanager
def stop_requests() -> Iterator[threading.Event]:
    """Turn SIGINT/SIGTERM into a request to stop at the next iteration boundary, never in
    the middle of a C++ call or a write. A second Ctrl-C interrupts at once."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def handler(signum: int, frame: object) -> None:
        if requested.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requested.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)

"""Which onnxruntime execution providers a model runs on: TensorRT, CUDA or the CPU.

`auto` takes a GPU provider only where the shared libraries it needs load on this host,
found by probing them (the NVIDIA driver, the CUDA runtime and cuDNN majors this
onnxruntime build links, TensorRT's libraries) rather than by letting a session fail.
The choice is made and said once per process. Shared by the HTTP server and the batch
scorer through server.runtime.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import mmap
import struct
import sys
import threading
from dataclasses import dataclass
from functools import cache
from io import StringIO
from pathlib import Path

import onnxruntime as ort

from server.settings import Providers, RuntimeSettings

# The runtime's logger: what is said about providers belongs to loading a model.
log = logging.getLogger("snapens.runtime")

TENSORRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)
PREFERENCE: dict[Providers, list[str]] = {
    Providers.AUTO: [TENSORRT, CUDA, CPU],
    Providers.TENSORRT: [TENSORRT, CUDA, CPU],
    Providers.CUDA: [CUDA, CPU],
    Providers.CPU: [CPU],
}
# onnxruntime-gpu 1.19+ loads cuDNN 9 at run time (its CUDA provider does not link it).
CUDNN = "libcudnn.so.9"
DRIVER = "libcuda.so.1"
PROVIDER_NAMES = {TENSORRT: "TensorRT", CUDA: "CUDA", CPU: "CPU"}


class RuntimeLoadError(Exception):
    """A snapshot set that cannot be served (bad files, a graph onnxruntime rejects, a
    provider that cannot load). server.runtime raises and exports it."""


class ProviderUnavailable(RuntimeLoadError):
    """`--providers cuda` or `tensorrt` on a machine where that provider cannot load."""


@dataclass(frozen=True)
class ProviderChoice:
    providers: list[str]  # what to ask onnxruntime for, best first
    skipped: str | None = None  # why auto left GPU providers out (None: nothing left out)


def library_loads(name: str) -> bool:
    """Whether the dynamic linker loads the shared library `name` (a soname or a path)."""
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def linked_libraries(path: Path) -> list[str]:
    """The DT_NEEDED entries (sonames, with the major versions it was built against) of a
    64-bit little-endian ELF library; [] where the file cannot be read as one."""
    try:
        with (
            path.open("rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as elf,
        ):
            if elf[:6] != b"\x7fELF\x02\x01":
                return []
            (shoff,) = struct.unpack_from("<Q", elf, 0x28)
            shentsize, shnum = struct.unpack_from("<HH", elf, 0x3A)
            # Section headers: (sh_type, sh_offset, sh_size, sh_link).
            sections = [
                struct.unpack_from("<4xI16xQQI", elf, shoff + i * shentsize) for i in range(shnum)
            ]
            names = []
            for kind, offset, size, link in sections:
                if kind != 6:  # SHT_DYNAMIC; its sh_link is the string table section
                    continue
                strings = sections[link][1]
                for tag, value in struct.iter_unpack("<qQ", elf[offset : offset + size]):
                    if tag == 1:  # DT_NEEDED
                        start = strings + value
                        names.append(elf[start : elf.find(b"\0", start)].decode())
            return names
    except (OSError, ValueError, IndexError, struct.error, UnicodeDecodeError):
        return []


def provider_library(provider: str) -> Path:
    short = {TENSORRT: Providers.TENSORRT, CUDA: Providers.CUDA}[provider].value
    return Path(ort.__file__).parent / "capi" / f"libonnxruntime_providers_{short}.so"


@cache
def missing_libraries(provider: str) -> tuple[str, ...]:
    """The shared libraries a GPU provider needs that do not load here: those its onnxruntime
    provider library links (the majors this onnxruntime was built for), cuDNN and the NVIDIA
    driver for CUDA. TensorRT lists only what CUDA does not need as well; it needs CUDA too."""
    if sys.platform != "linux":
        return ()  # no cheap check: let onnxruntime try
    if library_loads(DRIVER):
        preload_cuda_libraries()  # the pip packages' CUDA and cuDNN, before they are probed
    elif provider == CUDA:
        return (DRIVER,)  # without a driver the rest does not matter
    cuda_needs = [DRIVER, *linked_libraries(provider_library(CUDA)), CUDNN]
    if provider == CUDA:
        names = cuda_needs
    else:
        names = [n for n in linked_libraries(provider_library(TENSORRT)) if n not in cuda_needs]
    return tuple(n for n in dict.fromkeys(names) if not library_loads(n))


def unusable(provider: str, available: set[str]) -> str | None:
    """Why a GPU provider cannot run here (None: it can; TensorRT needs CUDA as well)."""
    if provider not in available:
        return (
            f"this onnxruntime build ({ort.__version__}) has no {provider}: install onnxruntime-gpu"
        )
    missing = missing_libraries(provider)
    if missing:
        names = [f"{n} (the NVIDIA driver)" if n == DRIVER else n for n in missing]
        return f"{', '.join(names)} not found"
    return None


_choices: dict[Providers, ProviderChoice] = {}
_choosing = threading.Lock()


def choose_providers(choice: Providers, *, fresh: bool = False) -> ProviderChoice:
    """The providers to ask onnxruntime for. `auto` takes TensorRT and CUDA only where their
    libraries load here and logs one line naming what is missing when this onnxruntime
    build has a GPU provider it cannot use: a warning where the NVIDIA driver is present
    (a GPU host missing libraries), at info level where it is not (a host without a GPU).
    An explicit `cuda` or `tensorrt` that cannot load raises ProviderUnavailable naming the
    missing libraries. Decided (and said) once per process, however many models load at
    once; fresh=True decides and says it again."""
    with _choosing:
        if fresh or choice not in _choices:
            _choices[choice] = _choose(choice)
        return _choices[choice]


def _choose(choice: Providers) -> ProviderChoice:
    available = set(ort.get_available_providers())
    wanted = [p for p in PREFERENCE[choice] if p != CPU]
    reasons = {p: r for p in wanted if (r := unusable(p, available)) is not None}
    if choice != Providers.AUTO and reasons:
        raise ProviderUnavailable(
            f"--providers {choice} cannot be used: "
            + "; ".join(f"{PROVIDER_NAMES[p]}: {r}" for p, r in reasons.items())
        )
    if CUDA in reasons:
        reasons.setdefault(TENSORRT, "needs CUDA")
    usable = [p for p in wanted if p not in reasons]
    skipped = [
        f"{PROVIDER_NAMES[p]} skipped: {reasons[p]}"
        for p in wanted
        if p in reasons and p in available
    ]
    if not skipped:
        return ProviderChoice([*usable, CPU])
    note = f"{'; '.join(skipped)}; serving on {PROVIDER_NAMES[(usable or [CPU])[0]]}"
    # No NVIDIA driver means no GPU on this host: the CPU is the expected choice, not a
    # fault (the GPU image on a CPU host). A driver with libraries missing is a fault.
    no_gpu = not usable and not library_loads(DRIVER)
    log.log(logging.INFO if no_gpu else logging.WARNING, "%s", note)
    return ProviderChoice([*usable, CPU], note)


@cache
def preload_cuda_libraries() -> None:
    """Load the CUDA and cuDNN libraries of the pip packages that `onnxruntime-gpu[cuda,cudnn]`
    installs (onnxruntime-gpu 1.21+), so the CUDA provider (and the probes above) find them
    without LD_LIBRARY_PATH; where they are not installed, the system's libraries are used.
    What preload_dlls prints about libraries it cannot load goes to the debug log."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    printed = StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            preload()
    except Exception as exc:  # best effort: the probes and the session say what really loads
        log.debug("could not preload the CUDA libraries: %s", exc)
    if printed.getvalue().strip():
        log.debug("onnxruntime.preload_dlls: %s", printed.getvalue().strip())


def provider_options(providers: list[str], settings: RuntimeSettings) -> list[dict[str, str]]:
    """Each provider's options, in the order of `providers` (the TensorRT engine cache)."""
    options = []
    for provider in providers:
        if provider == TENSORRT and settings.trt_cache_dir is not None:
            options.append(
                {
                    "trt_engine_cache_enable": "True",
                    "trt_engine_cache_path": str(settings.trt_cache_dir),
                }
            )
        else:
            options.append({})
    return options

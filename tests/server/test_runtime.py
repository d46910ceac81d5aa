"""The ensemble runtime: fused graph, per-member sessions, checks and providers."""

from __future__ import annotations

import ctypes.util
import json
import logging
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from server.providers import (
    CPU,
    CUDA,
    DRIVER,
    TENSORRT,
    ProviderChoice,
    ProviderUnavailable,
    choose_providers,
    library_loads,
    linked_libraries,
    provider_library,
)
from server.runtime import (
    EnsembleRuntime,
    MemberGroup,
    Prediction,
    RuntimeLoadError,
    session_options,
)
from server.settings import RuntimeSettings
from snapens.ensemble import DISAGREEMENT_FIGURES, combine, softmax
from snapens.manifest import ManifestError, read_manifest, write_manifest


def own_outputs(model_dir: Path, x: np.ndarray, cycles: list[int]) -> np.ndarray:
    """Each snapshot run alone by onnxruntime: the reference for everything fused."""
    manifest = read_manifest(model_dir)
    probs = []
    for entry in manifest.snapshots:
        if entry.cycle in cycles:
            session = ort.InferenceSession(str(model_dir / entry.file), providers=[CPU])
            probs.append(softmax(session.run(None, {"input": x})[0].astype(np.float64)))
    return np.stack(probs)


def test_fused_and_per_member_give_the_members_own_numbers(
    digits_repo: Path, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    x = digit_images[0][:50]
    folder = digits_repo / "digits"
    fused = EnsembleRuntime.load(folder, None, RuntimeSettings(execution="fused"))
    per_member = EnsembleRuntime.load(folder, None, RuntimeSettings(execution="per-member"))
    assert len(fused.sessions) == 1 and len(per_member.sessions) == 5
    reference = own_outputs(folder, x, [1, 2, 3, 4, 5])
    for runtime in (fused, per_member):
        prediction = runtime.run(x)
        assert prediction.member_probs.shape == (5, 50, 10) and prediction.mean.shape == (50, 10)
        np.testing.assert_allclose(prediction.member_probs, reference, atol=1e-6)
        np.testing.assert_allclose(prediction.mean, reference.mean(axis=0), atol=1e-6)
    a, b = fused.run(x), per_member.run(x)
    np.testing.assert_allclose(a.member_probs, b.member_probs, atol=1e-6)
    assert (a.mean.argmax(-1) == b.mean.argmax(-1)).all()


def test_the_fused_answer_comes_from_the_graph_and_equals_the_per_member_one(
    digits_repo: Path, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    """The fused session returns the figures itself (no numpy combine); whole or in
    batches, they equal the contract's arithmetic on the per-member path's numbers."""
    x = digit_images[0][:50]
    folder = digits_repo / "digits"
    fused = EnsembleRuntime.load(folder, None, RuntimeSettings(execution="fused"))
    per_member = EnsembleRuntime.load(folder, None, RuntimeSettings(execution="per-member"))
    assert fused.groups[-1].answers and fused.run(x).result is not None
    assert per_member.run(x).result is None
    reference = combine(per_member.run(x).member_probs)
    for batch_size in (None, 16):
        got = fused.answer(x, batch_size).result
        np.testing.assert_array_equal(got.label, reference.label)
        np.testing.assert_array_equal(got.member_labels, reference.member_labels)
        for name in ("confidence", *DISAGREEMENT_FIGURES):
            np.testing.assert_allclose(getattr(got, name), getattr(reference, name), atol=1e-6)


def test_loads_the_last_m_snapshots(
    digits_repo: Path, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    folder = digits_repo / "digits"
    runtime = EnsembleRuntime.load(folder, 2, RuntimeSettings())
    assert [e.cycle for e in runtime.members] == [4, 5]
    x = digit_images[0][:8]
    np.testing.assert_allclose(
        runtime.run(x).member_probs, own_outputs(folder, x, [4, 5]), atol=1e-6
    )
    more = EnsembleRuntime.load(folder, 9, RuntimeSettings())
    assert more.m == 5 and "serving those" in more.warnings[0]
    members = more.predict_members(digit_images[0][:300], m=3, batch_size=64)
    assert members.shape == (3, 300, 10)


def test_a_corrupt_snapshot_is_refused_with_the_reason(digits_repo: Path) -> None:
    folder = digits_repo / "digits"
    data = bytearray((folder / "snapshots" / "005.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte changed: the same length, another checksum
    (folder / "snapshots" / "005.onnx").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=r"005\.onnx: sha256 .* does not match"):
        EnsembleRuntime.load(folder, None, RuntimeSettings())
    # Older snapshots are intact; a set that leaves the bad one out loads.
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["snapshots"] = manifest["snapshots"][:4]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert EnsembleRuntime.load(folder, None, RuntimeSettings()).m == 4


def test_a_file_that_is_not_onnx_but_matches_its_checksum_is_refused(digits_repo: Path) -> None:
    import hashlib

    folder = digits_repo / "digits"
    junk = b"\x00\x01 not a protobuf"
    (folder / "snapshots" / "005.onnx").write_bytes(junk)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["snapshots"][-1] |= {"sha256": hashlib.sha256(junk).hexdigest(), "bytes": len(junk)}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RuntimeLoadError, match=r"005\.onnx"):
        EnsembleRuntime.load(folder, None, RuntimeSettings())


def test_a_model_without_snapshots_is_not_loadable(digits_repo: Path) -> None:
    folder = digits_repo / "digits"
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest |= {"snapshots": [], "state": "training"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="no snapshots yet"):
        EnsembleRuntime.load(folder, None, RuntimeSettings())


def test_the_library_probe_tells_a_loadable_library_from_a_missing_one() -> None:
    libc = ctypes.util.find_library("c")  # libc.so.6 on glibc Linux
    assert libc is not None and library_loads(libc)
    assert not library_loads("libsnapens-no-such-library.so.7")
    assert not library_loads("/nonexistent/libc.so.6")


def test_linked_libraries_are_read_from_the_library_itself(tmp_path: Path) -> None:
    pybind = next((Path(ort.__file__).parent / "capi").glob("onnxruntime_pybind11_state*"))
    if sys.platform == "linux":
        assert "libc.so.6" in linked_libraries(pybind)
    else:  # not ELF
        assert linked_libraries(pybind) == []
    text = tmp_path / "notes.txt"
    text.write_text("not a library")
    header_only = tmp_path / "header.so"
    header_only.write_bytes(b"\x7fELF\x02\x01" + bytes(58))
    empty = tmp_path / "empty.so"
    empty.write_bytes(b"")
    for path in (text, header_only, empty, tmp_path / "missing.so"):
        assert linked_libraries(path) == []


def gpu_build() -> bool:
    return bool({TENSORRT, CUDA} & set(ort.get_available_providers()))


def unloadable_tensorrt_libraries() -> list[str]:
    """The TensorRT libraries this onnxruntime build links (libnvinfer.so.10 for 1.19+) that
    do not load here."""
    linked = linked_libraries(provider_library(TENSORRT))
    return [
        n
        for n in linked
        if n.startswith(("libnvinfer.", "libnvonnxparser.")) and not library_loads(n)
    ]


def test_auto_takes_only_providers_that_load_and_says_once_what_is_missing(
    digits_repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert choose_providers("cpu", fresh=True) == ProviderChoice([CPU])
    with caplog.at_level(logging.INFO, logger="snapens.runtime"):
        choice = choose_providers("auto", fresh=True)
        for execution in ("fused", "per-member"):  # two loads: the warning is not repeated
            runtime = EnsembleRuntime.load(
                digits_repo / "digits", None, RuntimeSettings(providers="auto", execution=execution)
            )
            assert runtime.providers[0] == choice.providers[0]
    warnings = [
        r for r in caplog.records if r.name == "snapens.runtime" and "skipped" in r.msg % r.args
    ]
    assert choice.providers[-1] == CPU
    if gpu_build() and not library_loads(DRIVER):  # onnxruntime-gpu on a machine without a GPU
        assert choice.providers == [CPU] and runtime.providers == [CPU]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        # No driver, no GPU: serving on the CPU is expected there, so it is said at info level.
        assert warnings[0].levelno == logging.INFO
        message = warnings[0].getMessage()
        assert message == choice.skipped and message in runtime.warnings
        assert "CUDA skipped: libcuda.so.1 (the NVIDIA driver) not found" in message
        assert message.endswith("; serving on CPU")
        if TENSORRT in ort.get_available_providers():
            missing = unloadable_tensorrt_libraries()
            assert missing and f"TensorRT skipped: {', '.join(missing)} not found" in message
            assert any(n.startswith("libnvinfer.so.") for n in missing)
    elif not gpu_build():  # plain onnxruntime: nothing to skip, nothing to say
        assert choice == ProviderChoice([CPU]) and warnings == []
    else:  # a machine with an NVIDIA driver: at most the one warning, and what it names
        assert len(warnings) <= 1 and all(r.levelno == logging.WARNING for r in warnings)
        assert (choice.skipped is None) == (warnings == [])


def test_an_explicit_gpu_provider_that_cannot_load_is_one_clear_error(
    digits_repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if library_loads(DRIVER) and not unloadable_tensorrt_libraries():
        # A GPU machine with TensorRT: the explicit choice is served on it.
        runtime = EnsembleRuntime.load(
            digits_repo / "digits", None, RuntimeSettings(providers="tensorrt")
        )
        assert runtime.providers[0] == TENSORRT
        return
    with caplog.at_level(logging.INFO, logger="snapens.runtime"):
        with pytest.raises(ProviderUnavailable) as raised:
            choose_providers("tensorrt", fresh=True)
        with pytest.raises(RuntimeLoadError, match="--providers tensorrt cannot be used"):
            EnsembleRuntime.load(
                digits_repo / "digits", None, RuntimeSettings(providers="tensorrt")
            )
    message = str(raised.value)
    assert message.startswith("--providers tensorrt cannot be used: ")
    # An error for the caller (server, scorer) to report, not a warning as well.
    assert [r for r in caplog.records if r.name == "snapens.runtime"] == []
    if TENSORRT not in ort.get_available_providers():
        assert "has no TensorrtExecutionProvider: install onnxruntime-gpu" in message
        return
    missing = unloadable_tensorrt_libraries()
    if missing:
        assert f"TensorRT: {', '.join(missing)} not found" in message
    if not library_loads(DRIVER):
        assert "CUDA: libcuda.so.1 (the NVIDIA driver) not found" in message
        cuda = "--providers cuda cannot be used: CUDA: libcuda.so.1 (the NVIDIA driver) not found"
        with pytest.raises(ProviderUnavailable, match=f"^{re.escape(cuda)}$"):
            choose_providers("cuda", fresh=True)


def test_the_served_members_run_alone_unless_more_are_asked_for(
    digits_repo: Path, digit_images: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    folder = tmp_path / "digits"
    shutil.copytree(digits_repo / "digits", folder)
    write_manifest(folder, read_manifest(folder).model_copy(update={"default_m": 2}))
    x = digit_images[0][:20]
    reference = own_outputs(folder, x, [1, 2, 3, 4, 5])
    for execution in ("fused", "per-member"):
        runtime = EnsembleRuntime.load(folder, None, RuntimeSettings(execution=execution), True)
        assert runtime.m == 5 and runtime.default_m == 2
        assert [g.size for g in runtime.groups] == [3, 2]
        for k in (1, 2, 3, 5):
            got = runtime.run(x, k)
            np.testing.assert_allclose(got.member_probs, reference[-k:], atol=1e-6)
            np.testing.assert_allclose(got.mean, reference[-k:].mean(axis=0), atol=1e-6)
        everything = runtime.answer(x, batch_size=7)
        assert everything.prediction.member_probs.shape == (5, 20, 10)
        np.testing.assert_allclose(  # the answer is the served members' ensemble
            everything.result.probabilities, reference[-2:].mean(axis=0), atol=1e-6
        )

        class Unused(MemberGroup):
            def run(self, x: np.ndarray) -> Prediction:
                raise AssertionError("the earlier members ran for a default answer")

        earlier = runtime.groups[0]
        runtime.groups[0] = Unused(
            earlier.size, earlier.sessions, earlier.execution, runtime.manifest
        )
        served = runtime.answer(x, members=2)
        assert served.prediction.member_probs.shape == (2, 20, 10)
        assert runtime.answer(x, members=1).prediction.member_probs.shape == (2, 20, 10)
        with pytest.raises(AssertionError, match="earlier members ran"):
            runtime.answer(x, members=3)


@pytest.mark.parametrize(
    ("spinning", "execution", "allow", "stop_after_run"),
    [
        ("on", "fused", "1", None),
        ("run", "fused", "1", "1"),
        ("off", "fused", "0", None),
        ("on", "per-member", "1", None),
        ("auto", "fused", "1", None),  # one session: spinning between runs costs nobody
        ("auto", "per-member", "1", "1"),  # one per snapshot: each must stop for the next
    ],
)
def test_the_spinning_setting_reaches_onnxruntime(
    spinning: str, execution: str, allow: str, stop_after_run: str | None
) -> None:
    options = session_options(RuntimeSettings(intra_op_spinning=spinning, execution=execution))
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == allow
    if stop_after_run is None:
        with pytest.raises(Exception, match="force_spinning_stop"):
            options.get_session_config_entry("session.force_spinning_stop")
    else:
        assert options.get_session_config_entry("session.force_spinning_stop") == stop_after_run


@pytest.mark.parametrize("execution", ["fused", "per-member"])
def test_a_batch_alone_on_the_machine_runs_on_sessions_of_every_core_with_the_same_numbers(
    digits_repo: Path, digit_images: tuple[np.ndarray, np.ndarray], execution: str
) -> None:
    """One of two server processes: its sessions under load have one thread; a second set
    for a batch alone on the machine has two; both answer alike."""
    x = digit_images[0][:20]
    share = RuntimeSettings(execution=execution, intra_op_threads=1)
    alone = RuntimeSettings(execution=execution, intra_op_threads=2)
    runtime = EnsembleRuntime.load(digits_repo / "digits", None, share, alone=alone)
    threads = [
        [s.get_session_options().intra_op_num_threads for g in groups for s in g.sessions]
        for groups in (runtime.groups, runtime.alone_groups)
    ]
    assert threads[0] and set(threads[0]) == {1} and set(threads[1]) == {2}
    for members in (None, 2):
        loaded, everywhere = (runtime.answer(x, None, members, a) for a in (False, True))
        np.testing.assert_allclose(
            loaded.prediction.member_probs, everywhere.prediction.member_probs, atol=1e-6
        )
        for name in ("probabilities", *DISAGREEMENT_FIGURES):
            np.testing.assert_allclose(
                getattr(loaded.result, name), getattr(everywhere.result, name), atol=1e-6
            )
    single = EnsembleRuntime.load(digits_repo / "digits", None, share)
    assert single.alone_groups == []  # one process: its sessions have every core already
    np.testing.assert_allclose(
        single.answer(x, alone=True).prediction.mean, runtime.answer(x).prediction.mean, atol=1e-6
    )

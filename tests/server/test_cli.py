"""The flags of `python -m server` and the scorer's runtime flags are generated from the
settings models: one flag per field, its help the field's description and default, and the
flag overriding the environment variable and .env."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from server import cli
from server.score import cli as score_cli
from server.settings import RuntimeSettings, ServerSettings
from tests.help_text import help_entries

ROOT = Path(__file__).resolve().parents[2]

# Every flag with the default its help shows, spelled out: the names and defaults users rely on.
DEFAULTS = {
    "--repository": "models",
    "--host": "127.0.0.1",
    "--port": "8000",
    "--workers": "1",
    "--m": "unset",
    "--max-batch-size": "64",
    "--max-queue-delay-ms": "2",
    "--batch-workers": "1",
    "--max-request-batch": "256",
    "--max-body-bytes": "33554432",
    "--max-body-bytes-in-flight": "1073741824",
    "--body-timeout-s": "30",
    "--min-body-rate": "240",
    "--body-rate-grace-s": "5",
    "--header-timeout-s": "10",
    "--max-header-bytes": "65536",
    "--poll-interval-s": "2",
    "--log-level": "info",
    "--log-format": "json",
    "--graceful-shutdown-s": "10",
    "--top-k": "3",
    "--decode-workers": "2",
    "--providers": "auto",
    "--execution": "fused",
    "--intra-op-threads": "0",
    "--intra-op-spinning": "auto",
    "--inter-op-threads": "0",
    "--graph-optimization": "all",
    "--parallel-execution": "false",
    "--trt-cache-dir": "unset",
    "--max-image-pixels": "25000000",
}
CHOICES = {
    "--providers": "{auto,cuda,tensorrt,cpu}",
    "--execution": "{fused,per-member}",
    "--graph-optimization": "{disable,basic,extended,all}",
    "--intra-op-spinning": "{auto,on,run,off}",
    "--log-level": "{debug,info,warning,error}",
    "--log-format": "{json,text}",
}
RUNTIME_TITLE = "onnxruntime"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No SNAPENS_* variable of the caller's and no .env but the test's own."""
    for name in list(os.environ):
        if name.startswith("SNAPENS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.chdir(tmp_path)


def flags(parser: argparse.ArgumentParser, title: str | None = None) -> dict[str, str]:
    """dest -> first option string of the parser's flags (of one group where titled)."""
    groups = [g for g in parser._action_groups if title is None or g.title == title]
    return {
        a.dest: a.option_strings[0]
        for g in groups
        for a in g._group_actions
        if a.option_strings and a.dest != "help"
    }


def test_every_server_setting_has_a_flag_but_the_secret() -> None:
    parser = cli.build_parser()
    made = flags(parser)
    assert set(made) == set(ServerSettings.model_fields) - {"api_key"}
    assert all(option == "--" + dest.replace("_", "-") for dest, option in made.items())
    assert set(made.values()) == set(DEFAULTS)
    # a key on the command line would show in ps: environment or .env only, said in --help
    assert "SNAPENS_API_KEY" in " ".join(parser.format_help().split())


def test_help_lists_each_flag_with_its_description_choices_and_default() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert result.returncode == 0, result.stderr
    entries = help_entries(result.stdout)
    fields = {"--" + n.replace("_", "-"): f for n, f in ServerSettings.model_fields.items()}
    for option, default in DEFAULTS.items():
        entry = entries[option]
        assert entry.endswith(f"(default: {default})"), entry
        description = fields[option].description
        assert description and " ".join(description.split()) in entry, option
        if option in CHOICES:
            assert entry.startswith(f"{option} {CHOICES[option]}"), entry
    assert entries["--parallel-execution"].startswith(
        "--parallel-execution, --no-parallel-execution"
    )


def test_every_setting_has_a_description() -> None:
    for name, field in ServerSettings.model_fields.items():
        assert field.description, name


def test_a_flag_overrides_the_environment_and_the_env_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "SNAPENS_MAX_BATCH_SIZE=7\nSNAPENS_EXECUTION=per-member\nSNAPENS_PORT=9000\n"
    )
    monkeypatch.setenv("SNAPENS_PORT", "9001")
    monkeypatch.setenv("SNAPENS_PARALLEL_EXECUTION", "true")
    monkeypatch.setenv("SNAPENS_PROVIDERS", "cuda")

    from_environment = cli.settings_from([])
    assert from_environment.port == 9001  # the environment over .env
    assert from_environment.max_batch_size == 7
    assert from_environment.execution == "per-member"
    assert from_environment.parallel_execution is True
    assert from_environment.providers == "cuda"

    settings = cli.settings_from(
        [
            "--port",
            "9002",
            "--max-batch-size",
            "9",
            "--execution",
            "fused",
            "--no-parallel-execution",
            "--providers",
            "cpu",
        ]
    )
    assert (settings.port, settings.max_batch_size) == (9002, 9)
    assert settings.execution == "fused" and settings.parallel_execution is False
    assert settings.providers == "cpu"


@pytest.mark.parametrize(
    ("argv", "environment", "message"),
    [
        (
            ["--providers", "gpu"],
            {},
            "error: --providers (or SNAPENS_PROVIDERS): "
            "Input should be 'auto', 'cuda', 'tensorrt' or 'cpu'",
        ),
        (
            [],
            {"SNAPENS_EXECUTION": "both"},
            "error: --execution (or SNAPENS_EXECUTION): Input should be 'fused' or 'per-member'",
        ),
        (
            ["--port", "70000"],
            {},
            "error: --port (or SNAPENS_PORT): Input should be less than or equal to 65535",
        ),
        (
            ["--m", "0"],
            {"SNAPENS_M": "3"},
            "error: --m (or SNAPENS_M): Input should be greater than or equal to 1",
        ),
        (
            [],
            {"SNAPENS_API_KEY": ""},
            "error: SNAPENS_API_KEY: the key is empty; unset the variable to serve without a key",
        ),
        (
            [],
            {"SNAPENS_API_KEY": "s3cret\n"},
            "error: SNAPENS_API_KEY: the key begins or ends with whitespace (a "
            "secret made from a file often ends with a newline), which no client can send in a "
            "header; remove it",
        ),
        (
            ["--workers", "2", "--poll-interval-s", "0"],
            {},
            "error: --poll-interval-s (or SNAPENS_POLL_INTERVAL_S): 0 (no polling) with "
            "--workers 2: a load request reaches one process, and the others would serve their "
            "old snapshot sets for good; poll, or serve with one process",
        ),
        (
            ["--max-body-bytes-in-flight", "2000000"],
            {"SNAPENS_MAX_BODY_BYTES": "4000000"},
            "error: --max-body-bytes-in-flight (or SNAPENS_MAX_BODY_BYTES_IN_FLIGHT): 2000000 "
            "is less than --max-body-bytes (4000000): a request of the largest size would "
            "always be refused",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_flag_and_the_variable(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], environment: dict[str, str], message: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        cli.settings_from(argv)
    assert exited.value.code == message


def test_the_command_exits_with_the_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server", "--max-batch-size", "zero"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: --max-batch-size (or SNAPENS_MAX_BATCH_SIZE): "
        "Input should be a valid integer, unable to parse string as an integer"
    ]


def test_the_scorer_runtime_flags_are_the_runtime_settings() -> None:
    runtime = flags(score_cli.build_parser(), RUNTIME_TITLE)
    assert list(runtime) == list(RuntimeSettings.model_fields)
    assert runtime == flags(cli.build_parser(), RUNTIME_TITLE)  # the server's, the same
    entries = help_entries(score_cli.build_parser().format_help())
    for option in runtime.values():
        assert entries[option].endswith(f"(default: {DEFAULTS[option]})"), entries[option]
    assert entries["--batch-size"].endswith("(default: 256)")
    assert entries["--repository"].endswith("(default: models)")


def test_the_scorer_runtime_flags_override_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SNAPENS_EXECUTION", "per-member")
    monkeypatch.setenv("SNAPENS_INTRA_OP_THREADS", "3")
    parser = score_cli.build_parser()
    base = ["--input", "x.npy", "--output", "o.csv"]
    settings = score_cli.runtime_settings(parser.parse_args(base))
    assert (settings.execution, settings.intra_op_threads) == ("per-member", 3)
    settings = score_cli.runtime_settings(
        parser.parse_args([*base, "--execution", "fused", "--max-image-pixels", "64"])
    )
    assert (settings.execution, settings.intra_op_threads) == ("fused", 3)
    assert settings.max_image_pixels == 64


def test_a_bad_scorer_runtime_flag_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--input", "x.npy", "--output", "o.csv", "--providers", "gpu"]
    assert score_cli.main(argv) == score_cli.EXIT_USAGE
    assert capsys.readouterr().err.splitlines() == [
        "error: --providers (or SNAPENS_PROVIDERS): "
        "Input should be 'auto', 'cuda', 'tensorrt' or 'cpu'"
    ]
    assert not list(tmp_path.iterdir())  # refused before any work

"""The Dockerfile builds with the engine's built-in Dockerfile frontend: no `# syntax=` parser
directive (BuildKit would pull that frontend image from a registry, which an air-gapped or
mirror-only build cannot reach) and no instruction flag newer than that frontend knows
(BuildKit in Docker 20.10+)."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT
from tests.deploy.dockerfile import Stage

# A parser directive: `# key=value` (case-insensitive, spaces allowed around the key and `=`).
SYNTAX_DIRECTIVE = re.compile(r"^\s*#\s*syntax\s*=", re.IGNORECASE | re.MULTILINE)

# What the frontend built into Docker 20.10's BuildKit parses. Newer flags (COPY --link,
# --chmod, --parents, --exclude, ADD --checksum, HEALTHCHECK --start-interval, RUN --security)
# and heredocs need a `# syntax=` frontend image or a newer engine.
BUILT_IN_FLAGS = {
    "FROM": {"platform"},
    "RUN": {"mount", "network"},
    "COPY": {"from", "chown"},
    "ADD": {"chown"},
    "HEALTHCHECK": {"interval", "timeout", "start-period", "retries"},
}
BUILT_IN_MOUNT_TYPES = {"bind", "cache", "tmpfs", "secret", "ssh"}


def syntax_directives(text: str) -> list[str]:
    return SYNTAX_DIRECTIVE.findall(text)


def flags(args: str) -> list[tuple[str, str]]:
    """The leading `--name=value` (or `--name`) words of an instruction's arguments."""
    found = []
    for word in args.split():
        if not word.startswith("--"):
            break
        name, _, value = word.removeprefix("--").partition("=")
        found.append((name, value))
    return found


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("# syntax=docker/dockerfile:1\nFROM scratch\n", 1),
        ("#Syntax = docker/dockerfile:1.7-labs\nFROM scratch\n", 1),
        ("  # SYNTAX=example.org/frontend\nFROM scratch\n", 1),
        ("# escape=`\nFROM scratch\n", 0),
        ("# The Dockerfile has no `# syntax=` line.\nFROM scratch\n", 0),
    ],
)
def test_the_syntax_directive_check_recognises_the_directive(text: str, count: int) -> None:
    assert len(syntax_directives(text)) == count


def test_the_dockerfile_has_no_syntax_directive() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert syntax_directives(text) == [], "a `# syntax=` line makes BuildKit pull a frontend image"


def test_the_dockerfile_uses_only_flags_the_built_in_frontend_knows(
    stages: dict[str, Stage],
) -> None:
    used = 0
    for stage in stages.values():
        for keyword, args in [("FROM", stage.base), *stage.instructions]:
            assert not re.search(r"<<-?[\"']?\w", args), f"{keyword} uses a heredoc: {args}"
            for name, value in flags(args):
                assert name in BUILT_IN_FLAGS.get(keyword, set()), f"{keyword} --{name}"
                if keyword == "RUN" and name == "mount":
                    options = dict(part.partition("=")[::2] for part in value.split(","))
                    assert options.get("type", "bind") in BUILT_IN_MOUNT_TYPES, value
                used += 1
    assert used > 0  # the RUN --mount binds of the wheel: the flags really were read


def test_the_flag_reader_reads_only_the_leading_flags() -> None:
    assert flags("--mount=type=bind,from=builder,target=/w set -- --x") == [
        ("mount", "type=bind,from=builder,target=/w")
    ]
    assert flags('--interval=10s --retries=3 CMD ["python"]') == [
        ("interval", "10s"),
        ("retries", "3"),
    ]
    assert flags("pip install .") == []

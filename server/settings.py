"""Every server setting in one place: each field below is an environment variable
(SNAPENS_<NAME>), a line of a .env file and, through add_flags(), a command-line flag
(--kebab-case-name) whose help is the field's description and default. Flags override
the environment, which overrides .env."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from snapens import flags
from snapens.flags import flag, value_type
from snapens.images import DEFAULT_MAX_IMAGE_PIXELS
from snapens.validation import first_error


class Providers(StrEnum):
    AUTO = "auto"
    CUDA = "cuda"
    TENSORRT = "tensorrt"
    CPU = "cpu"


class Execution(StrEnum):
    FUSED = "fused"
    PER_MEMBER = "per-member"


class GraphOptimization(StrEnum):
    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"


class Spinning(StrEnum):
    """When onnxruntime's intra-op threads spin-wait for work instead of sleeping."""

    AUTO = "auto"  # on: one fused graph; run: a session per snapshot; off: several models
    ON = "on"  # onnxruntime's default: also between runs, until they give up
    RUN = "run"  # only while a run is in progress (session.force_spinning_stop)
    OFF = "off"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


DEFAULT_REPOSITORY = Path("models")


class RuntimeSettings(BaseSettings):
    """How snapshots run on onnxruntime: shared by the server and the batch scorer."""

    model_config = SettingsConfigDict(env_prefix="SNAPENS_", env_file=".env", extra="ignore")

    providers: Providers = Field(
        Providers.AUTO,
        description="onnxruntime execution providers. auto: TensorRT, CUDA, CPU in that order, "
        "each GPU provider only where its libraries load here; cuda or tensorrt: that GPU "
        "provider or an error naming the missing libraries",
    )
    execution: Execution = Field(
        Execution.FUSED,
        description="fused: one graph runs every snapshot (one session.run per batch); "
        "per-member: one session per snapshot",
    )
    intra_op_threads: int = Field(0, ge=0, description="onnxruntime intra-op threads; 0: all cores")
    intra_op_spinning: Spinning = Field(
        Spinning.AUTO,
        description="when onnxruntime's intra-op threads spin-wait for work: on (also between "
        "runs, onnxruntime's default), run (only during a run: the cores go back to the event "
        "loop and to the next session as soon as a batch is done), off; auto: on for one fused "
        "model, run with --execution per-member and off where the server holds several "
        "models, whose sessions' threads would otherwise spin against each other "
        "(bench/spinning.py)",
    )
    inter_op_threads: int = Field(
        0, ge=0, description="onnxruntime inter-op threads; 0: onnxruntime's choice"
    )
    graph_optimization: GraphOptimization = Field(
        GraphOptimization.ALL, description="onnxruntime graph optimization level"
    )
    parallel_execution: bool = Field(
        False, description="run independent graph branches in parallel"
    )
    trt_cache_dir: Path | None = Field(
        None, description="TensorRT engine cache folder; unset: engines are built at each load"
    )
    max_image_pixels: int = Field(
        DEFAULT_MAX_IMAGE_PIXELS,
        ge=1,
        description="images whose header declares more pixels are refused before any pixel is "
        "decoded: the server answers 413, the scorer fails the row",
    )


class ServerSettings(RuntimeSettings):
    """What `python -m server` serves and how: the runtime settings and the HTTP side."""

    repository: Path = Field(
        DEFAULT_REPOSITORY, description="model repository folder: each model folder in it is served"
    )
    host: str = Field("127.0.0.1", description="address to listen on; 0.0.0.0 in containers")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on")
    workers: int = Field(
        1,
        ge=1,
        le=256,
        description="server processes sharing the port, each loading every model with its "
        "share of the cores (a batch alone on the machine takes them all); each has its own "
        "event loop, which at concurrency answers and parses requests while another "
        "process's batch runs (bench/serve_processes.py)",
    )
    m: int | None = Field(
        None, ge=1, description="snapshots served per model; unset: the manifest's default_m"
    )
    max_batch_size: int = Field(64, ge=1, description="rows per dynamic batch")
    max_queue_delay_ms: float = Field(
        2.0,
        ge=0,
        description="under concurrency, how long a batch waits for the next request of its "
        "round before it runs with those there are (a wait spent only while requests arrive)",
    )
    batch_workers: int = Field(
        1,
        ge=1,
        description="batches in flight at once per model, each taking its share of "
        "the waiting clients",
    )
    max_request_batch: int = Field(256, ge=1, description="rows allowed in one request, 413 beyond")
    max_body_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="request body limit in bytes, 413 beyond"
    )
    max_body_bytes_in_flight: int = Field(
        1024 * 1024 * 1024,
        ge=1024,
        description="request-body bytes held at once, summed over the requests being "
        "answered; a request that would take it beyond gets 503 with Retry-After (instead "
        "of the server running out of memory); at least --max-body-bytes; with --workers, "
        "each process holds an equal share of it (and at least one body of the largest size)",
    )

    @field_validator("max_body_bytes_in_flight")
    @classmethod
    def _room_for_one_body(cls, value: int, info: ValidationInfo) -> int:
        largest = info.data.get("max_body_bytes")
        if largest is not None and value < largest:
            raise ValueError(
                f"{value} is less than --max-body-bytes ({largest}): a request of the largest "
                "size would always be refused"
            )
        return value

    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="a client that sends no part of its request body for this long gets 408 "
        "(a stalled upload would otherwise hold its connection open)",
    )
    min_body_rate: float = Field(
        240.0,
        ge=0,
        description="bytes/s a request body must arrive at on average after "
        "--body-rate-grace-s, else 408 (a body trickled a byte at a time would otherwise hold "
        "its connection for as long as its length lasts); 0: no minimum",
    )
    body_rate_grace_s: float = Field(
        5.0, ge=0, description="seconds of reading a request body before --min-body-rate applies"
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="a connection whose request line and headers are not complete this long "
        "after it opened or its request began gets 408 and is closed (one that sent nothing "
        "is closed)",
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="request line and headers limit in bytes, 431 beyond",
    )
    poll_interval_s: float = Field(
        2.0,
        ge=0,
        description="seconds between manifest polls for hot reload; 0: off (one process only: "
        "a load request reaches one of the --workers processes, and the others learn of a "
        "new snapshot set by polling)",
    )

    @field_validator("poll_interval_s")
    @classmethod
    def _every_process_reloads(cls, value: float, info: ValidationInfo) -> float:
        workers = info.data.get("workers", 1)
        if value == 0 and workers > 1:
            raise ValueError(
                f"0 (no polling) with --workers {workers}: a load request reaches one "
                "process, and the others would serve their old snapshot sets for good; poll, "
                "or serve with one process"
            )
        return value

    api_key: SecretStr | None = Field(
        None,
        description="if set, required on every route but health, the demo page's files and the "
        "API documentation, as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
    )

    @field_validator("api_key")
    @classmethod
    def _a_key_a_header_can_carry(cls, value: SecretStr | None) -> SecretStr | None:
        """HTTP drops the whitespace around a header's value: an empty key would be
        matched by an empty header, and one with a trailing newline (a secret made from a
        file) by no header at all."""
        if value is None:
            return None
        key = value.get_secret_value()
        if not key.strip():
            raise ValueError("the key is empty; unset the variable to serve without a key")
        if key != key.strip():
            raise ValueError(
                "the key begins or ends with whitespace (a secret made from a file often ends "
                "with a newline), which no client can send in a header; remove it"
            )
        return value

    log_level: LogLevel = Field(LogLevel.INFO, description="the least severe level logged")
    log_format: LogFormat = Field(
        LogFormat.JSON,
        description="json: one JSON object per line with its request id; text: plain lines",
    )
    graceful_shutdown_s: float = Field(
        10.0, ge=0, description="seconds in-flight requests get to finish on SIGTERM"
    )
    top_k: int = Field(3, ge=1, description="classes listed per prediction unless asked otherwise")
    decode_workers: int = Field(
        2, ge=1, description="uploaded images decoded at once, in a pool off the event loop"
    )


# Settings as command-line flags, generated from the fields above by snapens.flags; what is
# the server's own: the environment variable of each flag, and the secret that has none.

S = TypeVar("S", bound=BaseSettings)


def env_var(model: type[BaseSettings], name: str) -> str:
    """The environment variable of a field: max_batch_size -> SNAPENS_MAX_BATCH_SIZE."""
    return f"{model.model_config.get('env_prefix', '')}{name}".upper()


def env_only(info: FieldInfo) -> bool:
    """Secrets get no flag: a command line is visible to every user of the host (ps)."""
    return value_type(info) is SecretStr


def add_flags(
    parser: argparse.ArgumentParser,
    model: type[BaseSettings],
    title: str,
    names: Iterable[str] | None = None,
    description: str | None = None,
) -> None:
    """A group of flags on parser for the fields `names` of model (default: all but the
    env-only ones): snapens.flags.add_flags(). Values stay strings (booleans:
    --flag/--no-flag) for settings_from_flags() to validate, so that a bad one is reported
    as the environment variable's would be; a flag not given is left out of the namespace,
    so the environment and .env still apply."""
    chosen = list(names) if names is not None else flag_fields(model)
    fields = model.model_fields
    for name in chosen:
        if env_only(fields[name]):
            raise ValueError(f"{name} is a secret: environment or .env only")
    flags.add_flags(parser, model, title, chosen, description)


def flag_fields(model: type[BaseSettings]) -> list[str]:
    """The fields of model that add_flags() makes flags of by default."""
    return [name for name, info in model.model_fields.items() if not env_only(info)]


def env_only_help(model: type[BaseSettings]) -> str:
    """The settings without a flag, for a parser's epilog."""
    return "\n".join(
        f"{env_var(model, name)}: {info.description} (environment or .env only)"
        for name, info in model.model_fields.items()
        if env_only(info)
    )


class SettingsError(ValueError):
    """A setting with a bad value, as one line naming its flag and environment variable."""


def settings_error(exc: ValidationError, model: type[BaseSettings]) -> SettingsError:
    """The first error of a ValidationError as `--flag (or SNAPENS_FLAG): what`."""
    where, what = first_error(exc)
    name = where.split(".")[0]
    info = model.model_fields.get(name)
    if info is None:
        return SettingsError(f"{where or 'settings'}: {what}")
    if env_only(info):
        return SettingsError(f"{env_var(model, name)}: {what}")
    return SettingsError(f"{flag(name)} (or {env_var(model, name)}): {what}")


def settings_from_flags(model: type[S], namespace: argparse.Namespace) -> S:
    """model from the flags given (those add_flags() made), the environment and .env, in
    that order of precedence. Raises SettingsError naming the flag and variable at fault."""
    try:
        return model(**flags.given(model, namespace))
    except ValidationError as exc:
        raise settings_error(exc, model) from None

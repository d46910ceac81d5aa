"""Every server setting in one place: each field below is an environment variable
(SNAPENS_<NAME>), a line of a .env file and, through add_flags(), a command-line flag
(--kebab-case-name) whose help is the field's description and default. Flags override
the environment, which overrides .env."""

from __future__ import annotations

import argparse
import textwrap
import types
from collections.abc import Iterable
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    m: int | None = Field(
        None, ge=1, description="snapshots served per model; unset: the manifest's default_m"
    )
    max_batch_size: int = Field(64, ge=1, description="rows per dynamic batch")
    max_queue_delay_ms: float = Field(
        2.0,
        ge=0,
        description="longest wait to fill a batch, spent only while requests arrive concurrently",
    )
    batch_workers: int = Field(1, ge=1, description="batches in flight at once per model")
    max_request_batch: int = Field(256, ge=1, description="rows allowed in one request, 413 beyond")
    max_body_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="request body limit in bytes, 413 beyond"
    )
    poll_interval_s: float = Field(
        2.0, ge=0, description="seconds between manifest polls for hot reload; 0: off"
    )
    api_key: SecretStr | None = Field(
        None,
        description="if set, required on every route but health, the demo page's files and the "
        "API documentation, as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
    )
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


# Settings as command-line flags, generated from the fields above.

S = TypeVar("S", bound=BaseSettings)


def flag(name: str) -> str:
    """The flag of a field: max_batch_size -> --max-batch-size."""
    return "--" + name.replace("_", "-")


def env_var(model: type[BaseSettings], name: str) -> str:
    """The environment variable of a field: max_batch_size -> SNAPENS_MAX_BATCH_SIZE."""
    return f"{model.model_config.get('env_prefix', '')}{name}".upper()


def _value_type(info: FieldInfo) -> Any:
    """The field's type without `| None`."""
    annotation = info.annotation
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return annotation


def env_only(info: FieldInfo) -> bool:
    """Secrets get no flag: a command line is visible to every user of the host (ps)."""
    return _value_type(info) is SecretStr


def choices(info: FieldInfo) -> list[str] | None:
    """The values an Enum or Literal field takes, as typed on the command line."""
    value_type = _value_type(info)
    if isinstance(value_type, type) and issubclass(value_type, Enum):
        return [str(member.value) for member in value_type]
    if get_origin(value_type) is Literal:
        return [str(v) for v in get_args(value_type)]
    return None


def shown_default(info: FieldInfo) -> str:
    """A field's default as --help shows it."""
    default = info.get_default(call_default_factory=True)
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, Enum):
        return str(default.value)
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


_METAVARS: dict[Any, str] = {int: "INT", float: "FLOAT", Path: "PATH", str: "TEXT"}


def add_flags(
    parser: argparse.ArgumentParser,
    model: type[BaseSettings],
    title: str,
    names: Iterable[str] | None = None,
    description: str | None = None,
) -> None:
    """A group of flags on parser for the fields `names` of model (default: all but the
    env-only ones): --kebab-case, choices listed, help = description and default. Values
    stay strings (booleans: --flag/--no-flag) for settings_from_flags() to validate, so that
    a bad one is reported as the environment variable's would be; a flag not given is left
    out of the namespace, so the environment and .env still apply."""
    group = parser.add_argument_group(title, description)
    fields = model.model_fields
    for name in names if names is not None else flag_fields(model):
        info = fields[name]
        if env_only(info):
            raise ValueError(f"{name} is a secret: environment or .env only")
        text = (info.description or "").replace("%", "%%")
        help_text = f"{text} (default: {shown_default(info)})"
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if _value_type(info) is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            options = choices(info)
            kwargs["metavar"] = (
                "{" + ",".join(options) + "}"
                if options
                else _METAVARS.get(_value_type(info), name.upper())
            )
        group.add_argument(flag(name), **kwargs)


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


class HelpFormatter(argparse.HelpFormatter):
    """argparse's, but lines not broken at hyphens (per-member, --max-image-pixels) and each
    line of a description or epilog wrapped as a paragraph of its own."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(
            textwrap.fill(
                " ".join(line.split()),
                width,
                initial_indent=indent,
                subsequent_indent=indent,
                break_on_hyphens=False,
            )
            for line in text.splitlines()
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
    given = {name: getattr(namespace, name) for name in model.model_fields if name in namespace}
    try:
        return model(**given)
    except ValidationError as exc:
        raise settings_error(exc, model) from None

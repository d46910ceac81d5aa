"""Every server setting in one place: flags, environment variables (SNAPENS_*) and a
.env file, validated by pydantic-settings. Flags override the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from snapens.images import DEFAULT_MAX_IMAGE_PIXELS

Providers = Literal["auto", "cuda", "tensorrt", "cpu"]


class RuntimeSettings(BaseSettings):
    """How snapshots run on onnxruntime: shared by the server and the batch scorer."""

    model_config = SettingsConfigDict(env_prefix="SNAPENS_", env_file=".env", extra="ignore")

    providers: Providers = Field(
        "auto", description="auto = TensorRT, CUDA, CPU in that order, of those this build has"
    )
    execution: Literal["fused", "per-member"] = Field(
        "fused", description="fused: one graph runs all members; per-member: one session each"
    )
    intra_op_threads: int = Field(0, ge=0, description="onnxruntime intra-op threads (0 = cores)")
    inter_op_threads: int = Field(0, ge=0, description="onnxruntime inter-op threads (0 = default)")
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    parallel_execution: bool = Field(
        False, description="run independent graph branches in parallel"
    )
    trt_cache_dir: Path | None = Field(None, description="TensorRT engine cache folder")
    max_image_pixels: int = Field(
        DEFAULT_MAX_IMAGE_PIXELS,
        ge=1,
        description="images whose header declares more pixels are refused before decoding",
    )


class ServerSettings(RuntimeSettings):
    repository: Path = Field(Path("models"), description="model repository folder")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    m: int | None = Field(None, ge=1, description="snapshots to serve (default: the manifest's)")
    max_batch_size: int = Field(64, ge=1, description="rows per dynamic batch")
    max_queue_delay_ms: float = Field(2.0, ge=0, description="longest wait to fill a batch")
    batch_workers: int = Field(1, ge=1, description="batches in flight at once per model")
    max_request_batch: int = Field(256, ge=1, description="rows allowed in one request")
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="request body limit")
    poll_interval_s: float = Field(
        2.0, ge=0, description="manifest polling for hot reload (0 = off)"
    )
    api_key: SecretStr | None = Field(None, description="if set, required on all but health routes")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    graceful_shutdown_s: float = Field(
        10.0, ge=0, description="time in-flight requests get on stop"
    )
    top_k: int = Field(3, ge=1, description="classes listed per prediction by default")
    decode_workers: int = Field(
        2, ge=1, description="uploaded images decoded at once, off the event loop"
    )

"""Data models of the Open Inference Protocol (KServe v2), as Triton and KServe speak it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: Any = Field(None, description="row-major values, flat or nested; absent for binary data")


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        None,
        description="m: use the last m loaded snapshots; members: also return member outputs; "
        "binary_data_output: return every output as binary data",
    )
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadataResponse(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="the served snapshot set: m, snapshots, providers, execution, last load",
    )


class ServerMetadataResponse(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ReadyResponse(BaseModel):
    name: str | None = None
    ready: bool


class LiveResponse(BaseModel):
    live: bool


class RepositoryIndexEntry(BaseModel):
    name: str
    version: str | None = None
    state: str
    reason: str | None = None

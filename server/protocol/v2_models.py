"""Data models of the Open Inference Protocol (KServe v2), as Triton and KServe speak it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from server.protocol.json_types import STRICT, Dimension

# The Open Inference Protocol's tensor datatypes.
Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip


class RequestInput(BaseModel):
    model_config = STRICT

    name: str
    shape: list[Dimension] = Field(min_length=1)
    datatype: Datatype
    parameters: dict[str, Any] | None = Field(
        None,
        description="binary_data_size: bytes of this tensor in the binary part of the body",
        json_schema_extra={
            "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
        },
    )
    data: list[Any] | None = Field(
        None, description="row-major values, flat or nested; absent for binary data"
    )


class RequestOutput(BaseModel):
    model_config = STRICT

    name: str
    parameters: dict[str, Any] | None = Field(
        None,
        json_schema_extra={
            "properties": {
                "binary_data": {"type": "boolean"},
                "classification": {"type": "integer", "minimum": 1},
            }
        },
    )


class InferenceRequest(BaseModel):
    model_config = STRICT

    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        None,
        description="m: use the last m loaded snapshots; members: also return member outputs; "
        "binary_data_output: return every output as binary data",
        json_schema_extra={
            "properties": {
                "m": {"type": "integer", "minimum": 1},
                "members": {"type": "boolean"},
                "binary_data_output": {"type": "boolean"},
            }
        },
    )
    inputs: list[RequestInput] = Field(min_length=1)
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

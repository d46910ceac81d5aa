"""Data models of the friendly JSON API in the KServe v1 style: `{"instances": [...]}` in,
`{"predictions": [...]}` out."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from server.protocol.json_types import Count


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # server.protocol.json_types

    instances: list[Any] = Field(
        min_length=1,
        description="images as nested lists shaped [C, H, W] (or [H, W] for one channel) of raw "
        'pixels in the model\'s pixel_range, or encoded images as {"b64": "<base64 PNG, JPEG...>"}',
    )
    m: Count | None = Field(None, description="use the last m loaded snapshots")
    members: bool = Field(False, description="include each snapshot's label and probabilities")
    top_k: Count | None = Field(None, description="classes to list (default: the server's top_k)")


class ClassScore(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    label: int
    class_name: str = Field(alias="class")
    probability: float


class MemberPrediction(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    cycle: int
    label: int
    class_name: str = Field(alias="class")
    probabilities: list[float]


class Prediction(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    label: int
    class_name: str = Field(alias="class")
    confidence: float
    top_k: list[ClassScore]
    vote_disagreement: float
    pairwise_disagreement: float
    predictive_entropy: float
    expected_entropy: float
    mutual_information: float
    member_std: float
    probabilities: list[float]
    members: list[MemberPrediction] | None = None


class PredictResponse(BaseModel):
    model_name: str
    m: int
    snapshots: list[int] = Field(description="cycles of the snapshots that answered")
    predictions: list[Prediction]


class ModelList(BaseModel):
    models: list[str]


class ModelStatus(BaseModel):
    name: str
    ready: bool

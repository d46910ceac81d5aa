"""Types of the request models, validated strictly (a `"2"` or a `true` where a number
belongs is refused, not coerced) yet as JSON means them: JSON has one number type, and
JSON Schema's "integer" includes 2.0."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field

STRICT = ConfigDict(strict=True)


def integral(value: Any) -> Any:
    """2.0 as 2; anything else as it is, for strict validation to judge."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# The constraint before the validator, so that the JSON Schema says "minimum".
Dimension = Annotated[int, Field(ge=0), BeforeValidator(integral)]  # a tensor dimension
Count = Annotated[int, Field(ge=1), BeforeValidator(integral)]  # m, top_k

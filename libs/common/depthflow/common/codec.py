"""orjson encoding and decoding of topic values, with typed errors."""

from __future__ import annotations

from typing import Any

import orjson

from depthflow.common.errors import DecodeError


def dumps(value: Any) -> bytes:
    """Encode a value as compact JSON bytes (numpy arrays and dataclasses allowed)."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def loads_object(topic: str, data: bytes | bytearray | memoryview | str | None) -> dict[str, Any]:
    """Decode JSON bytes that must hold an object; anything else raises ``DecodeError``."""
    if data is None:
        raise DecodeError(topic, "empty message value")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(topic, f"not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise DecodeError(topic, f"expected a JSON object, got {type(value).__name__}")
    return value

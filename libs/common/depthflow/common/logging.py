"""Structured JSON logs with a trace id carried through Kafka headers.

The trace id is born where an exchange message arrives (collector), travels as the
``trace-id`` Kafka header from topic to topic, and ends in the executor's orders and audit
rows, so one line of ``grep`` follows a decision from the book update to the order.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

TRACE_HEADER = "trace-id"
_trace_id: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="")

# Attributes every LogRecord has; anything else given through ``extra=`` is logged as a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def new_trace_id() -> str:
    """A fresh 128-bit trace id (hex, W3C trace-context sized)."""
    return uuid.uuid4().hex


def current_trace_id() -> str:
    return _trace_id.get()


def set_trace_id(trace_id: str) -> contextvars.Token[str]:
    return _trace_id.set(trace_id)


def trace_headers(trace_id: str | None = None) -> list[tuple[str, bytes]]:
    """Kafka headers carrying the trace id (the current one by default)."""
    tid = trace_id if trace_id is not None else _trace_id.get()
    return [(TRACE_HEADER, tid.encode())] if tid else []


def trace_from_headers(headers: Iterable[tuple[str, bytes | None]] | Sequence[Any] | None) -> str:
    """The trace id found in Kafka headers, or ``""``."""
    for name, value in headers or ():
        if name == TRACE_HEADER and value:
            return bytes(value).decode(errors="replace")
    return ""


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, trace_id, service and extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "service": self.service,
            "msg": record.getMessage(),
        }
        trace_id = getattr(record, "trace_id", None) or _trace_id.get()
        if trace_id:
            doc["trace_id"] = trace_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key != "trace_id":
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time (never to a stream since closed, as
    happens when a test runner swaps stderr)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(service: str, level: str = "INFO", json: bool = True) -> None:
    """Route every logger to stderr, as JSON lines unless ``json`` is false."""
    handler = _StderrHandler()
    if json:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "asyncio", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))

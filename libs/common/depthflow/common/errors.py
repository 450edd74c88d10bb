"""Typed errors that turn library quirks into clear messages."""

from __future__ import annotations


class DepthflowError(Exception):
    """Base of every error depthflow raises on purpose."""


class ConfigError(DepthflowError):
    """A setting is missing or wrong; the message names the field."""


class DecodeError(DepthflowError):
    """Bytes on a topic are not a valid message of that topic's schema."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"cannot decode message on {topic!r}: {reason}")
        self.topic = topic
        self.reason = reason


class KafkaError(DepthflowError):
    """A Kafka operation failed (produce, create topics, commit)."""


class ProduceError(KafkaError):
    """A message could not be delivered to the broker."""


class DatabaseError(DepthflowError):
    """A PostgreSQL operation failed after its retries."""

"""Test helpers: real Kafka and PostgreSQL fixtures, fresh topics/schemas, ``eventually``."""

from depthflow.common.testing.waiting import eventually, eventually_async

__all__ = ["eventually", "eventually_async"]

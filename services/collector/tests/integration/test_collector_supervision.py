"""A background task of the collector that dies stops the service loudly.

The PostgreSQL outage test once waited 180 s for a sink that had died minutes earlier: the
sink task's exception was dropped (the task left the supervised set as it finished), so the
collector kept collecting without writing anything. Now ``run`` raises what killed it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from depthflow.collector.app import CollectorService
from depthflow.common.settings import KafkaSettings

from .test_collector_sim import SYMBOLS, collector_settings


class _DyingSink:
    """Stands in for the sink (no PostgreSQL needed): dies once the collector runs."""

    async def run(self, stop: asyncio.Event) -> int:
        await asyncio.sleep(0.5)
        raise RuntimeError("the sink died")


async def test_a_dead_sink_stops_the_collector(
    sim_factory: Callable[..., str],
    kafka_settings: KafkaSettings,
    topic_factory: Callable[..., str],
) -> None:
    url = sim_factory("--symbols", SYMBOLS, "--rate", "50", "--seed", "3")
    settings = collector_settings("binance", url, "collector", topic_factory, write_db=False)
    service = CollectorService(settings, kafka_settings)
    await service.start()
    try:
        service.sink = _DyingSink()
        with pytest.raises(RuntimeError, match="the sink died"):
            await asyncio.wait_for(service.run(), timeout=30)
        assert service.feed is not None and service.feed.stats.frames > 0
    finally:
        await service.stop()

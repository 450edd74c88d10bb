"""Round trips through the real broker with the common producer and consumer loop."""

import asyncio
import uuid
from collections import defaultdict

import asyncpg
import pytest

from depthflow.common import schemas
from depthflow.common.db import CopyWriter, create_pool
from depthflow.common.kafka import AsyncProducer, Consumed, ConsumerLoop, Producer
from depthflow.common.logging import trace_headers
from depthflow.common.schemas import Topic, Trade
from depthflow.common.testing.topics import end_offsets


def _trade(symbol: str, n: int) -> dict:
    return dict(
        schema_version=1,
        exchange="binance",
        symbol=symbol,
        trade_id=str(n),
        price=100.0 + n,
        qty=1.0,
        side="buy",
        exchange_ts_us=n,
        local_ts_us=n,
    )


def _produce_trades(kafka_settings, topic: str, symbols: list[str], per_symbol: int) -> None:
    producer = Producer(kafka_settings, client_id="test")
    for n in range(per_symbol):
        for symbol in symbols:
            producer.produce(
                topic,
                schemas.TRADES.encode(_trade(symbol, n)),
                key=schemas.symbol_key("binance", symbol),
                headers=trace_headers(f"trace-{symbol}-{n}"),
            )
    producer.flush()
    assert producer.delivered == per_symbol * len(symbols)


def _trade_loop(kafka_settings, topic, handler, service, group, dlq, **kw) -> ConsumerLoop:
    """A ConsumerLoop over one trades topic (``kw``: batch size, commit options)."""
    return ConsumerLoop(
        kafka_settings,
        service=service,
        group_id=group,
        topics=[Topic(topic, Trade, "{exchange}:{symbol}")],
        handler=handler,
        dlq_producer=dlq,
        **kw,
    )


async def _committed(loop: ConsumerLoop, topic: str, partitions=(0, 1)) -> int:
    return sum([(await loop.committed(topic, p)) or 0 for p in partitions])


async def _loop(kafka_settings, topic, handler, service, group):
    dlq = AsyncProducer(kafka_settings, client_id=service)
    await dlq.start()
    loop = _trade_loop(kafka_settings, topic, handler, service, group, dlq, max_batch=97)
    await loop.start()
    return loop, dlq


async def test_messages_are_consumed_in_order_per_key(kafka_settings, topic_factory):
    topic = topic_factory("order", partitions=3)
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
    _produce_trades(kafka_settings, topic, symbols, 250)
    seen: dict[str, list[int]] = defaultdict(list)
    traces: set[str] = set()

    async def handler(batch: list[Consumed]):
        for message in batch:
            seen[message.value.symbol].append(int(message.value.trade_id))
            traces.add(message.trace_id)

    loop, dlq = await _loop(kafka_settings, topic, handler, "test", f"g-{uuid.uuid4().hex}")
    try:
        consumed = await loop.run(max_messages=1000, idle_timeout=20)
    finally:
        await loop.stop()
        await dlq.stop()
    assert consumed == 1000
    assert {s: v for s, v in seen.items()} == {s: list(range(250)) for s in symbols}
    assert "trace-ETHUSDT-7" in traces


async def _make_table(pool: asyncpg.Pool, schema: str) -> None:
    await pool.execute(f'CREATE SCHEMA "{schema}"')
    await pool.execute(
        f'CREATE TABLE "{schema}".trades (symbol text, trade_id bigint, price float8,'
        " PRIMARY KEY (symbol, trade_id))"
    )


async def test_crash_before_and_after_the_write_replays_without_duplicates(
    kafka_settings, pg_settings, topic_factory, fresh_schema
):
    topic = topic_factory("crash", partitions=2)
    _produce_trades(kafka_settings, topic, ["BTCUSDT", "ETHUSDT"], 300)
    pool = await create_pool(pg_settings)
    await _make_table(pool, fresh_schema)
    writer = CopyWriter(
        pool,
        "trades",
        ["symbol", "trade_id", "price"],
        schema=fresh_schema,
        conflict_columns=["symbol", "trade_id"],
        batch_size=50,
    )
    await writer.start()
    group = f"g-{uuid.uuid4().hex}"
    calls = 0

    async def durable(batch: list[Consumed]):
        await writer.add_many(
            [(m.value.symbol, int(m.value.trade_id), m.value.price) for m in batch]
        )
        await writer.flush()

    async def crash_before_write(batch):
        raise RuntimeError("killed before the database write")

    async def crash_after_write(batch):
        nonlocal calls
        await durable(batch)
        calls += 1
        if calls == 3:
            raise RuntimeError("killed after the write, before the offset commit")

    try:
        for handler in (crash_before_write, crash_after_write):
            loop, dlq = await _loop(kafka_settings, topic, handler, "test", group)
            with pytest.raises(RuntimeError, match="killed"):
                await loop.run(max_messages=600, idle_timeout=20)
            await loop.stop()
            await dlq.stop()
        # Restarted consumer of the same group: replays from the last commit to the end.
        loop, dlq = await _loop(kafka_settings, topic, durable, "test", group)
        replayed = await loop.run(idle_timeout=3)
        await loop.stop()
        await dlq.stop()
        rows = await pool.fetchval(f'SELECT count(*) FROM "{fresh_schema}".trades')
        distinct = await pool.fetchval(
            f'SELECT count(DISTINCT (symbol, trade_id)) FROM "{fresh_schema}".trades'
        )
    finally:
        await writer.close()
        await pool.close()
    assert replayed >= 600 - 2 * 97  # at least everything after the two committed batches
    assert rows == distinct == 600


async def test_garbage_goes_to_the_dlq_and_the_consumer_keeps_going(kafka_settings, topic_factory):
    topic = topic_factory("garbage", partitions=1)
    service = f"test{uuid.uuid4().hex[:8]}"
    producer = Producer(kafka_settings, client_id="test")
    key = schemas.symbol_key("binance", "BTCUSDT")
    producer.produce(topic, schemas.TRADES.encode(_trade("BTCUSDT", 1)), key=key)
    producer.produce(topic, b"\xff\xfe{not json", key=key)
    producer.produce(topic, b'{"schema_version": 1, "exchange": "binance"}', key=key)
    producer.produce(topic, schemas.TRADES.encode(_trade("BTCUSDT", 2)), key=key)
    producer.flush()
    handled: list[str] = []

    async def handler(batch):
        handled.extend(m.value.trade_id for m in batch)

    loop, dlq = await _loop(kafka_settings, topic, handler, service, f"g-{uuid.uuid4().hex}")
    try:
        assert await loop.run(max_messages=4, idle_timeout=20) == 4
    finally:
        await loop.stop()
        await dlq.stop()
    assert handled == ["1", "2"]
    assert loop.stats.dead_lettered == 2

    letters: list[Consumed] = []

    async def collect(batch):
        letters.extend(batch)

    dlq_topic = schemas.dlq_topic(service)
    reader_dlq = AsyncProducer(kafka_settings, client_id="reader")
    await reader_dlq.start()
    reader = ConsumerLoop(
        kafka_settings,
        service="reader",
        group_id=f"g-{uuid.uuid4().hex}",
        topics=[dlq_topic],
        handler=collect,
        dlq_producer=reader_dlq,
    )
    await reader.start()
    try:
        await reader.run(max_messages=2, idle_timeout=20)
    finally:
        await reader.stop()
        await reader_dlq.stop()
    assert [m.value.offset for m in letters] == [1, 2]
    assert letters[0].value.value.encode("latin-1") == b"\xff\xfe{not json"
    assert "not JSON" in letters[0].value.error
    assert letters[1].value.source_topic == topic


async def test_stop_event_ends_the_loop(kafka_settings, topic_factory):
    topic = topic_factory("stop", partitions=1)

    async def handler(batch):
        return None

    loop, dlq = await _loop(kafka_settings, topic, handler, "test", f"g-{uuid.uuid4().hex}")
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.5, stop.set)
    try:
        assert await asyncio.wait_for(loop.run(stop), 10) == 0
    finally:
        await loop.stop()
        await dlq.stop()


async def test_consumer_lag_is_exported_and_drains_to_zero(kafka_settings, topic_factory):
    from depthflow.common.metrics import ServiceMetrics

    topic = topic_factory("lag", partitions=2)
    _produce_trades(kafka_settings, topic, ["BTCUSDT", "ETHUSDT"], 300)
    metrics = ServiceMetrics("lagtest")
    group = f"g-{uuid.uuid4().hex}"
    dlq = AsyncProducer(kafka_settings, client_id="lagtest")
    await dlq.start()
    seen_lags: list[float] = []

    def total_lag() -> float:
        samples = metrics.registry.get_sample_value
        return sum(
            samples(
                "depthflow_consumer_lag",
                {"service": "lagtest", "group": group, "topic": topic, "partition": str(p)},
            )
            or 0.0
            for p in (0, 1)
        )

    async def slow(batch: list[Consumed]) -> None:
        seen_lags.append(total_lag())
        await asyncio.sleep(0.05)

    loop = ConsumerLoop(
        kafka_settings,
        service="lagtest",
        group_id=group,
        topics=[Topic(topic, Trade, "{exchange}:{symbol}")],
        handler=slow,
        dlq_producer=dlq,
        max_batch=20,
        metrics=metrics,
        lag_interval_s=0.0,
    )
    await loop.start()
    try:
        assert await loop.run(max_messages=600, idle_timeout=20) == 600
        await loop.run(idle_timeout=0.5)  # one more round: the lag after the last batch
    finally:
        await loop.stop()
        await dlq.stop()
    assert max(seen_lags) >= 300  # the backlog was visible while the handler lagged
    # Unknown before the first fetch answers, then it shrinks batch by batch.
    later = seen_lags[1:]
    assert later == sorted(later, reverse=True)
    assert total_lag() == 0
    assert "depthflow_consumer_lag" in metrics.render().decode()


async def test_interval_commits_follow_the_checkpoint_and_a_failed_batch_never_commits(
    kafka_settings, topic_factory
):
    topic = topic_factory("interval", partitions=2)
    _produce_trades(kafka_settings, topic, ["BTCUSDT", "ETHUSDT"], 300)
    group = f"g-{uuid.uuid4().hex}"
    dlq = AsyncProducer(kafka_settings, client_id="interval")
    await dlq.start()
    handled: list[tuple[int, int]] = []
    checkpointed: list[int] = []  # messages handled at each checkpoint
    batches = 0

    async def handler(batch: list[Consumed]) -> None:
        nonlocal batches
        batches += 1
        if batches == 4:
            raise RuntimeError("handler failed")
        handled.extend((m.partition, m.offset) for m in batch)
        await asyncio.sleep(0.05)

    async def checkpoint() -> None:
        checkpointed.append(len(handled))

    def make(commit_interval_s: float) -> ConsumerLoop:
        return _trade_loop(
            kafka_settings,
            topic,
            handler,
            "interval",
            group,
            dlq,
            max_batch=50,
            commit_interval_s=commit_interval_s,
            before_commit=checkpoint,
        )

    async def committed(loop: ConsumerLoop) -> int:
        return await _committed(loop, topic)

    try:
        # the handler fails on its 4th batch, before the 60 s interval: nothing is committed,
        # not by the loop, nor when the member leaves the group (revocation commits otherwise)
        loop = make(60.0)
        await loop.start()
        with pytest.raises(RuntimeError, match="handler failed"):
            await loop.run(idle_timeout=10)
        await loop.stop()
        assert checkpointed == []
        probe = make(60.0)
        await probe.start()
        assert await committed(probe) == 0
        await probe.stop()
        # a short interval: fewer checkpoints than batches, each before its commit, and the
        # last one (when the loop ends) commits everything
        handled.clear()
        loop = make(0.3)
        await loop.start()
        assert await loop.run(idle_timeout=3) == 600
        assert 1 <= len(checkpointed) < batches - 4
        assert checkpointed[-1] == len(handled) == 600
        assert await committed(loop) == 600
        await loop.stop()
    finally:
        await dlq.stop()


async def test_a_rebalance_waits_for_the_batch_and_hands_out_only_owned_partitions(
    kafka_settings, topic_factory
):
    topic = topic_factory("rebalance", partitions=4)
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT", "ADAUSDT"]
    # a alone would need ~12 s (10 per batch, 50 ms each): b's join (a rebalance that waits
    # for a's heartbeat, up to 3 s) always lands while a is still busy
    _produce_trades(kafka_settings, topic, symbols, 400)
    group = f"g-{uuid.uuid4().hex}"
    dlq = AsyncProducer(kafka_settings, client_id="rebalance")
    await dlq.start()
    seen: dict[str, set[tuple[int, int]]] = {"a": set(), "b": set()}
    owned: dict[str, set[int]] = {"a": set(), "b": set()}
    in_batch = {"a": False, "b": False}
    violations: list[str] = []

    def member(name: str) -> ConsumerLoop:
        async def handler(batch: list[Consumed]) -> None:
            in_batch[name] = True
            for m in batch:
                if m.partition not in owned[name]:
                    violations.append(f"{name} handled partition {m.partition} it does not own")
                seen[name].add((m.partition, m.offset))
            await asyncio.sleep(0.05)  # a rebalance arrives while batches are in flight
            in_batch[name] = False

        async def assigned(tps: set) -> None:
            owned[name] = {tp.partition for tp in tps}

        async def revoked(tps: set) -> None:
            if in_batch[name]:
                violations.append(f"{name} revoked in the middle of a batch")
            owned[name] = set()

        return ConsumerLoop(
            kafka_settings,
            service=f"rebalance-{name}",
            group_id=group,
            topics=[Topic(topic, Trade, "{exchange}:{symbol}")],
            handler=handler,
            dlq_producer=dlq,
            max_batch=10,
            commit_interval_s=0.2,
            on_assigned=assigned,
            on_revoked=revoked,
        )

    a, b = member("a"), member("b")
    try:
        await a.start()
        run_a = asyncio.create_task(a.run(idle_timeout=8))
        await asyncio.sleep(1.0)
        await b.start()  # joins while a is busy: a's partitions are revoked and split
        run_b = asyncio.create_task(b.run(idle_timeout=8))
        await asyncio.wait_for(asyncio.gather(run_a, run_b), 120)
        assert not violations, violations
        assert seen["a"] and seen["b"], "both members took part"
        ends = end_offsets(kafka_settings, topic)
        assert sum(ends.values()) == 2400
        # at least once: every message handled by one member or both (a replay after a
        # revocation that came before a commit)
        assert seen["a"] | seen["b"] == {(p, o) for p, end in ends.items() for o in range(end)}
    finally:
        await a.stop()
        await b.stop()
        await dlq.stop()


async def test_a_background_checkpoint_lets_batches_go_on_and_commits_only_its_snapshot(
    kafka_settings, topic_factory
):
    topic = topic_factory("prepared", partitions=2)
    _produce_trades(kafka_settings, topic, ["BTCUSDT", "ETHUSDT"], 300)
    group = f"g-{uuid.uuid4().hex}"
    dlq = AsyncProducer(kafka_settings, client_id="prepared")
    await dlq.start()
    handled: list[tuple[int, int]] = []
    snapshots: list[int] = []  # messages handled when each checkpoint was prepared
    during: list[int] = []  # batches handled while a completion was running
    committed_at_completion: list[int] = []
    running = False
    fail_completion = False

    async def handler(batch: list[Consumed]) -> None:
        handled.extend((m.partition, m.offset) for m in batch)
        if running:
            during.append(len(batch))
        await asyncio.sleep(0.01)

    def make(interval: float) -> ConsumerLoop:
        return _trade_loop(
            kafka_settings,
            topic,
            handler,
            "prepared",
            group,
            dlq,
            max_batch=20,
            commit_interval_s=interval,
            prepare_commit=prepare,
        )

    async def committed(loop: ConsumerLoop) -> int:
        return await _committed(loop, topic)

    async def prepare():
        snapshots.append(len(handled))

        async def complete() -> None:
            nonlocal running
            running = True
            try:
                await asyncio.sleep(0.3)  # slow durable writes
                if fail_completion:
                    raise RuntimeError("completion failed")
                committed_at_completion.append(await committed(current[0]))
            finally:
                running = False

        return complete

    current: list[ConsumerLoop] = []
    try:
        # a failed completion stops the loop and commits nothing
        fail_completion = True
        loop = make(0.05)
        current[:] = [loop]
        await loop.start()
        with pytest.raises(RuntimeError, match="completion failed"):
            await loop.run(idle_timeout=10)
        await loop.stop()
        probe = make(60.0)
        await probe.start()
        assert snapshots and await committed(probe) == 0
        await probe.stop()
        # batches go on while a checkpoint completes; each commit is its snapshot's
        fail_completion = False
        handled.clear()
        snapshots.clear()
        loop = make(0.05)
        current[:] = [loop]
        await loop.start()
        assert await loop.run(idle_timeout=3) == 600
        assert sum(during) > 0, "no batch was handled while a checkpoint completed"
        # one checkpoint at a time, each commit lands before the next completion starts
        assert committed_at_completion == sorted(committed_at_completion)
        assert snapshots[-1] == len(handled) == 600
        assert await committed(loop) == 600
        await loop.stop()
    finally:
        await dlq.stop()


def test_delivered_through_waits_for_exactly_the_messages_produced_before_the_mark(
    kafka_settings, topic_factory
):
    topic = topic_factory("tracked", partitions=3)
    producer = Producer(kafka_settings, client_id="tracked", track_delivery=True, linger_ms=50)

    async def scenario() -> tuple[int, int, int]:
        for i in range(200):
            producer.produce(topic, b"x%d" % i, b"k%d" % (i % 7))
        mark = producer.mark()
        for i in range(200):  # after the mark: not waited for
            producer.produce(topic, b"y%d" % i, b"k%d" % (i % 7))
        await producer.delivered_through(mark, timeout=30)
        delivered_at_mark = producer.delivered
        await producer.delivered_through(producer.mark(), timeout=30)
        return mark, delivered_at_mark, producer.delivered

    mark, at_mark, total = asyncio.run(scenario())
    assert mark == 200 and at_mark >= 200 and total == 400
    plain = Producer(kafka_settings, client_id="untracked")
    with pytest.raises(RuntimeError, match="track_delivery"):
        asyncio.run(plain.delivered_through(0))

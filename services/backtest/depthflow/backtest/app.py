"""One backtest run, end to end: read the input, replay it through the engine, report, store.

``Backtest(request, settings, live, kafka, dsn).run()`` returns a ``RunOutcome``. I/O lives
here (Kafka, files, PostgreSQL, the progress bar); the replay itself is ``engine`` (pure).
"""

from __future__ import annotations

import itertools
import platform
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from depthflow.backtest.config import BacktestSettings, RunConfig, Source, StrategySpec
from depthflow.backtest.engine import BacktestEngine, EngineConfig, EngineResult
from depthflow.backtest.events import Event, SymbolStreams, merge_symbols
from depthflow.backtest.report import build_metrics, write_outputs
from depthflow.backtest.sources import (
    InputError,
    LoadStats,
    Range,
    load_kafka,
    load_tardis,
    read_topic_range,
    streams_from_depth_raw,
)
from depthflow.backtest.strategies import LoadedStrategy, build_strategy
from depthflow.backtest.vectors import FeaturesMode
from depthflow.common.settings import KafkaSettings
from depthflow.executor.fills import FillModelConfig
from depthflow.executor.risk import RiskLimits
from depthflow.strategy.config import RuntimeConfig


@dataclass(frozen=True)
class LiveConfig:
    """The live services' settings a backtest reuses (so it runs what production runs)."""

    runtime: RuntimeConfig
    risk: RiskLimits
    slippage_buffer_bps: float = 20.0
    min_emit_interval_ms: float = 0.0

    @classmethod
    def from_env(cls) -> LiveConfig:
        from depthflow.common.settings import load_settings
        from depthflow.executor.config import ExecutorSettings
        from depthflow.features.config import FeaturesSettings
        from depthflow.strategy.config import StrategySettings

        executor = load_settings(ExecutorSettings)
        return cls(
            runtime=load_settings(StrategySettings).runtime(),
            risk=executor.risk_limits(),
            slippage_buffer_bps=executor.slippage_buffer_bps,
            min_emit_interval_ms=load_settings(FeaturesSettings).min_emit_interval_ms,
        )


@dataclass(frozen=True)
class RunRequest:
    symbols: tuple[str, ...]
    from_us: int
    to_us: int
    strategy: StrategySpec
    source: Source = "kafka"
    tardis_files: tuple[Path, ...] = ()
    warmup_s: float = 0.0
    output_dir: Path | None = None
    store: bool = True
    progress: bool = False
    run_id: str | None = None
    # how feature vectors are computed; the results are the same (not part of RunConfig)
    features_mode: FeaturesMode = "batch"


@dataclass
class RunOutcome:
    run_id: str
    config: RunConfig
    metrics: dict[str, Any]
    result: EngineResult
    run: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


def code_version() -> str:
    """``<package version>+g<commit>`` when the source tree is a git checkout (read from
    ``.git`` directly, no git process), else the package version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg = version("depthflow")
    except PackageNotFoundError:
        pkg = "0+unknown"
    commit = git_commit()
    return f"{pkg}+g{commit[:12]}" if commit else pkg


def git_commit(start: Path | None = None) -> str:
    """The commit checked out in the source tree holding ``start`` ("" if none)."""
    here = (start or Path(__file__)).resolve()
    for folder in [here, *here.parents]:
        dotgit = folder / ".git"
        if not dotgit.exists():
            continue
        gitdir = dotgit
        if dotgit.is_file():  # a worktree: "gitdir: <path>"
            text = dotgit.read_text().strip()
            if not text.startswith("gitdir:"):
                return ""
            gitdir = (folder / text.split(":", 1)[1].strip()).resolve()
        common = gitdir
        if (gitdir / "commondir").is_file():
            common = (gitdir / (gitdir / "commondir").read_text().strip()).resolve()
        try:
            head = (gitdir / "HEAD").read_text().strip()
        except OSError:
            return ""
        if not head.startswith("ref:"):
            return head
        ref = head.split(":", 1)[1].strip()
        for base in (gitdir, common):
            if (base / ref).is_file():
                return (base / ref).read_text().strip()
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split(" ", 1)[0]
        return ""
    return ""


class Backtest:
    """A configured run; ``run()`` does it."""

    def __init__(
        self,
        request: RunRequest,
        settings: BacktestSettings,
        live: LiveConfig,
        kafka: KafkaSettings | None = None,
        dsn: str | None = None,
    ) -> None:
        if request.to_us <= request.from_us:
            raise ValueError("--to must be after --from")
        if request.source == "tardis" and not request.tardis_files:
            raise ValueError("the tardis source needs at least one --tardis FILE")
        if request.source != "tardis" and kafka is None:
            raise ValueError(f"the {request.source} source needs Kafka settings")
        if request.store and dsn is None:
            raise ValueError("storing results needs PostgreSQL (or --no-store)")
        self.request = request
        self.settings = settings
        self.live = live
        self.kafka = kafka
        self.dsn = dsn
        self.run_id = request.run_id or f"bt-{uuid.uuid4().hex[:16]}"

    # -- configuration --------------------------------------------------------------------

    def _inputs(self) -> tuple[str, ...]:
        s, r = self.settings, self.request
        if r.source == "kafka":
            return (s.topic_book, s.topic_trades, s.topic_health)
        if r.source == "depth-raw":
            return (s.topic_depth_raw,)
        return tuple(str(p) for p in r.tardis_files)

    def run_config(self, loaded: LoadedStrategy) -> RunConfig:
        r, s, live = self.request, self.settings, self.live
        return RunConfig(
            source=r.source,
            exchange=s.exchange,
            symbols=r.symbols,
            from_us=r.from_us,
            to_us=r.to_us,
            warmup_us=int(r.warmup_s * 1e6),
            inputs=self._inputs(),
            strategy=str(r.strategy),
            strategy_runtime=live.runtime.model_dump(mode="json"),
            model=loaded.model,
            min_emit_interval_ms=live.min_emit_interval_ms,
            risk=live.risk.model_dump(mode="json"),
            slippage_buffer_bps=live.slippage_buffer_bps,
            fill_model=s.fill_model(),
            starting_balance_usdt=s.starting_balance_usdt,
            returns_interval_s=s.returns_interval_s,
        )

    # -- input ----------------------------------------------------------------------------

    def load(self, progress: Any = None) -> tuple[list[SymbolStreams], LoadStats]:
        r, s = self.request, self.settings
        keys = {f"{s.exchange}:{sym}" for sym in r.symbols}
        window = Range(r.from_us - int(r.warmup_s * 1e6), r.to_us)
        margin = int(s.seek_margin_s * 1e6)
        if r.source == "tardis":
            return load_tardis(r.tardis_files, keys, window)
        assert self.kafka is not None
        tasks: dict[str, Any] = {}

        def report(topic: str, read: int, expected: int) -> None:
            if progress is None:
                return
            if topic not in tasks:
                tasks[topic] = progress.add_task(f"reading {topic}", total=expected)
            progress.update(tasks[topic], completed=read, total=max(expected, read))

        if r.source == "kafka":
            return load_kafka(
                self.kafka,
                {"book": s.topic_book, "trades": s.topic_trades, "health": s.topic_health},
                keys,
                window,
                margin,
                poll_timeout_s=s.poll_timeout_s,
                progress=report,
            )
        stats = LoadStats()
        values = (
            v
            for _k, v in read_topic_range(
                self.kafka,
                s.topic_depth_raw,
                (window.start_us - margin) // 1000,
                (window.end_us + margin) // 1000,
                poll_timeout_s=s.poll_timeout_s,
                progress=lambda a, b: report(s.topic_depth_raw, a, b),
            )
            if v is not None
        )
        return streams_from_depth_raw(values, keys, window, stats), stats

    # -- the run --------------------------------------------------------------------------

    def run(self) -> RunOutcome:
        r, s = self.request, self.settings
        started_wall = time.time()
        t0 = time.perf_counter()
        loaded = build_strategy(
            r.strategy, self.live.runtime, self.dsn, s.strategy_db_schema, s.features_db_schema
        )
        config = self.run_config(loaded)
        progress = _progress() if r.progress else None
        try:
            if progress is not None:
                progress.start()
            streams, stats = self.load(progress)
            t_loaded = time.perf_counter()
            total = sum(len(x.books) + len(x.trades) + len(x.health) for x in streams)
            if total == 0:
                raise InputError(
                    f"no events for {', '.join(r.symbols)} in the range (inputs: "
                    f"{', '.join(config.inputs)})"
                )
            engine = BacktestEngine(
                EngineConfig(
                    fill=FillModelConfig(**config.fill_model),
                    risk=self.live.risk,
                    slippage_buffer_bps=config.slippage_buffer_bps,
                    min_emit_interval_us=int(config.min_emit_interval_ms * 1000),
                    starting_balance=config.starting_balance_usdt,
                    returns_interval_us=int(config.returns_interval_s * 1e6),
                    trade_from_us=r.from_us,
                ),
                loaded.strategy,
                loaded.scaler,
                features_mode=r.features_mode,
            )
            engine.prepare(streams)
            t_prepared = time.perf_counter()
            task = progress.add_task("replaying", total=total) if progress is not None else None
            for chunk in _chunks(merge_symbols(streams), s.chunk_events):
                engine.run_chunk(chunk)
                if progress is not None:
                    progress.advance(task, len(chunk))
            result = engine.finish()
        finally:
            if progress is not None:
                progress.stop()
        t_replayed = time.perf_counter()
        metrics = build_metrics(config, result, stats)
        replay_s = t_replayed - t_loaded
        run = {
            "run_id": self.run_id,
            "started_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_wall)),
            "wall_s": round(time.perf_counter() - t0, 3),
            "load_s": round(t_loaded - t0, 3),
            "replay_s": round(replay_s, 3),
            "features_mode": r.features_mode,
            "features_prepare_s": round(t_prepared - t_loaded, 3),
            "features_streamed_symbols": engine.streamed_symbols,
            "events": result.counters.get("events", 0),
            "events_per_s": round(result.counters.get("events", 0) / max(replay_s, 1e-9), 1),
            "book_events_per_s": round(result.counters.get("books", 0) / max(replay_s, 1e-9), 1),
            "host": socket.gethostname(),
            "python": platform.python_version(),
            "code_version": code_version(),
            "git_commit": git_commit(),
            "config_hash": config.config_hash,
            "output_dir": str(r.output_dir) if r.output_dir else None,
        }
        outcome = RunOutcome(self.run_id, config, metrics, result, run)
        if r.output_dir is not None:
            title = f"{config.strategy} {', '.join(config.symbols)} ({self.run_id})"
            outcome.files = write_outputs(r.output_dir, metrics, result, run, title)
        if r.store:
            assert self.dsn is not None
            from depthflow.backtest.store import migrate_schema, store_run

            migrate_schema(self.dsn, s.db_schema)
            store_run(self.dsn, s.db_schema, self.run_id, metrics, result, run)
        return outcome


def _chunks(events: Iterator[Event], size: int) -> Iterator[list[Event]]:
    while True:
        chunk = list(itertools.islice(events, size))
        if not chunk:
            return
        yield chunk


def _progress() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} ev/s" if speed else "- ev/s")

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        transient=False,
    )

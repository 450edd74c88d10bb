"""Per-symbol book synchronisation state machines, exactly as each exchange prescribes.

Both machines own a ``LocalBook`` and call ``on_applied(update, prev_id)`` right after each
update is applied to a book that is valid (not crossed), so the caller can publish the book
state *after that update*. They never publish themselves and do no I/O: the caller reads the
returned ``Outcome`` and fetches a snapshot (Binance) or resubscribes (Bybit) when the machine
is ``WAITING``.

States::

    WAITING ──snapshot──► SYNCED ──gap / crossed / stale──► WAITING
       ▲  (Binance: diffs buffered)       │ (book cleared, health event published by caller)
       └──────────────────────────────────┘

Binance USD-M ("How to manage a local order book correctly"): buffer diffs, fetch the REST
snapshot, drop every event with ``u < lastUpdateId``, the first applied event must have
``U <= lastUpdateId <= u``, then each event's ``pu`` must equal the previous event's ``u``.

Bybit v5: a ``snapshot`` replaces the book (including the ``u=1`` snapshot after a service
restart), each ``delta`` must carry ``u == previous u + 1``.

Both tolerate what a lossless-but-imperfect transport does: an event already applied
(``u <= last u``, e.g. a duplicate, or the overlap during a make-before-break roll) is ignored;
an event that arrives early is held in a small reorder window and applied when its
predecessor arrives. Only when the window overflows is it a gap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from enum import StrEnum

from depthflow.collector.book import LocalBook
from depthflow.collector.events import DepthUpdate

OnApplied = Callable[[DepthUpdate, int], None]


class SyncState(StrEnum):
    WAITING = "waiting"  # no valid book: waiting for a snapshot
    SYNCED = "synced"


class Outcome(StrEnum):
    APPLIED = "applied"  # applied (and on_applied called for it and any held successors)
    BUFFERED = "buffered"  # kept until the snapshot arrives (Binance)
    DUPLICATE = "duplicate"  # already reflected in the book: ignored
    HELD = "held"  # arrived early, held in the reorder window
    IGNORED = "ignored"  # not usable in this state (e.g. a Bybit delta before its snapshot)
    GAP = "gap"  # sequence broken: book cleared, resync needed
    CROSSED = "crossed"  # book crossed after an update: cleared, resync needed
    STALE_SNAPSHOT = "stale_snapshot"  # Binance snapshot older than the buffered stream


RESYNC_OUTCOMES = frozenset({Outcome.GAP, Outcome.CROSSED, Outcome.STALE_SNAPSHOT})


class BookSync(ABC):
    """What both machines share; ``on_update`` is each exchange's own."""

    exchange = ""

    def __init__(self, symbol: str, on_applied: OnApplied, reorder_window: int = 32) -> None:
        self.symbol = symbol
        self.book = LocalBook()
        self.state = SyncState.WAITING
        self.last_id = 0
        self.on_applied = on_applied
        self.reorder_window = reorder_window
        self.pending: dict[int, DepthUpdate] = {}  # prev_id → update that follows it
        self.last_problem = ""
        self.resyncs = 0

    @property
    def synced(self) -> bool:
        return self.state is SyncState.SYNCED

    @abstractmethod
    def on_update(self, update: DepthUpdate) -> Outcome:
        """Handle one diff or snapshot of this symbol; the outcome says what became of it."""

    def _apply(self, update: DepthUpdate) -> bool:
        """Apply one update; False (book cleared) when it left the book crossed."""
        prev = self.last_id
        book = self.book
        book.apply(update.bids, update.asks)
        self.last_id = update.last_id
        if book.crossed():
            self._invalidate(f"crossed book after update {update.last_id}")
            return False
        self.on_applied(update, prev)
        return True

    def _apply_in_order(self, update: DepthUpdate) -> Outcome:
        """Apply the update that follows the last one, then any held successors."""
        if not self._apply(update) or (self.pending and not self._drain_pending()):
            return Outcome.CROSSED
        return Outcome.APPLIED

    def _drain_pending(self) -> bool:
        pending = self.pending
        while pending:
            nxt = pending.pop(self.last_id, None)
            if nxt is None:
                break
            if not self._apply(nxt):
                return False
        return True

    def _hold(self, update: DepthUpdate) -> bool:
        """Hold an early update; False when the reorder window overflows."""
        self.pending[update.prev_id] = update
        if len(self.pending) > self.reorder_window:
            last = self.last_id
            self.pending = {k: v for k, v in self.pending.items() if v.last_id > last}
        return len(self.pending) <= self.reorder_window

    def _invalidate(self, problem: str) -> None:
        self.state = SyncState.WAITING
        self.book.clear()
        self.pending.clear()
        self.last_problem = problem
        self.resyncs += 1

    def invalidate(self, problem: str) -> None:
        """Force a resync (stale stream, reconnect without replay, operator request)."""
        self._invalidate(problem)


class BinanceBookSync(BookSync):
    """Binance USD-M futures diff-depth synchronisation for one symbol."""

    exchange = "binance"

    def __init__(
        self,
        symbol: str,
        on_applied: OnApplied,
        reorder_window: int = 32,
        max_buffer: int = 20_000,
    ) -> None:
        super().__init__(symbol, on_applied, reorder_window)
        self.buffer: deque[DepthUpdate] = deque(maxlen=max_buffer)
        self.snapshot_id = -1
        self._awaiting_first = False

    def _invalidate(self, problem: str) -> None:
        # Keep what is held: those events are newer than the break and the next snapshot
        # may need them.
        held = sorted(self.pending.values(), key=lambda u: u.last_id)
        super()._invalidate(problem)
        self.buffer.clear()
        self.buffer.extend(held)
        self._awaiting_first = False

    def on_update(self, update: DepthUpdate) -> Outcome:
        if update.kind == "snapshot":
            return self.on_snapshot(update)
        if self.state is SyncState.WAITING:
            self.buffer.append(update)
            return Outcome.BUFFERED
        return self._on_diff(update)

    def _on_diff(self, d: DepthUpdate) -> Outcome:
        last = self.last_id
        if self._awaiting_first:
            if d.last_id < self.snapshot_id:
                return Outcome.DUPLICATE  # older than the snapshot: already in it
            # U <= lastUpdateId <= u, as documented; an event whose pu is exactly
            # lastUpdateId continues the snapshot just as well.
            if d.first_id <= self.snapshot_id or d.prev_id == self.snapshot_id:
                self._awaiting_first = False
                if not self._apply(d) or not self._drain_pending():
                    return Outcome.CROSSED
                return Outcome.APPLIED
            if self._hold(d):
                return Outcome.HELD
            self._invalidate(
                f"snapshot {self.snapshot_id} older than the stream (first U {d.first_id})"
            )
            self.buffer.append(d)
            return Outcome.STALE_SNAPSHOT
        if d.last_id <= last:
            return Outcome.DUPLICATE
        if d.prev_id == last:  # the steady state: _apply_in_order, inlined
            if not self._apply(d) or (self.pending and not self._drain_pending()):
                return Outcome.CROSSED
            return Outcome.APPLIED
        if d.prev_id > last and self._hold(d):
            return Outcome.HELD
        self._invalidate(f"gap: expected pu {last}, got pu {d.prev_id} (u {d.last_id})")
        self.buffer.append(d)
        return Outcome.GAP

    def on_snapshot(self, snap: DepthUpdate) -> Outcome:
        """Load a REST snapshot and replay the buffered diffs onto it."""
        if self.state is SyncState.SYNCED:
            return Outcome.DUPLICATE
        self.book.load(snap.bids, snap.asks)
        if self.book.crossed():
            self._invalidate(f"crossed snapshot {snap.last_id}")
            return Outcome.CROSSED
        self.snapshot_id = snap.last_id
        self.last_id = snap.last_id
        self.state = SyncState.SYNCED
        self._awaiting_first = True
        self.pending.clear()
        buffered = sorted(self.buffer, key=lambda u: u.last_id)
        self.buffer.clear()
        result = Outcome.APPLIED
        for i, diff in enumerate(buffered):
            outcome = self._on_diff(diff)
            if outcome in RESYNC_OUTCOMES:
                self.buffer.extend(buffered[i + 1 :])
                return outcome
        return result


class BybitBookSync(BookSync):
    """Bybit v5 linear orderbook snapshot/delta synchronisation for one symbol."""

    exchange = "bybit"

    def on_update(self, update: DepthUpdate) -> Outcome:
        if update.kind == "snapshot":
            return self.on_snapshot(update)
        if self.state is SyncState.WAITING:
            return Outcome.IGNORED
        last = self.last_id
        if update.last_id <= last:
            return Outcome.DUPLICATE
        if update.last_id == last + 1:
            return self._apply_in_order(update)
        if self._hold(update):
            return Outcome.HELD
        self._invalidate(f"gap: expected u {last + 1}, got u {update.last_id}")
        return Outcome.GAP

    def on_snapshot(self, snap: DepthUpdate) -> Outcome:
        """A snapshot replaces the book; ``u=1`` (service restart) always does."""
        if self.state is SyncState.SYNCED and snap.last_id != 1 and snap.last_id <= self.last_id:
            return Outcome.DUPLICATE
        prev = self.last_id if self.state is SyncState.SYNCED else 0
        self.book.load(snap.bids, snap.asks)
        if self.book.crossed():
            self._invalidate(f"crossed snapshot {snap.last_id}")
            return Outcome.CROSSED
        self.state = SyncState.SYNCED
        self.last_id = snap.last_id
        self.pending = {k: v for k, v in self.pending.items() if v.last_id > snap.last_id}
        self.on_applied(snap, prev)
        if not self._drain_pending():
            return Outcome.CROSSED
        return Outcome.APPLIED

"""Bounded book history for the truth endpoint: periodic checkpoints plus every update's
changes, so the exact book after any recent update id can be rebuilt. Pure."""

from __future__ import annotations

import bisect
from array import array
from collections import deque
from itertools import islice

from depthflow.sim.book import ASK, BID


class HistoryUnavailable(LookupError):
    """The requested update id is older than the retained history or not yet reached."""


class BookHistory:
    """Checkpoints every ``checkpoint_every`` updates; keeps at least ``retain`` updates."""

    def __init__(
        self,
        bids: dict[int, int],
        asks: dict[int, int],
        first_id: int = 0,
        retain: int = 250_000,
        checkpoint_every: int = 10_000,
    ) -> None:
        self.checkpoint_every = checkpoint_every
        self.max_checkpoints = max(2, retain // checkpoint_every + 2)
        self._cp_ids: list[int] = [first_id]
        self._cps: list[tuple[dict[int, int], dict[int, int]]] = [(dict(bids), dict(asks))]
        self._base = first_id + 1  # update id of _events[0]
        self._events: deque[array[int]] = deque()
        self.last_id = first_id

    @property
    def oldest_id(self) -> int:
        return self._cp_ids[0]

    def record(
        self, update_id: int, changes: list[int], bids: dict[int, int], asks: dict[int, int]
    ) -> None:
        """Store update ``update_id`` (must be ``last_id + 1``); the book after it is given
        so a checkpoint can be taken."""
        if update_id != self.last_id + 1:
            raise ValueError(f"update {update_id} recorded after {self.last_id}")
        self._events.append(array("q", changes))
        self.last_id = update_id
        if update_id % self.checkpoint_every == 0:
            self._cp_ids.append(update_id)
            self._cps.append((dict(bids), dict(asks)))
            if len(self._cps) > self.max_checkpoints:
                self._cp_ids.pop(0)
                self._cps.pop(0)
                drop = self._cp_ids[0] + 1 - self._base
                for _ in range(drop):
                    self._events.popleft()
                self._base += drop

    def book_at(self, update_id: int) -> tuple[dict[int, int], dict[int, int]]:
        """Bids and asks (price -> qty) exactly as they were after ``update_id``."""
        if update_id < self.oldest_id or update_id > self.last_id:
            raise HistoryUnavailable(
                f"update id {update_id} is outside [{self.oldest_id}, {self.last_id}]"
            )
        i = bisect.bisect_right(self._cp_ids, update_id) - 1
        cp_id = self._cp_ids[i]
        bids, asks = (dict(d) for d in self._cps[i])
        sides = (bids, asks)
        start = cp_id + 1 - self._base
        for changes in islice(self._events, start, update_id + 1 - self._base):
            for j in range(0, len(changes), 2):
                key, qty = changes[j], changes[j + 1]
                levels = sides[key & 1]
                if qty:
                    levels[key >> 1] = qty
                else:
                    levels.pop(key >> 1, None)
        return bids, asks


def top_levels(
    bids: dict[int, int], asks: dict[int, int], depth: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Best-first ``depth`` levels of each side."""
    b = sorted(bids.items(), key=lambda kv: -kv[0])[:depth]
    a = sorted(asks.items())[:depth]
    return b, a


__all__ = ["ASK", "BID", "BookHistory", "HistoryUnavailable", "top_levels"]

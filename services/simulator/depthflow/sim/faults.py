"""Fault injection: what the simulator does wrong on purpose, and the per-connection
decisions that make a collector see it (dropped messages are real ``pu`` gaps)."""

from __future__ import annotations

import random
from collections import deque
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FaultConfig(BaseModel):
    """The active faults; replaced as a whole (frozen) when ``POST /sim/faults`` changes
    any field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    drop_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    duplicate_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    reorder_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    disconnect_every_s: float = Field(default=0.0, ge=0.0)
    stall_every_s: float = Field(default=0.0, ge=0.0)
    stall_duration_s: float = Field(default=0.0, ge=0.0)
    slow_response_ms: float = Field(default=0.0, ge=0.0, le=60_000)
    user_stream_delay_ms: float = Field(default=0.0, ge=0.0, le=60_000)
    force_status: Literal[429, 418, 503] | None = None
    unknown_503_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    reject_rate: float = Field(default=0.0, ge=0.0, le=1.0)

    @property
    def any_stream_fault(self) -> bool:
        return bool(self.drop_rate or self.duplicate_rate or self.reorder_rate)


class StreamFaults:
    """Per-connection fault state: decides, message by message, what reaches the wire."""

    def __init__(self, seed: int, opened_at: float) -> None:
        self.rng = random.Random(seed)
        self.opened_at = opened_at
        self.next_stall_at: float | None = None
        self.stalled_until = 0.0
        self._held: bytes | None = None

    def admit(self, faults: FaultConfig, msg: bytes, out: deque[bytes], now: float) -> None:
        """Append what should be sent for ``msg`` (nothing, once, twice, or later)."""
        if now < self.stalled_until:
            return
        if not faults.any_stream_fault:
            if self._held is not None:
                out.append(self._held)
                self._held = None
            out.append(msg)
            return
        rnd = self.rng.random
        if faults.drop_rate and rnd() < faults.drop_rate:
            return
        if self._held is not None:
            out.append(msg)
            out.append(self._held)
            self._held = None
            return
        if faults.reorder_rate and rnd() < faults.reorder_rate:
            self._held = msg
            return
        out.append(msg)
        if faults.duplicate_rate and rnd() < faults.duplicate_rate:
            out.append(msg)

    def due_disconnect(self, faults: FaultConfig, now: float) -> bool:
        return bool(faults.disconnect_every_s) and now - self.opened_at >= faults.disconnect_every_s

    def update_stall(self, faults: FaultConfig, now: float) -> None:
        if not faults.stall_every_s or not faults.stall_duration_s:
            self.next_stall_at = None
            return
        if self.next_stall_at is None:
            self.next_stall_at = now + faults.stall_every_s
        elif now >= self.next_stall_at:
            self.stalled_until = now + faults.stall_duration_s
            self.next_stall_at = now + faults.stall_every_s

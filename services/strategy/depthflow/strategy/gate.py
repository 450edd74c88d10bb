"""The signal gate: publish a symbol's signal only when its side changes, and not within a
cooldown (exchange time) of the previous one — so a strategy does not flap."""

from __future__ import annotations

from dataclasses import dataclass, field

from depthflow.strategy.vectors import SignalSide


@dataclass
class SignalGate:
    """Per-symbol last published side and time. Pure: time is the vector's exchange time."""

    cooldown_us: int
    last_side: dict[str, SignalSide] = field(default_factory=dict)
    last_ts_us: dict[str, int] = field(default_factory=dict)

    def current(self, key: str) -> SignalSide:
        return self.last_side.get(key, "hold")

    def offer(self, key: str, side: SignalSide, ts_us: int) -> bool:
        """True (and remembered) when ``side`` should be published for ``key`` at ``ts_us``."""
        if side == self.current(key):
            return False
        last = self.last_ts_us.get(key)
        if last is not None and ts_us - last < self.cooldown_us:
            return False
        self.last_side[key] = side
        self.last_ts_us[key] = ts_us
        return True

"""The seed's order-book imbalance rule, with hysteresis and a cooldown.

The seed's thresholds are on the bid share of the book, in [0, 1]: the features carry
``imbalance_k = (bid - ask) / (bid + ask)`` in [-1, 1], so ``share = (imbalance_k + 1) / 2``.

- flat → buy when ``share >= IMBALANCE_BUY_THRESHOLD`` (0.75) and the largest bid cluster
  holds at least ``MIN_CLUSTER_VOLUME`` (10,000, quote currency: cluster volume x price);
- flat → sell when ``share <= IMBALANCE_SELL_THRESHOLD`` (0.25) and the largest ask cluster
  holds at least ``MIN_CLUSTER_VOLUME``;
- a buy holds until the share falls below ``buy - hysteresis``, a sell until it rises above
  ``sell + hysteresis``; then the symbol is flat again (a ``hold`` signal);
- a change of side is published only ``cooldown_s`` (exchange time) after the previous one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from depthflow.features.names import INDEX
from depthflow.strategy.config import RuntimeConfig
from depthflow.strategy.gate import SignalGate
from depthflow.strategy.vectors import (
    MID_PRICE,
    Decision,
    Refusal,
    SignalSide,
    VectorInput,
    check_vector,
    snapshot,
)

BID_CLUSTER_PRICE = INDEX["largest_bid_cluster_price"]
BID_CLUSTER_VOLUME = INDEX["largest_bid_cluster_volume"]
ASK_CLUSTER_PRICE = INDEX["largest_ask_cluster_price"]
ASK_CLUSTER_VOLUME = INDEX["largest_ask_cluster_volume"]


@dataclass(frozen=True, slots=True)
class ImbalanceRule:
    buy_threshold: float = 0.75
    sell_threshold: float = 0.25
    min_cluster_volume: float = 10_000.0
    hysteresis: float = 0.05

    def next_side(
        self, current: SignalSide, share: float, bid_cluster: float, ask_cluster: float
    ) -> tuple[SignalSide, str]:
        """The side after this observation, and why."""
        if current == "buy" and share >= self.buy_threshold - self.hysteresis:
            return "buy", "bid share still above the buy exit level"
        if current == "sell" and share <= self.sell_threshold + self.hysteresis:
            return "sell", "bid share still below the sell exit level"
        if share >= self.buy_threshold:
            if bid_cluster >= self.min_cluster_volume:
                return "buy", (
                    f"bid share {share:.3f} >= {self.buy_threshold} and bid cluster "
                    f"{bid_cluster:.0f} >= {self.min_cluster_volume:.0f}"
                )
            return "hold", "bid share high but bid cluster below MIN_CLUSTER_VOLUME"
        if share <= self.sell_threshold:
            if ask_cluster >= self.min_cluster_volume:
                return "sell", (
                    f"bid share {share:.3f} <= {self.sell_threshold} and ask cluster "
                    f"{ask_cluster:.0f} >= {self.min_cluster_volume:.0f}"
                )
            return "hold", "bid share low but ask cluster below MIN_CLUSTER_VOLUME"
        return "hold", f"bid share {share:.3f} back inside the neutral band"


class ImbalanceStrategy:
    """``imbalance``: the seed's rule per symbol; state is each symbol's published side."""

    kind = "imbalance"
    model_version = "rule-v1"

    def __init__(self, config: RuntimeConfig) -> None:
        self.gate = SignalGate(int(config.cooldown_s * 1e6))
        self.configure(config)

    def configure(self, config: RuntimeConfig) -> None:
        self.rule = ImbalanceRule(
            config.imbalance_buy_threshold,
            config.imbalance_sell_threshold,
            config.min_cluster_volume,
            config.hysteresis,
        )
        self.feature = INDEX[config.imbalance_feature]
        self.gate.cooldown_us = int(config.cooldown_s * 1e6)
        self.required = (
            MID_PRICE,
            self.feature,
            BID_CLUSTER_PRICE,
            BID_CLUSTER_VOLUME,
            ASK_CLUSTER_PRICE,
            ASK_CLUSTER_VOLUME,
        )

    def check(self, v: VectorInput) -> Refusal | None:
        return check_vector(v, self.required)

    def decide(self, batch: Sequence[VectorInput]) -> list[Decision | None]:
        return [self._one(v) for v in batch]

    def _one(self, v: VectorInput) -> Decision | None:
        x = v.values
        share = (float(x[self.feature]) + 1.0) / 2.0
        bid_cluster = float(x[BID_CLUSTER_VOLUME] * x[BID_CLUSTER_PRICE])
        ask_cluster = float(x[ASK_CLUSTER_VOLUME] * x[ASK_CLUSTER_PRICE])
        current = self.gate.current(v.key)
        side, reason = self.rule.next_side(current, share, bid_cluster, ask_cluster)
        if not self.gate.offer(v.key, side, v.exchange_ts_us):
            return None
        r = self.rule
        if side == "buy":
            strength = (share - r.buy_threshold) / max(1e-12, 1.0 - r.buy_threshold)
            confidence = share
        elif side == "sell":
            strength = (r.sell_threshold - share) / max(1e-12, r.sell_threshold)
            confidence = 1.0 - share
        else:
            strength = 0.0
            confidence = 1.0 - abs(2.0 * share - 1.0)
        return Decision(
            side,
            min(1.0, max(0.0, strength)),
            min(1.0, max(0.0, confidence)),
            reason,
            snapshot(v, self.required),
        )

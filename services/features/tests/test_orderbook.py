"""Order-book features against hand-worked books (numbers worked out on paper)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depthflow.features import FeatureState
from depthflow.features.names import INDEX

M = 60_000_000
T0 = M * 28_333_334  # minute-aligned: the two books share one candle minute
B1 = ([(100.0, 1.0), (99.0, 3.0), (98.0, 2.0)], [(101.0, 2.0), (102.0, 1.0), (104.0, 5.0)])
B2 = ([(100.0, 2.0), (99.0, 3.0)], [(101.0, 2.0), (103.0, 1.0), (104.0, 5.0)])


def _get(v: np.ndarray, ok: np.ndarray) -> dict[str, tuple[float, bool]]:
    return {n: (float(v[i]), bool(ok[i])) for n, i in INDEX.items()}


@pytest.fixture
def two_books() -> tuple[dict, dict]:
    f = FeatureState()
    first = _get(*f.on_book(*B1, T0, T0 + 5, 1))
    f.on_trade(101.0, 0.5, True, T0 + 5_000_000)
    second = _get(*f.on_book(*B2, T0 + 10_000_000, T0 + 10_000_005, 2))
    return first, second


FIRST = {
    "bid_ask_spread_abs": 1.0,
    "bid_ask_spread_rel": 1.0 / 100.5 * 1e4,
    "mid_price": 100.5,
    "micro_price": 301.0 / 3.0,
    "vwap_bid_5": 593.0 / 6.0,
    "vwap_ask_5": 103.0,
    "vwap_bid_10": 593.0 / 6.0,
    "vwap_ask_10": 103.0,
    "depth_bid_5": 6.0,
    "depth_ask_5": 8.0,
    "depth_bid_10": 6.0,
    "depth_ask_10": 8.0,
    "total_bid_volume": 6.0,
    "total_ask_volume": 8.0,
    "book_depth_ratio": 0.75,
    "imbalance_5": -1.0 / 7.0,
    "imbalance_10": -1.0 / 7.0,
    "imbalance_total": -1.0 / 7.0,
    "price_pressure": (301.0 / 3.0 - 100.5) / 100.5 * 1e4,
    "volume_delta_5": -2.0,
    "smart_money_index": -1.0,  # mean level 14/6, only the 5.0 ask is >= 2x mean
    "largest_bid_cluster_price": 98.6,  # run 99x3, 98x2 (q >= mean 2)
    "largest_bid_cluster_volume": 5.0,
    "largest_ask_cluster_price": 104.0,  # mean 8/3: only 104x5
    "largest_ask_cluster_volume": 5.0,
    "num_bid_clusters": 1.0,
    "num_ask_clusters": 1.0,
    "support_level_1": 99.0,
    "resistance_level_1": 104.0,
    "distance_to_support": 1.5 / 100.5 * 1e4,
    "distance_to_resistance": 3.5 / 100.5 * 1e4,
    "liquidity_bid_5": 593.0,
    "liquidity_ask_5": 824.0,
    "liquidity_asymmetry": -231.0 / 1417.0,
    "depth_imbalance_ratio": math.log(0.75),
}
FIRST_INVALID = (
    "order_flow_imbalance",
    "bid_intensity",
    "ask_intensity",
    "buy_sell_ratio",
    "effective_spread",
    "kyle_lambda",
    "amihud_illiquidity",
    "roll_spread",
    "level_ttl_avg",
    "level_ttl_std",
    "orderbook_volatility",
    "update_frequency",
    "quote_intensity",
    "trade_arrival_rate",
    "spread_volatility",
)


def test_first_book_hand_worked(two_books: tuple[dict, dict]) -> None:
    first, _ = two_books
    for name, want in FIRST.items():
        got, ok = first[name]
        assert ok, name
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12), name
    for name in FIRST_INVALID:
        assert not first[name][1], name
    assert first["buy_sell_ratio"][0] == 0.5


def test_second_book_temporal_hand_worked(two_books: tuple[dict, dict]) -> None:
    _, s = two_books
    want = {
        # b1 unchanged: +qb 2 - qb' 1; a1 unchanged: -qa 2 + qa' 2
        "order_flow_imbalance": 1.0,
        # bids: 100 re-sized 1->2 (1), 98 removed (2); asks: 102 removed (1), 103 new (1)
        "bid_intensity": 3.0 / 10.0,
        "ask_intensity": 2.0 / 10.0,
        "quote_intensity": 4.0 / 10.0,
        "update_frequency": 1.0 / 10.0,  # the first book (ts = t - 10 s) left the window
        "trade_arrival_rate": 1.0 / 10.0,
        "buy_sell_ratio": 1.0,
        "effective_spread": 2.0 * 0.5 / 100.5 * 1e4,  # trade 101 vs mid 100.5 before it
        # ages: 100, 99, 101, 104 have lived 10 s, 103 is new -> mean 8, std 4
        "level_ttl_avg": 8.0,
        "level_ttl_std": 4.0,
        "largest_bid_cluster_price": 99.0,  # bids 100x2, 99x3, mean 2.5: only 99x3
        "num_bid_clusters": 1.0,
    }
    for name, w in want.items():
        got, ok = s[name]
        assert ok, name
        assert got == pytest.approx(w, rel=1e-12), name
    # mean level 13/5 -> large >= 5.2: no level qualifies, index 0 and valid
    assert s["smart_money_index"] == (0.0, True)
    for name in (
        "kyle_lambda",
        "amihud_illiquidity",
        "roll_spread",
        "orderbook_volatility",
        "spread_volatility",
    ):
        assert not s[name][1], name  # fewer than 10 observations


def test_one_sided_book() -> None:
    f = FeatureState()
    v = _get(*f.on_book([(100.0, 2.0), (99.0, 1.0)], [], T0, T0, 1))
    assert v["mid_price"] == (0.0, False)
    assert v["vwap_bid_5"] == (pytest.approx(299.0 / 3.0), True)
    assert v["vwap_ask_5"] == (0.0, False)
    assert v["book_depth_ratio"] == (1.0, False)
    assert v["imbalance_5"] == (1.0, True)
    assert v["support_level_1"] == (100.0, True)
    assert v["resistance_level_1"] == (0.0, False)
    assert v["smart_money_index"] == (0.0, False)
    assert v["depth_imbalance_ratio"] == (0.0, False)


def test_ofi_on_price_moves() -> None:
    f = FeatureState()
    f.on_book([(100.0, 1.0)], [(101.0, 4.0)], T0, T0, 1)
    # bid up: +qb(2); ask down: -qa(3)
    v = _get(*f.on_book([(100.5, 2.0)], [(100.8, 3.0)], T0 + 1, T0 + 1, 2))
    assert v["order_flow_imbalance"] == (-1.0, True)
    # bid down: -qb'(2); ask up: +qa'(3)
    v = _get(*f.on_book([(100.0, 7.0)], [(101.0, 9.0)], T0 + 2, T0 + 2, 3))
    assert v["order_flow_imbalance"] == (1.0, True)


def test_kyle_amihud_roll_volatility_against_definition() -> None:
    """EW features vs explicit weighted sums over the whole history (not the recursion)."""
    rng = np.random.default_rng(5)
    a = 2.0 / 101.0
    f = FeatureState()
    mids: list[float] = []
    svs: list[float] = []
    notes: list[float] = []
    prices: list[float] = []
    spreads: list[float] = []
    ts = T0
    mid = 100.0
    last = None
    for i in range(60):
        sv = nt = 0.0
        for _ in range(int(rng.integers(0, 3))):
            ts += 1000
            p = round(mid + float(rng.choice((-0.05, 0.05))), 2)
            q = float(rng.uniform(0.1, 2.0))
            buy = bool(rng.random() < 0.5)
            f.on_trade(p, q, buy, ts)
            sv += q if buy else -q
            nt += p * q
            prices.append(p)
        mid = round(mid + float(rng.choice((-0.1, 0.0, 0.1))), 2)
        half = float(rng.choice((0.05, 0.1)))
        ts += 100_000
        last = _get(*f.on_book([(mid - half, 1.0)], [(mid + half, 1.0)], ts, ts, i))
        mids.append(mid)
        svs.append(sv)
        notes.append(nt)
        spreads.append(2 * half / mid * 1e4)

    def ew(xs: list[float]) -> float:
        n = len(xs) - 1
        return (1 - a) ** n * xs[0] + sum(a * (1 - a) ** (n - k) * xs[k] for k in range(1, n + 1))

    def ew_std(xs: list[float]) -> float:
        ms = [ew(xs[: k + 1]) for k in range(len(xs))]
        n = len(xs) - 1
        return math.sqrt(
            sum(
                (1 - a) * a * (1 - a) ** (n - k) * (xs[k] - ms[k - 1]) ** 2 for k in range(1, n + 1)
            )
        )

    x = svs[1:]
    y = [mids[k] - mids[k - 1] for k in range(1, len(mids))]
    cov_xy = ew([p * q for p, q in zip(x, y, strict=True)]) - ew(x) * ew(y)
    lam = cov_xy / (ew([p * p for p in x]) - ew(x) ** 2)
    r = [math.log(mids[k] / mids[k - 1]) * 1e4 for k in range(1, len(mids))]
    amihud = 1e6 * ew([abs(z) for z in r]) / ew(notes[1:])
    dp = [prices[k] - prices[k - 1] for k in range(1, len(prices))]
    aa, bb = dp[1:], dp[:-1]
    cov = ew([p * q for p, q in zip(aa, bb, strict=False)]) - ew(aa) * ew(bb)
    roll = 2 * math.sqrt(-cov) if cov < 0 else 0.0
    assert last is not None
    assert last["kyle_lambda"][0] == pytest.approx(lam, rel=1e-9)
    assert last["amihud_illiquidity"][0] == pytest.approx(amihud, rel=1e-9)
    assert last["roll_spread"][0] == pytest.approx(roll, rel=1e-9, abs=1e-12)
    assert last["orderbook_volatility"][0] == pytest.approx(ew_std(r), rel=1e-9)
    assert last["spread_volatility"][0] == pytest.approx(ew_std(spreads), rel=1e-9)
    assert all(
        last[n][1]
        for n in (
            "kyle_lambda",
            "amihud_illiquidity",
            "roll_spread",
            "orderbook_volatility",
            "spread_volatility",
        )
    )

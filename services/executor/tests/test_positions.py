"""Position accounting: open, increase, reduce, close, flip; PnL and fees."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depthflow.executor.positions import FillKind, Position, PositionFill


def test_open_increase_reduce_flip_close() -> None:
    p = Position("BTCUSDT")
    u = p.apply(PositionFill("buy", 1.0, 100.0, fee=0.1))
    assert u.kind == FillKind.OPEN and u.position.qty == 1.0 and u.position.avg_entry_price == 100
    u = u.position.apply(PositionFill("buy", 1.0, 110.0, fee=0.1))
    assert u.kind == FillKind.INCREASE and u.position.avg_entry_price == pytest.approx(105.0)
    u = u.position.apply(PositionFill("sell", 0.5, 120.0, fee=0.05))
    assert u.kind == FillKind.REDUCE and u.realized_pnl == pytest.approx(7.5)
    assert u.position.qty == pytest.approx(1.5) and u.position.avg_entry_price == 105.0
    assert u.position.unrealized_pnl(100.0) == pytest.approx(-7.5)
    u = u.position.apply(PositionFill("sell", 2.0, 100.0, fee=0.2))
    assert u.kind == FillKind.FLIP
    assert u.realized_pnl == pytest.approx(-7.5) and u.closed_qty == 1.5 and u.opened_qty == 0.5
    assert u.position.qty == pytest.approx(-0.5) and u.position.avg_entry_price == 100.0
    assert u.position.unrealized_pnl(90.0) == pytest.approx(5.0)  # short gains as price falls
    u = u.position.apply(PositionFill("buy", 0.5, 90.0, fee=0.05))
    assert u.kind == FillKind.CLOSE and u.position.is_flat and u.position.side is None
    final = u.position
    assert final.realized_pnl == pytest.approx(7.5 - 7.5 + 5.0)
    assert final.fees_paid == pytest.approx(0.5)
    assert final.net_realized_pnl == pytest.approx(4.5)


def test_float_dust_closes() -> None:
    p = Position("X").apply(PositionFill("buy", 0.3, 10.0)).position
    p = p.apply(PositionFill("sell", 0.1, 10.0)).position
    u = p.apply(PositionFill("sell", 0.2, 10.0))
    assert u.kind == FillKind.CLOSE and u.position.qty == 0.0


def test_invalid_fill_refused() -> None:
    with pytest.raises(ValueError):
        PositionFill("buy", 0.0, 1.0)
    with pytest.raises(ValueError):
        PositionFill("hold", 1.0, 1.0)  # type: ignore[arg-type]


fills = st.lists(
    st.tuples(st.sampled_from(["buy", "sell"]), st.integers(1, 50), st.integers(50, 150)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(fills=fills)
def test_pnl_conservation(fills: list[tuple[str, int, int]]) -> None:
    """Realised + unrealised PnL equals the cash flow of the fills marked to the last price."""
    p = Position("X")
    cash = 0.0
    for side, qty, price in fills:
        p = p.apply(PositionFill(side, float(qty), float(price))).position  # type: ignore[arg-type]
        cash += -qty * price if side == "buy" else qty * price
    mark = float(fills[-1][2])
    assert p.realized_pnl + p.unrealized_pnl(mark) == pytest.approx(cash + p.qty * mark, abs=1e-6)
    assert p.qty == sum(q if s == "buy" else -q for s, q, _ in fills)

"""Deterministic client order ids."""

from __future__ import annotations

import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from depthflow.executor.ids import (
    BINANCE_CLIENT_ID_RE,
    client_order_id,
    is_own_client_order_id,
    is_valid_for_venues,
)


@settings(max_examples=200, deadline=None)
@given(signal_id=st.text(min_size=1, max_size=200), leg=st.integers(0, 99))
def test_valid_for_both_venues_and_deterministic(signal_id: str, leg: int) -> None:
    coid = client_order_id(signal_id, leg=leg)
    assert len(coid) <= 36
    assert BINANCE_CLIENT_ID_RE.match(coid)
    assert is_valid_for_venues(coid)
    assert is_own_client_order_id(coid)
    assert coid == client_order_id(signal_id, leg=leg)


def test_distinct_signals_and_legs_give_distinct_ids() -> None:
    ids = {client_order_id(f"sig-{i}", leg=leg) for i in range(500) for leg in (0, 1)}
    assert len(ids) == 1000


def test_stable_across_processes() -> None:
    """No per-process salt (e.g. hash randomisation): a restart maps to the same id."""
    code = (
        "from depthflow.executor.ids import client_order_id;print(client_order_id('3f2a-signal'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "random"},
    ).stdout.strip()
    assert out == client_order_id("3f2a-signal")
    assert out == "df-" + __import__("hashlib").sha256(b"3f2a-signal\x000").hexdigest()[:28]


def test_foreign_ids_are_not_ours() -> None:
    assert not is_own_client_order_id("web_abc123")
    assert not is_own_client_order_id("df-xyz")
    assert not is_own_client_order_id(client_order_id("s", prefix="ab"))

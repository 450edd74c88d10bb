"""Interval streams: each symbol's pushes at its own fixed offset within the interval
(``SIM_PUSH_PHASE=per_symbol``), or every symbol on the clock's round multiples (``aligned``)."""

from __future__ import annotations

from depthflow.sim.config import push_phase_ms
from depthflow.sim.publishers import _next_boundary


def test_next_boundary_is_the_first_push_after_now_at_the_phase():
    for phase in (0, 37, 99, 100, 12_345_678):
        for now in range(10_000, 10_400, 7):
            due = _next_boundary(now, 100, phase)
            assert now < due <= now + 100
            assert (due - phase) % 100 == 0


def test_aligned_is_round_multiples_and_per_symbol_spreads_the_symbols():
    assert push_phase_ms("BTCUSDT", "aligned") == 0
    assert _next_boundary(10_050, 100, push_phase_ms("BTCUSDT", "aligned")) == 10_100
    symbols = [f"L{i:03d}USDT" for i in range(200)]
    offsets = {push_phase_ms(s, "per_symbol") % 100 for s in symbols}
    assert len(offsets) > 50  # 200 symbols spread over the 100 ms, not one burst
    assert push_phase_ms("BTCUSDT", "per_symbol") == push_phase_ms("BTCUSDT", "per_symbol")

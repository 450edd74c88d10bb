"""A run's report: metrics (dict → metrics.json), trades.csv, signals.csv, equity.csv,
equity.png (equity and drawdown with trade markers) and a self-contained report.html.

Determinism: ``trades.csv``, ``signals.csv``, ``equity.csv`` and ``metrics.json`` depend only
on the input and the run configuration — no wall clock, host or run id (those go to run.json);
keys are sorted; floats in the CSVs are ``repr`` (shortest round-trip), in metrics.json
rounded to 12 significant digits.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from depthflow.backtest.config import RunConfig
from depthflow.backtest.engine import EngineResult
from depthflow.backtest.metrics import (
    clean,
    drawdown_series,
    hit_rate,
    max_drawdown,
    periods_per_year,
    sharpe,
    simple_returns,
    sortino,
)
from depthflow.backtest.sources import LoadStats

TRADE_COLUMNS = (
    "ts_us",
    "time_utc",
    "exchange",
    "symbol",
    "client_order_id",
    "signal_id",
    "side",
    "qty",
    "price",
    "notional",
    "fee",
    "liquidity",
    "realized_pnl",
    "position_qty",
    "avg_entry_price",
)
SIGNAL_COLUMNS = (
    "ts_us",
    "exchange",
    "symbol",
    "book_seq",
    "side",
    "strength",
    "confidence",
    "signal_id",
    "outcome",
    "client_order_id",
    "reason",
)


def iso(ts_us: int | None) -> str | None:
    if ts_us is None:
        return None
    return datetime.fromtimestamp(ts_us / 1e6, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _num(x: float) -> str:
    return repr(float(x))


def _cleaned(obj: Any) -> Any:
    if isinstance(obj, float):
        return clean(obj)
    if isinstance(obj, dict):
        return {str(k): _cleaned(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_cleaned(v) for v in obj]
    return obj


def inside_gap(result: EngineResult, key: str, ts: int) -> bool:
    """Whether ``ts`` falls where ``key``'s book was invalid (after the gap event, before
    the next valid book)."""
    for g in result.gaps:
        if g.key == key and g.start_ts < ts and (g.end_ts is None or ts < g.end_ts):
            return True
    return False


def build_metrics(config: RunConfig, result: EngineResult, load: LoadStats) -> dict[str, Any]:
    """Every figure of the run as plain JSON values (deterministic)."""
    start = config.starting_balance_usdt
    grid_equity = [g[1] for g in result.grid]
    returns = simple_returns(grid_equity)
    per_year = periods_per_year(config.returns_interval_s)
    curve_equity = [c[1] for c in result.curve] or [start]
    dd = max_drawdown(curve_equity)
    closing = [p for s in result.symbols for p in s.closing]
    turnover = math.fsum(t.qty * t.price for t in result.trades)
    fees = math.fsum(t.fee for t in result.trades)
    gross = [g[2] for g in result.grid]
    sides = Counter(s.side for s in result.signals)
    outcomes = Counter(s.outcome for s in result.signals)
    order_states = Counter(o.state for o in result.orders)
    per_symbol: dict[str, Any] = {}
    for s in result.symbols:
        p = s.position
        unreal = p.unrealized_pnl(s.mid) if (p.qty and s.mid is not None) else 0.0
        sigs = [x for x in result.signals if f"{x.exchange}:{x.symbol}" == s.key]
        per_symbol[s.key] = {
            "pnl_usdt": p.realized_pnl - p.fees_paid + unreal,
            "realized_pnl_usdt": p.realized_pnl,
            "unrealized_pnl_usdt": unreal,
            "fees_usdt": p.fees_paid,
            "fills": s.fills,
            "orders": sum(1 for o in result.orders if o.symbol == s.symbol),
            "turnover_usdt": s.turnover,
            "hit_rate": hit_rate(s.closing),
            "closing_fills": len(s.closing),
            "final_position_qty": p.qty,
            "last_mid": s.mid,
            "books": s.books,
            "trades": s.trades,
            "vectors": s.vectors,
            "signals": len(sigs),
            "signals_buy": sum(1 for x in sigs if x.side == "buy"),
            "signals_sell": sum(1 for x in sigs if x.side == "sell"),
            "signals_hold": sum(1 for x in sigs if x.side == "hold"),
            "gaps": sum(1 for g in result.gaps if g.key == s.key),
        }
    gaps: list[dict[str, Any]] = [
        {
            "symbol": g.key,
            "start_ts_us": g.start_ts,
            "end_ts_us": g.end_ts,
            "duration_us": (g.end_ts - g.start_ts) if g.end_ts is not None else None,
            "kinds": g.kinds,
            "cancelled_orders": g.cancelled_orders,
        }
        for g in result.gaps
    ]
    invalid_us = sum(g["duration_us"] or 0 for g in gaps)
    through = sum(1 for t in result.trades if inside_gap(result, f"{t.exchange}:{t.symbol}", t.ts))
    first, last = result.first_ts, result.last_ts
    span_us = (last - first) if first is not None and last is not None else 0
    metrics: dict[str, Any] = {
        "config": config.model_dump(mode="json"),
        "config_hash": config.config_hash,
        "input": {
            "first_ts_us": result.first_ts,
            "last_ts_us": result.last_ts,
            "first_time_utc": iso(result.first_ts),
            "last_time_utc": iso(result.last_ts),
            "records_read": load.records,
            "events": result.counters.get("events", 0),
            "other_symbols_skipped": load.other_symbols,
            "out_of_range_skipped": load.out_of_range,
            "undecodable_skipped": load.undecodable,
            "per_input": dict(sorted(load.per_topic.items())),
            "health_events": result.health,
        },
        "summary": {
            "starting_balance_usdt": start,
            "final_equity_usdt": result.final_equity,
            "pnl_usdt": result.final_equity - start,
            "return": result.final_equity / start - 1.0,
            "sharpe": sharpe(returns, per_year),
            "sortino": sortino(returns, per_year),
            "returns_periods": len(returns),
            "returns_interval_s": config.returns_interval_s,
            "max_drawdown": dd.max_fraction,
            "max_drawdown_usdt": dd.max_usdt,
            "hit_rate": hit_rate(closing),
            "closing_fills": len(closing),
            "fills": len(result.trades),
            "orders": len(result.orders),
            "turnover_usdt": turnover,
            "turnover_ratio": turnover / start,
            "fees_usdt": fees,
            "avg_gross_exposure_usdt": math.fsum(gross) / len(gross) if gross else 0.0,
            "max_gross_exposure_usdt": max(gross) if gross else 0.0,
            "time_in_market": (sum(1 for x in gross if x > 0) / len(gross)) if gross else 0.0,
            "span_s": span_us / 1e6,
        },
        "signals": {
            "total": len(result.signals),
            "by_side": dict(sorted(sides.items())),
            "by_outcome": dict(sorted(outcomes.items())),
            "warmup_signals": result.counters.get("warmup_signals", 0),
        },
        "orders": {
            "by_final_state": dict(sorted(order_states.items())),
            "open_at_end": result.counters.get("orders_open_at_end", 0),
            "risk_rejects": result.risk_rejects,
        },
        "features": {
            "books": result.counters.get("books", 0),
            "trades": result.counters.get("trades", 0),
            "vectors": result.counters.get("vectors", 0),
            "books_skipped_seq": result.counters.get("books_skipped", 0),
            "books_rejected": result.counters.get("books_rejected", 0),
            "trades_rejected": result.counters.get("trades_rejected", 0),
            "strategy_refusals": result.refusals,
        },
        "gaps": {
            "policy": config.gap_policy,
            "count": len(gaps),
            "invalid_us": invalid_us,
            "cancelled_orders": sum(g["cancelled_orders"] for g in gaps),
            "fills_while_invalid": through,
            "intervals": gaps,
        },
        "per_symbol": per_symbol,
    }
    cleaned: dict[str, Any] = _cleaned(metrics)
    return cleaned


def metrics_json(metrics: dict[str, Any]) -> bytes:
    return orjson.dumps(metrics, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def trades_csv(result: EngineResult) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TRADE_COLUMNS)
    for t in result.trades:
        w.writerow(
            [
                t.ts,
                iso(t.ts),
                t.exchange,
                t.symbol,
                t.client_order_id,
                t.signal_id,
                t.side,
                _num(t.qty),
                _num(t.price),
                _num(t.qty * t.price),
                _num(t.fee),
                t.liquidity,
                _num(t.realized_pnl),
                _num(t.position_qty),
                _num(t.avg_entry_price),
            ]
        )
    return buf.getvalue().encode()


def signals_csv(result: EngineResult) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SIGNAL_COLUMNS)
    for s in result.signals:
        w.writerow(
            [
                s.ts,
                s.exchange,
                s.symbol,
                s.book_seq,
                s.side,
                _num(s.strength),
                _num(s.confidence),
                s.signal_id,
                s.outcome,
                s.client_order_id,
                s.reason,
            ]
        )
    return buf.getvalue().encode()


def equity_csv(result: EngineResult) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("ts_us", "equity_usdt", "drawdown", "fill_side"))
    dd = drawdown_series([c[1] for c in result.curve])
    for (ts, eq, side), d in zip(result.curve, dd, strict=True):
        w.writerow([ts, _num(eq), _num(d), side])
    return buf.getvalue().encode()


def equity_png(result: EngineResult, title: str) -> bytes:
    """Equity and drawdown curves with buy/sell fill markers (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    times = [datetime.fromtimestamp(c[0] / 1e6, tz=UTC) for c in result.curve]
    equity = [c[1] for c in result.curve]
    dd = [-100.0 * d for d in drawdown_series(equity)]
    fig = Figure(figsize=(11, 6.5), dpi=100)
    ax, ax_dd = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    ax.plot(times, equity, color="#1f4e79", linewidth=1.2, label="equity")
    for side, marker, color in (("buy", "^", "#2e7d32"), ("sell", "v", "#c62828")):
        pts = [(t, e) for t, e, c in zip(times, equity, result.curve, strict=True) if c[2] == side]
        if pts:
            ax.scatter(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker=marker,
                color=color,
                s=28,
                zorder=3,
                label=f"{side} fills ({len(pts)})",
            )
    ax.set_ylabel("equity (USDT)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax_dd.fill_between(times, dd, 0.0, color="#c62828", alpha=0.35, step="post")
    ax_dd.set_ylabel("drawdown (%)")
    ax_dd.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows
    )
    return f"<table>{cells}</table>"


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.6g}"
    if isinstance(v, (dict, list)):
        return orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()
    return str(v)


def report_html(metrics: dict[str, Any], png: bytes, run: dict[str, Any]) -> str:
    """One self-contained page: summary, per-symbol table, gaps, the fill-model and every
    other assumption, and the chart embedded as base64."""
    cfg = metrics["config"]
    summary = metrics["summary"]
    per_symbol = metrics["per_symbol"]
    cols = [
        "pnl_usdt",
        "fees_usdt",
        "fills",
        "turnover_usdt",
        "hit_rate",
        "final_position_qty",
        "signals",
        "gaps",
    ]
    head = "".join(f"<th>{c}</th>" for c in ["symbol", *cols])
    body = "".join(
        "<tr><td>"
        + html.escape(sym)
        + "</td>"
        + "".join(f"<td>{html.escape(_fmt(vals[c]))}</td>" for c in cols)
        + "</tr>"
        for sym, vals in per_symbol.items()
    )
    gaps = metrics["gaps"]["intervals"]
    gap_rows = "".join(
        f"<tr><td>{html.escape(g['symbol'])}</td><td>{html.escape(str(iso(g['start_ts_us'])))}</td>"
        f"<td>{html.escape(str(iso(g['end_ts_us'])))}</td><td>{html.escape(', '.join(g['kinds']))}"
        f"</td><td>{g['cancelled_orders']}</td></tr>"
        for g in gaps[:200]
    )
    img = base64.b64encode(png).decode()
    title = f"depthflow backtest {run.get('run_id', '')}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>strategy <b>{html.escape(cfg["strategy"])}</b> on {html.escape(", ".join(cfg["symbols"]))}
({html.escape(cfg["exchange"])}), {html.escape(str(iso(cfg["from_us"])))} →
{html.escape(str(iso(cfg["to_us"])))}, source {html.escape(cfg["source"])};
config {html.escape(metrics["config_hash"][:16])},
code {html.escape(str(run.get("code_version")))}</p>
<img alt="equity and drawdown" src="data:image/png;base64,{img}">
<h2>Summary</h2>
{_table(list(summary.items()))}
<h2>Per symbol</h2>
<table><tr>{head}</tr>{body}</table>
<h2>Signals and orders</h2>
{_table([*metrics["signals"].items(), *metrics["orders"].items()])}
<h2>Gaps (policy: {html.escape(metrics["gaps"]["policy"])})</h2>
{_table([(k, v) for k, v in metrics["gaps"].items() if k != "intervals"])}
<table><tr><th>symbol</th><th>from</th><th>valid again</th><th>kinds</th>
<th>cancelled orders</th></tr>{gap_rows}</table>
<h2>Assumptions</h2>
<h3>Fill model</h3>
{_table(list(cfg["fill_model"].items()))}
<h3>Risk and execution</h3>
{
        _table(
            [
                *cfg["risk"].items(),
                ("slippage_buffer_bps", cfg["slippage_buffer_bps"]),
                ("starting_balance_usdt", cfg["starting_balance_usdt"]),
            ]
        )
    }
<h3>Strategy and features</h3>
{
        _table(
            [
                *cfg["strategy_runtime"].items(),
                ("model", cfg["model"]),
                ("min_emit_interval_ms", cfg["min_emit_interval_ms"]),
                ("warmup_us", cfg["warmup_us"]),
            ]
        )
    }
<h3>Input</h3>
{_table(list(metrics["input"].items()))}
<h3>Run</h3>
{_table(list(run.items()))}
</body></html>
"""


def write_outputs(
    out_dir: Path,
    metrics: dict[str, Any],
    result: EngineResult,
    run: dict[str, Any],
    title: str,
) -> dict[str, Path]:
    """trades.csv, signals.csv, equity.csv, metrics.json, equity.png, report.html, run.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png = equity_png(result, title)
    files = {
        "trades.csv": trades_csv(result),
        "signals.csv": signals_csv(result),
        "equity.csv": equity_csv(result),
        "metrics.json": metrics_json(metrics),
        "equity.png": png,
        "report.html": report_html(metrics, png, run).encode(),
        "run.json": orjson.dumps(run, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n",
    }
    paths = {}
    for name, data in files.items():
        path = out_dir / name
        path.write_bytes(data)
        paths[name] = path
    return paths

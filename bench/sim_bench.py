"""How many depth messages per second the simulator sustains to real WebSocket clients.

Starts ``depthflow sim`` as a subprocess on a free loopback port with ``@depth@0ms`` (one
message per book update) for three symbols, reads with a ``websockets`` client in this
process, and reports messages/s received, sequence gaps (must be 0: no faults), and the
ratio to the 20,000 msg/s target. A second phase asks for far more than the process can
make, to measure the ceiling in the same run.

A third phase is the end-to-end benchmark's shape (200 symbols at 40 updates/s, the 10 ms
tick, one client on ``@depth@100ms`` + ``@aggTrade`` of every symbol, grouped as the
collector does): it reports the simulator process's CPU (cores = CPU seconds / wall
seconds, from ``/proc/<pid>/stat``) and the messages/s the client received.

    python -m bench.sim_bench [seconds]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

TARGET_MSGS_PER_S = 20_000
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
# the end-to-end benchmark's load (bench/e2e_bench.py)
LOAD_SYMBOLS = tuple(f"L{i:03d}USDT" for i in range(200))
LOAD_RATE = 40.0
LOAD_WARMUP_S = 5.0
STREAMS_PER_CONNECTION = 200  # the collector's default: depth + aggTrade of 100 symbols


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _measure(port: int, seconds: float) -> dict[str, Any]:
    import orjson
    import websockets

    streams = "/".join(f"{s.lower()}@depth@0ms" for s in SYMBOLS)
    url = f"ws://127.0.0.1:{port}/stream?streams={streams}"
    deadline = time.monotonic() + 15
    while True:
        try:
            ws = await websockets.connect(url, max_queue=None, compression=None)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    last_u: dict[str, int] = {}
    gaps = 0
    count = 0
    async with ws:
        await asyncio.wait_for(ws.recv(), 10)  # warm: the first message
        start = time.monotonic()
        end = start + seconds
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                break
            try:
                raw = await asyncio.wait_for(ws.recv(), remaining)
            except TimeoutError:
                break
            msg = orjson.loads(raw)["data"]
            sym = msg["s"]
            if sym in last_u and msg["pu"] != last_u[sym]:
                gaps += 1
            last_u[sym] = msg["u"]
            count += 1
        elapsed = time.monotonic() - start
    return {
        "messages": count,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(count / elapsed, 1),
        "pu_gaps": gaps,
    }


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as f:
        # fields after the parenthesised command name; utime and stime are fields 14, 15
        fields = f.read().rsplit(")", 1)[1].split()
    hz = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / hz, int(fields[12]) / hz


async def _connect(url: str) -> Any:
    import websockets

    deadline = time.monotonic() + 60  # 200 markets take a few seconds to build
    while True:
        try:
            return await websockets.connect(url, max_queue=None, compression=None)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _measure_load(port: int, pid: int, seconds: float) -> dict[str, Any]:
    import orjson

    per_conn = STREAMS_PER_CONNECTION // 2
    groups = [LOAD_SYMBOLS[i : i + per_conn] for i in range(0, len(LOAD_SYMBOLS), per_conn)]
    counts = {"depth": 0, "trades": 0}
    gaps = 0
    last_u: dict[str, int] = {}
    counting = False

    async def read(ws: Any) -> None:
        nonlocal gaps
        async for raw in ws:
            msg = orjson.loads(raw)
            data = msg["data"]
            if data["e"] == "depthUpdate":
                sym = data["s"]
                if sym in last_u and data["pu"] != last_u[sym]:
                    gaps += 1
                last_u[sym] = data["u"]
                if counting:
                    counts["depth"] += 1
            elif counting:
                counts["trades"] += 1

    conns = []
    for group in groups:
        streams = "/".join(f"{s.lower()}@depth@100ms/{s.lower()}@aggTrade" for s in group)
        conns.append(await _connect(f"ws://127.0.0.1:{port}/stream?streams={streams}"))
    readers = [asyncio.create_task(read(ws)) for ws in conns]
    try:
        await asyncio.sleep(LOAD_WARMUP_S)
        counting = True
        (user0, sys0), start = _cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(seconds)
        (user1, sys1), end = _cpu_seconds(pid), time.monotonic()
        counting = False
    finally:
        for task in readers:
            task.cancel()
        for ws in conns:
            await ws.close()
    elapsed = end - start
    cpu = user1 - user0 + sys1 - sys0
    received = counts["depth"] + counts["trades"]
    return {
        "symbols": len(LOAD_SYMBOLS),
        "rate_per_symbol": LOAD_RATE,
        "connections": len(conns),
        "seconds": round(elapsed, 3),
        "sim_cpu_seconds": round(cpu, 3),
        "sim_cpu_system_seconds": round(sys1 - sys0, 3),
        "sim_cpu_cores": round(cpu / elapsed, 4),
        "msgs_per_s": round(received / elapsed, 1),
        "depth_msgs_per_s": round(counts["depth"] / elapsed, 1),
        "trade_msgs_per_s": round(counts["trades"] / elapsed, 1),
        "pu_gaps": gaps,
    }


def _load_phase(seconds: float) -> dict[str, Any]:
    """The end-to-end benchmark's simulator load: its CPU and what one client receives."""
    port = _free_port()
    env = dict(
        os.environ,
        SIM_SYMBOLS=",".join(LOAD_SYMBOLS),
        SIM_RATE=str(LOAD_RATE),
        SIM_SEED="1",
        LOG_LEVEL="WARNING",
    )
    with _simulator(["--port", str(port)], env) as proc:
        return asyncio.run(_measure_load(port, proc.pid, seconds))


@contextlib.contextmanager
def _simulator(
    args: list[str], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``depthflow sim`` with ``args`` as a subprocess, stopped when the block ends."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "depthflow.sim", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.poll() is None:
            proc.kill()


def _phase(rate_per_symbol: float, seconds: float) -> dict[str, Any]:
    port = _free_port()
    args = ["--port", str(port), "--symbols", ",".join(SYMBOLS)]
    with _simulator([*args, "--rate", str(rate_per_symbol), "--seed", "1"]):
        result = asyncio.run(_measure(port, seconds))
    result["requested_msgs_per_s"] = rate_per_symbol * len(SYMBOLS)
    return result


def run(seconds: float = 5.0) -> dict[str, Any]:
    """Measure the depth messages/s the simulator sustains (see module docstring)."""
    target = _phase(TARGET_MSGS_PER_S / len(SYMBOLS), seconds)
    ceiling = _phase(60_000 / len(SYMBOLS), seconds)
    load = _load_phase(max(seconds, 20.0))
    return {
        "benchmark": "sim_depth_stream",
        "target_msgs_per_s": TARGET_MSGS_PER_S,
        "at_target": target,
        "ceiling": ceiling,
        "ratio_to_target": round(target["msgs_per_s"] / TARGET_MSGS_PER_S, 3),
        "ratio_to_ceiling": round(target["msgs_per_s"] / max(ceiling["msgs_per_s"], 1), 3),
        "e2e_load": load,
    }


if __name__ == "__main__":
    import json

    if len(sys.argv) > 1 and sys.argv[1] == "load":  # only the e2e-shape phase
        print(json.dumps(_load_phase(float(sys.argv[2]) if len(sys.argv) > 2 else 20.0), indent=2))
    else:
        print(json.dumps(run(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0), indent=2))

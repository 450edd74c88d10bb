"""How many depth messages per second the simulator sustains to real WebSocket clients.

Starts ``depthflow sim`` as a subprocess on a free loopback port with ``@depth@0ms`` (one
message per book update) for three symbols, reads with a ``websockets`` client in this
process, and reports messages/s received, sequence gaps (must be 0: no faults), and the
ratio to the 20,000 msg/s target. A second phase asks for far more than the process can
make, to measure the ceiling in the same run.

    python -m bench.sim_bench [seconds]
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from typing import Any

TARGET_MSGS_PER_S = 20_000
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


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


def _phase(rate_per_symbol: float, seconds: float) -> dict[str, Any]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "depthflow.sim",
            "--port",
            str(port),
            "--symbols",
            ",".join(SYMBOLS),
            "--rate",
            str(rate_per_symbol),
            "--seed",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        result = asyncio.run(_measure(port, seconds))
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.poll() is None:
            proc.kill()
    result["requested_msgs_per_s"] = rate_per_symbol * len(SYMBOLS)
    return result


def run(seconds: float = 5.0) -> dict[str, Any]:
    """Measure the depth messages/s the simulator sustains (see module docstring)."""
    target = _phase(TARGET_MSGS_PER_S / len(SYMBOLS), seconds)
    ceiling = _phase(60_000 / len(SYMBOLS), seconds)
    return {
        "benchmark": "sim_depth_stream",
        "target_msgs_per_s": TARGET_MSGS_PER_S,
        "at_target": target,
        "ceiling": ceiling,
        "ratio_to_target": round(target["msgs_per_s"] / TARGET_MSGS_PER_S, 3),
        "ratio_to_ceiling": round(target["msgs_per_s"] / max(ceiling["msgs_per_s"], 1), 3),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0), indent=2))

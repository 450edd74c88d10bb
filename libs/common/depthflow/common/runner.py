"""`make run`: start every service that exists, Procfile-style, in the foreground.

The process list is built from the services installed (no stubs): the simulator as the
default market, one collector per exchange, then features, strategy, executor and api.
honcho runs them; Ctrl-C stops them all.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

# Each service's /metrics, /healthz and /readyz port (HTTP_PORT) is fixed here so the local
# Prometheus config knows where to scrape; `exec` lets honcho's SIGTERM reach the service.
PROCESSES: list[tuple[str, str, str]] = [
    # (name, module that must exist, command)
    ("sim", "depthflow.sim.cli", "exec depthflow sim --port 8090"),
    (
        "collector-binance",
        "depthflow.collector.cli",
        "HTTP_PORT=9101 exec depthflow collector --exchange binance --source sim",
    ),
    (
        "collector-bybit",
        "depthflow.collector.cli",
        "HTTP_PORT=9102 exec depthflow collector --exchange bybit --source sim",
    ),
    ("features", "depthflow.features.cli", "HTTP_PORT=9103 exec depthflow features"),
    ("strategy", "depthflow.strategy.cli", "HTTP_PORT=9104 exec depthflow strategy"),
    ("executor", "depthflow.executor.cli", "HTTP_PORT=9105 exec depthflow executor --venue paper"),
    ("api", "depthflow.api.cli", "exec depthflow api"),
]


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def procfile() -> str:
    """The Procfile text for the services that exist."""
    lines = [f"{name}: {command}" for name, module, command in PROCESSES if _exists(module)]
    return "\n".join(lines) + "\n"


def main() -> int:
    root = Path(__file__).resolve().parents[4]
    text = procfile()
    if not text.strip():
        print("no services are installed yet", file=sys.stderr)
        return 1
    path = root / ".local" / "Procfile"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    api_port = os.environ.get("API_PORT", "8000")
    print("depthflow is starting:\n" + "".join(f"  {line}\n" for line in text.splitlines()))
    if _exists("depthflow.api.cli"):
        print(f"API: http://127.0.0.1:{api_port}  (docs at /docs)")
        print(
            f"login: {os.environ.get('APP_USERNAME', 'admin')} / the APP_PASSWORD in .env "
            "(development default: see .env.example)"
        )
    print("Kafka: 127.0.0.1:9092   PostgreSQL: postgresql://depthflow:***@127.0.0.1:5432/depthflow")
    sys.stdout.flush()
    honcho = Path(sys.executable).with_name("honcho")
    os.execv(str(honcho), [str(honcho), "-d", str(root), "-f", str(path), "start"])  # noqa: S606
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())

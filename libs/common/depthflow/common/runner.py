"""`make run`: start every service that exists, Procfile-style, in the foreground.

The process list is built from the services installed (no stubs): the simulator as the
default market, one collector per exchange, then features, strategy, executor and api.
honcho runs them; Ctrl-C stops them all.

Ports are the documented defaults (simulator 8090, metrics 9101-9105, api 8000) unless the
environment says otherwise: ``SIM_PORT``, ``API_PORT``, and ``RUN_HTTP_PORT_<PROCESS>``
(e.g. ``RUN_HTTP_PORT_COLLECTOR_BINANCE``) for each worker's ``HTTP_PORT``; the collectors'
and the executor's simulator URL follow ``SIM_PORT`` unless ``COLLECTOR_SIM_URL`` /
``EXECUTOR_SIM_BASE_URL`` are set. The Procfile is written to ``$DEPTHFLOW_LOCAL_DIR``
(default ``.local/``). The end-to-end tests run a private copy of the pipeline this way.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

# Each service's /metrics, /healthz and /readyz port (HTTP_PORT) is fixed here so the local
# Prometheus config knows where to scrape; `exec` lets honcho's SIGTERM reach the service.
_SIM_URL = "http://127.0.0.1:${SIM_PORT:-8090}"
PROCESSES: list[tuple[str, str, str]] = [
    # (name, module that must exist, command)
    ("sim", "depthflow.sim.cli", "exec depthflow sim --port ${SIM_PORT:-8090}"),
    (
        "collector-binance",
        "depthflow.collector.cli",
        "HTTP_PORT=${RUN_HTTP_PORT_COLLECTOR_BINANCE:-9101} "
        f"COLLECTOR_SIM_URL=${{COLLECTOR_SIM_URL:-{_SIM_URL}}} "
        "exec depthflow collector --exchange binance --source sim",
    ),
    (
        "collector-bybit",
        "depthflow.collector.cli",
        "HTTP_PORT=${RUN_HTTP_PORT_COLLECTOR_BYBIT:-9102} "
        f"COLLECTOR_SIM_URL=${{COLLECTOR_SIM_URL:-{_SIM_URL}}} "
        "exec depthflow collector --exchange bybit --source sim",
    ),
    (
        "features",
        "depthflow.features.cli",
        "HTTP_PORT=${RUN_HTTP_PORT_FEATURES:-9103} exec depthflow features",
    ),
    (
        "strategy",
        "depthflow.strategy.cli",
        "HTTP_PORT=${RUN_HTTP_PORT_STRATEGY:-9104} exec depthflow strategy",
    ),
    (
        "executor",
        "depthflow.executor.cli",
        "HTTP_PORT=${RUN_HTTP_PORT_EXECUTOR:-9105} "
        f"EXECUTOR_SIM_BASE_URL=${{EXECUTOR_SIM_BASE_URL:-{_SIM_URL}}} "
        "exec depthflow executor --venue paper",
    ),
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
    path = Path(os.environ.get("DEPTHFLOW_LOCAL_DIR") or root / ".local") / "Procfile"
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
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    print(f"Kafka: {kafka}   PostgreSQL: the POSTGRES_DSN in .env (default 127.0.0.1:5432)")
    sys.stdout.flush()
    honcho = Path(sys.executable).with_name("honcho")
    # `make run` puts .venv/bin on PATH; `python -m depthflow.common.runner` may not have it,
    # and every Procfile line runs `depthflow` from PATH.
    os.environ["PATH"] = os.pathsep.join([str(honcho.parent), os.environ.get("PATH", "")])
    os.execv(str(honcho), [str(honcho), "-d", str(root), "-f", str(path), "start"])  # noqa: S606
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())

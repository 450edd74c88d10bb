"""``python -m depthflow.api``: the same as ``depthflow api`` (logging from ``LOG_LEVEL`` and
``LOG_JSON``, as the root command does)."""

import os

from depthflow.api.cli import app
from depthflow.common.logging import configure_logging

if __name__ == "__main__":
    configure_logging(
        "api",
        level=os.environ.get("LOG_LEVEL", "INFO"),
        json=os.environ.get("LOG_JSON", "true").lower() not in ("0", "false", "no"),
    )
    app(prog_name="depthflow api")

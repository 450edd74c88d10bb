"""``python -m depthflow.strategy``: run the strategy service."""

from depthflow.strategy.cli import app

app()

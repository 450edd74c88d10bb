"""``python -m depthflow.executor``: the same as ``depthflow executor``."""

from depthflow.executor.cli import app

app()

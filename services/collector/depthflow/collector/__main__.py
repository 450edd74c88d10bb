"""``python -m depthflow.collector`` — the same as ``depthflow collector``."""

from depthflow.collector.cli import app

if __name__ == "__main__":
    app()

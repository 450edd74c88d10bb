"""``python -m depthflow.features`` — the same as ``depthflow features``."""

from depthflow.features.cli import app

if __name__ == "__main__":
    app()

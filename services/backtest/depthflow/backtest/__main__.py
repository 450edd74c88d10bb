"""``python -m depthflow.backtest`` = ``depthflow backtest``."""

from depthflow.backtest.cli import app

app()

"""``python -m depthflow.sim`` runs the simulator (same flags as ``depthflow sim``)."""

from depthflow.sim.cli import app

app()

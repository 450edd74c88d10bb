"""Fixtures for the collector's integration tests: the simulator as a subprocess and
helpers to read a topic back."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from depthflow.common.testing import eventually
from depthflow.common.testing.processes import free_port
from depthflow.common.testing.topics import read_topic  # noqa: F401 - for the tests

DEPTHFLOW = Path(sys.executable).parent / "depthflow"


def _alive(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as resp:  # noqa: S310 - local
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., str]]:
    """Starts ``depthflow sim`` on a free port with the given options; returns its URL."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> str:
        port = free_port()
        proc = subprocess.Popen(
            [str(DEPTHFLOW), "--log-level", "WARNING", "sim", "--port", str(port), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"simulator exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            return _alive(url)

        eventually(up, timeout=30, what="simulator answers /healthz")
        return url

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

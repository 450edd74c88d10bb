"""Run depthflow services as real subprocesses in tests: start, wait until ready, SIGTERM,
SIGKILL, restart — so fault tests exercise the same binaries users run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback
            return 200 <= resp.status < 300
    except Exception:
        return False


class ServiceProcess:
    """One ``depthflow <args>`` subprocess with its own environment and log file."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        env: dict[str, str],
        log_dir: Path,
        health_url: str | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.cwd = cwd
        self.env = {**os.environ, **env}
        self.log_path = log_dir / f"{name}.log"
        self.health_url = health_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def command(self) -> list[str]:
        """The argv to run (``depthflow <args>``; subclasses run other commands)."""
        return [str(Path(sys.executable).with_name("depthflow")), *self.args]

    def start(self) -> ServiceProcess:
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts + 1} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(  # noqa: S603 - our own CLI
                self.command(),
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def assert_alive(self) -> None:
        assert self.alive, (
            f"{self.name} exited ({self.proc and self.proc.returncode}):\n{self.log_tail()}"
        )

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Wait until ``health_url`` answers 2xx; fails with the log tail if the process dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise AssertionError(
                    f"{self.name} exited ({self.proc and self.proc.returncode}):\n{self.log_tail()}"
                )
            if self.health_url is None or http_ok(self.health_url):
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not healthy within {timeout}s:\n{self.log_tail()}")

    def kill9(self) -> None:
        """SIGKILL: no drain, no flush — a crash."""
        if self.proc and self.alive:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait for a graceful exit (SIGKILL after ``timeout``)."""
        if not self.proc:
            return None
        if self.alive:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:] or "(no log)"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

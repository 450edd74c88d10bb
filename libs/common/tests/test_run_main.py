"""run_main: the services' event loop is uvloop unless DEPTHFLOW_EVENT_LOOP says otherwise."""

from __future__ import annotations

import asyncio

import pytest

from depthflow.common.lifecycle import EVENT_LOOP_ENV, run_main


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EVENT_LOOP_ENV, raising=False)
    assert run_main(_loop_module()).startswith("uvloop")


def test_the_standard_loop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EVENT_LOOP_ENV, "asyncio")
    assert run_main(_loop_module()).startswith("asyncio")


def test_an_unknown_loop_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EVENT_LOOP_ENV, "trio")
    with pytest.raises(SystemExit, match="DEPTHFLOW_EVENT_LOOP must be"):
        run_main(_loop_module())

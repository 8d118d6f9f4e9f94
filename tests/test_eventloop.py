"""verifier/eventloop.py: commands run on uvloop when it is installed, asyncio's loop on request."""

from __future__ import annotations

import asyncio

import pytest

from verifier import eventloop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.delenv("REGVERIFY_EVENT_LOOP", raising=False)
    assert eventloop.run(_loop_module()).startswith("uvloop")


def test_asyncio_loop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGVERIFY_EVENT_LOOP", "asyncio")
    assert eventloop.loop_factory() is None
    assert eventloop.run(_loop_module()).startswith("asyncio")


def test_run_returns_the_result_and_raises_the_error() -> None:
    async def fail() -> None:
        raise ValueError("x")

    assert eventloop.run(asyncio.sleep(0, result=42)) == 42
    with pytest.raises(ValueError):
        eventloop.run(fail())

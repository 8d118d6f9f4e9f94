"""registry/retry.py on its own: Retry-After, backoff, and the loop that owns every attempt."""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from verifier.registry.retry import (
    RETRYABLE_STATUS,
    CutShort,
    RequestFailed,
    RetryPolicy,
    Transient,
    parse_retry_after,
    transient_status,
)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The loop's waits, recorded instead of slept."""
    recorded: list[float] = []

    async def fake_sleep(delay: float, *args: Any) -> None:
        recorded.append(delay)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    return recorded


def _policy(clock: Clock | None = None, **overrides: Any) -> RetryPolicy:
    options: dict[str, Any] = {"retries": 3, "backoff_base": 1.0, "backoff_max": 20.0,
                               "deadline": None}
    options.update(overrides)
    return RetryPolicy(**options, clock=clock or Clock())


def _script(*outcomes: object) -> tuple[Callable[[], Awaitable[object]], list[int]]:
    """An attempt that plays `outcomes` in turn (exceptions raised), and its call count."""
    calls = [0]

    async def attempt() -> object:
        outcome = outcomes[min(calls[0], len(outcomes) - 1)]
        calls[0] += 1
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return attempt, calls


def _run(policy: RetryPolicy, attempt: Callable[[], Awaitable[object]]) -> object:
    return asyncio.run(policy.run(attempt, method="GET", url="/v2/x"))


# -- parse_retry_after ---------------------------------------------------------------------


def test_parse_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0 ") == 0.0
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0) == 0.0
    for junk in ("soon", "-5", "1.5", "\u00b2", "\u0663", "Mon, 99 Foo 2015"):
        assert parse_retry_after(junk) is None


# -- what is transient ---------------------------------------------------------------------


def test_transient_status() -> None:
    assert RETRYABLE_STATUS == {408, 429, 502, 503, 504}
    for status in (200, 206, 301, 400, 401, 403, 404, 416, 500):
        assert transient_status(status, "5") is None
    failure = transient_status(503, "7")
    assert failure is not None
    assert (failure.reason, failure.status, failure.retry_after) == ("HTTP 503", 503, 7.0)
    no_hint = transient_status(429, None)
    assert no_hint is not None and no_hint.retry_after is None


# -- the loop ------------------------------------------------------------------------------


def test_a_first_answer_is_returned_without_waiting(sleeps: list[float]) -> None:
    attempt, calls = _script("answer")
    assert _run(_policy(), attempt) == "answer"
    assert calls == [1] and sleeps == []


def test_transient_failures_are_retried_with_growing_jittered_waits(sleeps: list[float]) -> None:
    attempt, calls = _script(Transient("HTTP 502", status=502), Transient("HTTP 502", status=502),
                             Transient("HTTP 502", status=502), "answer")
    assert _run(_policy(), attempt) == "answer"
    assert calls == [4] and len(sleeps) == 3
    for number, wait in enumerate(sleeps, start=1):
        ceiling = 2.0 ** (number - 1)
        assert ceiling / 2 <= wait <= ceiling


def test_exhausted_retries_raise_request_failed_with_the_last_reason(
        sleeps: list[float]) -> None:
    attempt, calls = _script(Transient("HTTP 503", status=503))
    with pytest.raises(RequestFailed, match=r"GET /v2/x failed after 4 attempts: HTTP 503") as info:
        _run(_policy(), attempt)
    assert info.value.status == 503 and info.value.method == "GET" and info.value.url == "/v2/x"
    assert calls == [4] and len(sleeps) == 3


def test_retries_zero_is_one_attempt(sleeps: list[float]) -> None:
    attempt, calls = _script(Transient("timed out"))
    with pytest.raises(RequestFailed, match="after 1 attempts"):
        _run(_policy(retries=0), attempt)
    assert calls == [1] and sleeps == []


def test_retry_after_is_honoured_and_capped(sleeps: list[float]) -> None:
    attempt, _ = _script(Transient("HTTP 429", retry_after=4.0),
                         Transient("HTTP 429", retry_after=3600.0), "answer")
    assert _run(_policy(backoff_max=2.0), attempt) == "answer"
    assert sleeps == [4.0, 6.0]  # capped at three times the longest backoff


def test_a_definite_outcome_is_never_retried(sleeps: list[float]) -> None:
    attempt, calls = _script(LookupError("definite"), "answer")
    with pytest.raises(LookupError):
        _run(_policy(), attempt)
    assert calls == [1] and sleeps == []


def test_cut_short_answers_are_retried_quickly_and_the_last_one_returned(
        sleeps: list[float]) -> None:
    attempt, calls = _script(CutShort("body cut short", "first"),
                             CutShort("body cut short", "last"))
    assert _run(_policy(retries=1), attempt) == "last"
    assert calls == [2] and len(sleeps) == 1
    assert 0.1 <= sleeps[0] <= 0.2  # a fifth of the usual backoff


def test_cut_short_then_a_good_answer(sleeps: list[float]) -> None:
    attempt, calls = _script(CutShort("body cut short", "partial"), "whole")
    assert _run(_policy(), attempt) == "whole"
    assert calls == [2]


def test_the_last_attempt_decides_between_cut_short_and_failure(sleeps: list[float]) -> None:
    attempt, _ = _script(CutShort("body cut short", "partial"), Transient("HTTP 503", status=503))
    with pytest.raises(RequestFailed, match="HTTP 503"):
        _run(_policy(retries=1), attempt)


def test_deadline_passed_sends_nothing(sleeps: list[float]) -> None:
    clock = Clock()
    policy = _policy(clock, deadline=5.0)
    clock.now += 5.0
    attempt, calls = _script("answer")
    with pytest.raises(RequestFailed, match="not sent: deadline exceeded"):
        _run(policy, attempt)
    assert calls == [0] and policy.deadline_left() == 0.0


def test_a_wait_that_would_cross_the_deadline_gives_up_at_once(sleeps: list[float]) -> None:
    attempt, calls = _script(Transient("HTTP 503", status=503, retry_after=60.0), "answer")
    with pytest.raises(RequestFailed, match="after 1 attempts"):
        _run(_policy(deadline=30.0), attempt)
    assert calls == [1] and sleeps == []


def test_no_deadline_means_none_left() -> None:
    assert _policy().deadline_left() is None

"""The retry engine: what is transient, how long to wait, when to give up.

One loop, `RetryPolicy.run`, owns every attempt of a request, the first included. An attempt
either returns the answer, returns a `CutShort` answer (good headers, a body cut short: retried,
and handed back as the answer when every attempt ends so), or raises `Transient`; anything else
it raises is a definite outcome and goes straight to the caller. Waits are exponential backoff
with jitter, or what `Retry-After` asked for (capped), and never run past the deadline.

The loop is tenacity's (`Retrying`, its waits slept on the event loop): this module only says
what to retry, how long to wait and when to stop. Every request pays for tenacity's per-call
state; docs/performance.md measures what that costs.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from tenacity import (
    Future,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
)

from verifier.errors import IncompleteError

#: Answers that say "not now" rather than "no": worth another attempt.
RETRYABLE_STATUS = frozenset({408, 429, 502, 503, 504})
T = TypeVar("T")


class RequestFailed(IncompleteError):
    """A request that kept failing transiently until the retries or the deadline ran out."""

    def __init__(self, message: str, *, method: str, url: str, status: int | None) -> None:
        super().__init__(message)
        self.method = method
        self.url = url
        self.status = status


class Transient(Exception):
    """This attempt failed in a way worth another try (a status, a timeout, a connection)."""

    def __init__(self, reason: str, *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class CutShort(Generic[T]):
    """An attempt whose body was cut short after good headers, with what did arrive.

    Retried like a transient failure, but when every attempt ends so it is the registry's real
    behaviour (a warm-cache missing blob), and `answer` is handed back for the checks to judge.
    """

    reason: str
    answer: T


def is_decimal(text: str) -> bool:
    """True for ASCII digits only (a header value `int()` is sure to accept)."""
    # str.isdigit() also accepts "²" and other Unicode digits that int() refuses: a header
    # decoded as latin-1 must not crash the client.
    return text.isascii() and text.isdigit()


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if is_decimal(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def transient_status(status: int, retry_after: str | None) -> Transient | None:
    """The `Transient` an HTTP status means (with its `Retry-After`), None for a definite one."""
    if status not in RETRYABLE_STATUS:
        return None
    return Transient(f"HTTP {status}", status=status, retry_after=parse_retry_after(retry_after))


class RetryPolicy:
    """How often and how patiently one client retries, and the run's deadline."""

    def __init__(self, *, retries: int, backoff_base: float, backoff_max: float,
                 deadline: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.attempts = retries + 1
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.deadline = deadline
        self._clock = clock
        self._started = clock()

    def deadline_left(self) -> float | None:
        """Seconds left before the deadline (None without one); negative once it passed."""
        if self.deadline is None:
            return None
        return self.deadline - (self._clock() - self._started)

    def backoff(self, attempt: int, retry_after: float | None, *, quick: bool = False) -> float:
        """The wait after failed attempt number `attempt` (1-based)."""
        if retry_after is not None:
            return min(retry_after, self.backoff_max * 3)
        # A body cut short after good headers is what a warm-cache missing blob looks like on
        # every attempt: retry it as often (a flaky proxy must not make a false verdict) but
        # without the long waits meant for an overloaded registry.
        base = self.backoff_base / 5 if quick else self.backoff_base
        ceiling = min(self.backoff_max, base * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)

    def _gives_up(self, attempt: int, wait: float) -> bool:
        if attempt >= self.attempts:
            return True
        left = self.deadline_left()
        return left is not None and wait >= left

    async def run(self, attempt: Callable[[], Awaitable[T | CutShort[T]]], *,
                  method: str, url: str) -> T:
        """Run `attempt` until it answers, or the attempts or the deadline run out.

        Raises `RequestFailed` when the last attempt failed transiently; returns the last
        `CutShort` answer when that is how the last attempt ended.
        """
        left = self.deadline_left()
        if left is not None and left <= 0:
            raise RequestFailed(
                f"{method} {url} not sent: deadline exceeded before the request was sent",
                method=method, url=url, status=None,
            )

        def wait(state: RetryCallState) -> float:
            failure = _transient(state)
            if failure is not None:
                return self.backoff(state.attempt_number, failure.retry_after)
            return self.backoff(state.attempt_number, None, quick=True)

        def stop(state: RetryCallState) -> bool:
            return self._gives_up(state.attempt_number, state.upcoming_sleep)

        def give_up(state: RetryCallState) -> T:
            failure = _transient(state)
            if failure is None:
                return cast(CutShort[T], _outcome(state).result()).answer
            raise RequestFailed(
                f"{method} {url} failed after {state.attempt_number} attempts: {failure.reason}",
                method=method, url=url, status=failure.status,
            )

        # tenacity decides every attempt, the first included; only its sleep is ours to make:
        # `Retrying` hands the wait to `pause.hold` and goes on to the next attempt, which this
        # loop awaits first. (`AsyncRetrying` wraps each of its callbacks in a coroutine on
        # every attempt, which measured about a fifth of a ranged GET's CPU.)
        pause = _Pause()
        answer: list[T] = []

        def give_up_kept(state: RetryCallState) -> None:
            answer.append(give_up(state))

        retrying = Retrying(
            retry=retry_if_exception_type(Transient) | retry_if_result(_is_cut_short),
            wait=wait, stop=stop, sleep=pause.hold, retry_error_callback=give_up_kept,
        )
        returned: list[T | CutShort[T]] = []
        for attempt_manager in retrying:
            await pause.take()
            with attempt_manager:  # records what the attempt raised, for tenacity to judge
                outcome = await attempt()
            state = attempt_manager.retry_state
            if state.outcome is not None and not state.outcome.failed:
                state.set_result(outcome)  # what it returned, for tenacity to judge
                returned.append(outcome)
        # tenacity stopped: it accepted an answer, or gave up (a raise, or a body cut short on
        # every attempt, the registry's real answer, which give-up handed over).
        if answer:
            return answer[0]
        last = returned[-1]
        return last.answer if isinstance(last, CutShort) else last


class _Pause:
    """The wait tenacity chose, held until the next attempt is awaited (asyncio, not time)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def hold(self, seconds: float) -> None:
        """tenacity's `sleep`: remember the wait instead of blocking the event loop."""
        self.seconds = seconds

    async def take(self) -> None:
        """Sleep the held wait, if any, before the next attempt."""
        if self.seconds:
            seconds, self.seconds = self.seconds, 0.0
            await _sleep(seconds)


def _outcome(state: RetryCallState) -> Future:
    assert state.outcome is not None  # tenacity calls wait/stop/give-up after an attempt
    return state.outcome


def _transient(state: RetryCallState) -> Transient | None:
    """The `Transient` the attempt raised, or None when it returned (a `CutShort`)."""
    outcome = _outcome(state)
    if not outcome.failed:
        return None
    failure = outcome.exception()
    assert isinstance(failure, Transient)  # only Transient is retried
    return failure


def _is_cut_short(result: object) -> bool:
    return isinstance(result, CutShort)


async def _sleep(seconds: float) -> None:
    # Looked up at call time, so tests can record the waits instead of sleeping them.
    await asyncio.sleep(seconds)

"""The poll's schedule (tempay/polling.py): gaps double from twice the first delay to the
cap whatever the jitter did to earlier attempts; a failed call is asked again soon; and an
attempt either returns news or fails with the delay the server retries after."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from tempay.polling import (
    FAILED_RETRY,
    QUERY_FAILED,
    STILL_WAITING,
    next_attempt_in,
    nominal_gap,
    poll_once,
)

DELAY, CAP = timedelta(seconds=60), timedelta(minutes=10)
NOMINAL = [120, 240, 480, 600, 600, 600]


@pytest.mark.parametrize("seed", range(20))
def test_gaps_double_to_the_cap_under_any_jitter(seed: int) -> None:
    rng = random.Random(seed)
    elapsed = timedelta(0)
    gaps = []
    for _ in NOMINAL:
        gap = next_attempt_in(elapsed, DELAY, CAP, failed=False, rng=rng)
        gaps.append(gap.total_seconds())
        elapsed += gap
    for seconds, nominal in zip(gaps, NOMINAL, strict=True):
        assert nominal * 0.8 <= seconds <= nominal * 1.2, gaps


def test_nominal_gap_by_elapsed_time() -> None:
    seconds = [0, 100, 180, 419, 420, 899, 900, 5000]
    gaps = [nominal_gap(timedelta(seconds=s), DELAY, CAP).total_seconds() for s in seconds]
    # 0 s: 120; 100 s reads as 125 s, past the 120 s mark: 240; 180 s: 240; ...
    assert gaps == [120, 240, 240, 480, 480, 600, 600, 600]
    with pytest.raises(ValueError):
        nominal_gap(timedelta(0), timedelta(0), CAP)


def test_a_failed_call_is_asked_again_soon_but_never_later_than_scheduled() -> None:
    late = next_attempt_in(timedelta(hours=1), DELAY, CAP, failed=True, rng=random.Random(1))
    assert FAILED_RETRY * 0.8 <= late <= FAILED_RETRY * 1.2
    short = next_attempt_in(timedelta(0), timedelta(seconds=2), CAP, failed=True)
    assert short <= timedelta(seconds=4) * 1.2


SINCE = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


async def attempt(answer: object, at: timedelta = timedelta(0)) -> object:
    async def ask() -> object:
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return await poll_once(ask, lambda a: a == "pending", SINCE, SINCE + at, DELAY, CAP)


async def test_news_is_returned() -> None:
    assert await attempt("paid") == "paid"


async def test_still_waiting_fails_benignly_with_the_next_gap() -> None:
    with pytest.raises(ApplicationError) as caught:
        await attempt("pending", at=timedelta(seconds=180))
    error = caught.value
    assert error.type == STILL_WAITING and not error.non_retryable
    assert error.category is ApplicationErrorCategory.BENIGN
    assert error.next_retry_delay is not None
    assert 240 * 0.8 <= error.next_retry_delay.total_seconds() <= 240 * 1.2


async def test_a_failed_call_fails_with_a_short_retry() -> None:
    with pytest.raises(ApplicationError) as caught:
        await attempt(RuntimeError("HTTP 503"), at=timedelta(minutes=20))
    error = caught.value
    assert error.type == QUERY_FAILED and "HTTP 503" in str(error)
    assert error.category is not ApplicationErrorCategory.BENIGN
    assert error.next_retry_delay is not None and error.next_retry_delay <= FAILED_RETRY * 1.2


async def test_a_non_retryable_error_passes_through() -> None:
    refused = ApplicationError("unknown provider", type="UnknownProvider", non_retryable=True)
    with pytest.raises(ApplicationError) as caught:
        await attempt(refused)
    assert caught.value is refused

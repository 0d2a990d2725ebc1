"""Status queries as one activity's retries.

A payment that waits for its payer is asked about once its first query is due (a workflow
timer), then by a single `poll_payment` activity: each attempt asks the provider, and an
answer of "still waiting" fails the attempt with the delay until the next one
(`ApplicationError.next_retry_delay`). The Temporal server keeps the schedule, so the
queries of a waiting payment cost no workflow task, no replay and no history event; the
workflow hears from the poll once, when the provider reports something else.

The schedule is the one the workflow used to keep itself: the gap after the first query is
twice the first delay, then doubling up to the cap, each gap +-20% (JITTER). Gaps are
counted from the time the poll was scheduled, so failed attempts do not speed up the
doubling. A failed call (timeout, 5xx) is asked again after about FAILED_RETRY, or sooner
when the next scheduled query is sooner. Every attempt runs on the rate-capped status
queue, like any status query (tempay/pacing.py).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from tempay.domain import (
    PaymentObservation,
    PaymentOrder,
    PaymentPoll,
    PolledPayment,
    ProviderPaymentState,
)

T = TypeVar("T")

JITTER = 0.2
FAILED_RETRY = timedelta(seconds=10)
STILL_WAITING = "StillWaiting"  # the error type of an attempt the provider answered "pending"
QUERY_FAILED = "StatusQueryFailed"  # the error type of an attempt whose call failed


def nominal_gap(elapsed: timedelta, delay: timedelta, cap: timedelta) -> timedelta:
    """The gap due after a query made `elapsed` after the poll was scheduled: gaps are
    2·delay, 4·delay, ... up to `cap`, and the query belongs to the last nominal time at or
    before it. Jitter makes a query run up to 20% early, so `elapsed` is read 1/0.8 times
    longer: a query is never counted in an earlier period, which would repeat a gap."""
    if delay <= timedelta(0) or cap <= timedelta(0):
        raise ValueError("delay and cap must be positive")
    reach = elapsed / (1 - JITTER)
    gap, passed = min(delay * 2, cap), timedelta(0)
    while passed + gap <= reach and gap < cap:
        passed += gap
        gap = min(gap * 2, cap)
    return gap


def next_attempt_in(
    elapsed: timedelta,
    delay: timedelta,
    cap: timedelta,
    failed: bool,
    rng: random.Random | None = None,
) -> timedelta:
    """When the next attempt runs, from now: the nominal gap (or, after a failed call, at
    most FAILED_RETRY), +-20%."""
    gap = nominal_gap(elapsed, delay, cap)
    if failed:
        gap = min(gap, FAILED_RETRY)
    return gap * (rng or random).uniform(1 - JITTER, 1 + JITTER)


async def poll_once(
    ask: Callable[[], Awaitable[T]],
    still_waiting: Callable[[T], bool],
    since: datetime,
    attempt_started: datetime,
    delay: timedelta,
    cap: timedelta,
) -> T:
    """One attempt: the provider's answer when it is news; otherwise an ApplicationError
    that has the server retry at the next scheduled time. `attempt_started` is when the
    server started this attempt (its clock, so also right under a time-skipping test server;
    an attempt's "current_attempt_scheduled_time" is when the previous one failed)."""
    elapsed = max(attempt_started - since, timedelta(0))
    try:
        answer = await ask()
    except ApplicationError as exc:
        if exc.non_retryable:
            raise
        failed: BaseException | None = exc
    except Exception as exc:  # noqa: BLE001 - any failed call is asked again, on schedule
        failed = exc
    else:
        if not still_waiting(answer):
            return answer
        raise ApplicationError(
            "the provider reports it still waiting for the payer",
            type=STILL_WAITING,
            # Expected, not a fault: logged at debug level, not counted as a failed attempt.
            category=ApplicationErrorCategory.BENIGN,
            next_retry_delay=next_attempt_in(elapsed, delay, cap, failed=False),
        )
    raise ApplicationError(
        f"status query failed: {failed}",
        type=QUERY_FAILED,
        next_retry_delay=next_attempt_in(elapsed, delay, cap, failed=True),
    ) from failed


async def poll_payment_attempt(
    query: Callable[[PaymentOrder], Awaitable[PaymentObservation]], poll: PaymentPoll
) -> PolledPayment:
    """The body of a `poll_payment` activity attempt, around a provider's status query."""
    info = activity.info()
    observation = await poll_once(
        lambda: query(poll.order),
        lambda answer: answer.state is ProviderPaymentState.PENDING,
        poll.since,
        info.started_time,
        poll.delay,
        poll.cap,
    )
    return PolledPayment(observation=observation, attempts=info.attempt)

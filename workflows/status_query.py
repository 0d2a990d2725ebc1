"""Asking a provider for a transaction's status while still listening for its notification.
Shared by every transaction kind."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

A = TypeVar("A")
T = TypeVar("T")

ACTIVITY_TIMEOUT = timedelta(seconds=30)
# A failed status query is not fatal: the next scheduled one (or the notification) follows.
QUERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)
JITTER = 0.2  # queries are spread +-20% so pending transactions don't query in bursts


def jittered(delay: timedelta) -> timedelta:
    return delay * workflow.random().uniform(1 - JITTER, 1 + JITTER)


class NoAnswer(Exception):
    """The status query failed every attempt, or was cancelled because the news settled it."""


def status_query(
    activity: Callable[[Any, A], Awaitable[T]], arg: A, task_queue: str | None
) -> Awaitable[T]:
    """The status-query `activity` (a method of an activity class, passed as a function) for
    `arg`, on `task_queue`: the rate-capped status-query queue
    (SettlementTiming.status_query_task_queue); None runs it on the workflow's own queue.
    Not started until awaited."""
    return workflow.execute_activity_method(
        activity,
        arg,
        start_to_close_timeout=ACTIVITY_TIMEOUT,
        retry_policy=QUERY_RETRY,
        task_queue=task_queue,
        summary="status query",
    )


async def query_while_listening(
    query: Awaitable[T],
    has_news: Callable[[], bool],
    take_news: Callable[[], bool],
) -> T:
    """Run a `status_query`; a notification arriving meanwhile is taken at once (`take_news`
    returns True when it settled the transaction, which cancels the query)."""
    running = asyncio.ensure_future(query)
    await workflow.wait_condition(lambda: running.done() or has_news())
    if take_news() and not running.done():
        running.cancel()
    try:
        return await running
    except (ActivityError, asyncio.CancelledError):
        raise NoAnswer from None

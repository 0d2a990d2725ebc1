"""Status queries spaced evenly: at most TEMPAY_STATUS_QUERY_RATE_CAP per second, no bursts.

The Temporal server caps the status-query task queue's dispatch rate for every worker
together (`max_task_queue_activities_per_second`), but its limiter is a token bucket: after a
quiet moment it lets a burst through, so a provider could see up to about twice the cap in
one wall-clock second. Each worker process therefore also spaces the query activities it
runs at least 1/cap seconds apart before they call the provider (a leaky bucket, burst 1).
One worker then never exceeds the cap in any second; several workers stay under the
server's cap as a sustained rate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)


class Pacer:
    """Hands out start times at least `1/rate` seconds apart, first come first served."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate
        self._clock, self._sleep = clock, sleep
        self._next = float("-inf")

    async def wait(self) -> None:
        """Return at this caller's slot: now, or `interval` after the previous slot."""
        now = self._clock()
        slot = max(now, self._next)
        self._next = slot + self.interval  # reserved before any await: no two share a slot
        if slot > now:
            await self._sleep(slot - now)


class PacingInterceptor(Interceptor):
    """Runs every activity of the worker it is given to through one Pacer."""

    def __init__(self, pacer: Pacer) -> None:
        self.pacer = pacer

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _PacedActivity(next, self.pacer)


class _PacedActivity(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, pacer: Pacer) -> None:
        super().__init__(next)
        self._pacer = pacer

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        await self._pacer.wait()
        return await super().execute_activity(input)

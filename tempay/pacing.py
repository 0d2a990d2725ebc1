"""Status queries spaced evenly: under TEMPAY_STATUS_QUERY_RATE_CAP per second, no bursts.

The Temporal server caps the status-query task queue's dispatch rate for every worker
together (`max_task_queue_activities_per_second`), but its limiter is a token bucket: after a
quiet moment it lets a burst through, so a provider could see up to about twice the cap in
one wall-clock second. Each worker process therefore also spaces the query activities it
runs evenly before they call the provider (a leaky bucket, burst 1).

Both run at `paced_rate(cap)`, HEADROOM (90%) of the cap. Between the pacer's slot and the
provider's clock lie the activity's own work, HTTP and two busy processes' scheduling, and
that delay varies: spaced exactly 1/cap apart, queries arrived up to 52 in one wall-clock
second under a cap of 50 (measured, `tempay bench --pending`). At 90%, a second at the
provider holds more than the cap only if those delays vary by more than about 0.1 s.
One worker then stays under the cap in every second; several stay under it as a
sustained rate."""

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

HEADROOM = 0.9


def paced_rate(cap: float) -> float:
    """Status queries per second that the workers aim for, to keep the provider under `cap`."""
    return cap * HEADROOM


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

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
sustained rate.

The gap is counted from when the previous query was actually let through, not from a slot
planned in advance. Planned slots fall due together when the worker's event loop stalls
(a busy process replaying histories), and every caller whose slot passed during the stall
would wake at once: at 10,000 waiting payments the provider saw 53 in one second under a
cap of 50 that way (`tempay bench --pending`, 29 Nov). Counted from the actual release, a
stall only delays the queue."""

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
    """Lets callers through one at a time, first come first served, each at least `1/rate`
    seconds after the previous one was let through (read from the clock, not planned)."""

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
        self._last = float("-inf")
        # asyncio.Lock wakes its waiters in arrival order. A caller cancelled while it
        # waits (its payment was notified meanwhile) leaves the queue and uses no slot.
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        """Return when `interval` has passed since the previous caller was let through."""
        async with self._lock:
            now = self._clock()
            due = self._last + self.interval
            if now < due:
                await self._sleep(due - now)
            self._last = self._clock()


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

"""The bare baselines the benchmarks compare against.

`BareSettlementWorkflow` with no input is `tempay bench --payments`'s baseline: the same
count of activities, updates and signals as a payment (create at the provider,
notification, merchant event), with empty bodies and no provider, webhook or signature.
Given `BareFeatures`, it also asks of Temporal what a payment asks beyond that (search
attributes, status updates, a status-query timer, payment-sized payloads) or does it the
way a payment does (its two activities as local activities), one at a time or together:
`tempay bench --payments N --breakdown` measures what each costs or saves.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow

from workflows.local_first import ONE_ATTEMPT

with workflow.unsafe.imports_passed_through():
    from tempay import search_attributes as sa
    from tempay.domain import TransactionStatus

ACTIVITY_TIMEOUT = timedelta(seconds=30)


@dataclass(frozen=True)
class BareFeatures:
    """What a payment asks of Temporal beyond the baseline. search_attributes: the four
    custom ones, set by the starter as tempay's starters set a payment's;
    status_upserts: PaymentStatus set when the first activity is done and again when the
    signal comes, as a payment goes PENDING and then SUCCEEDED; status_timer: a timer
    started with the wait and cancelled by the signal (the status-query fallback);
    payload_bytes: every input, result, update and signal this many bytes, and each
    activity and timer with a summary; local_activities: both activities run as local
    activities, as a payment's provider create and first merchant delivery do
    (workflows/local_first.py)."""

    search_attributes: bool = False
    status_upserts: bool = False
    status_timer: bool = False
    payload_bytes: int = 0
    local_activities: bool = False


@activity.defn(name="bare_activity")
async def bare_activity(body: str = "") -> str:
    return body


@workflow.defn
class BareSettlementWorkflow:
    def __init__(self) -> None:
        self._started = False
        self._signalled = False

    @workflow.run
    async def run(self, features: BareFeatures | None = None) -> str:
        f = features or BareFeatures()
        body = "x" * f.payload_bytes
        await self._activity(f, body, "first activity")
        if f.status_upserts:
            workflow.upsert_search_attributes(
                [sa.PAYMENT_STATUS.value_set(str(TransactionStatus.PENDING))]
            )
        timer = None
        if f.status_timer:
            summary = "timer" if body else None
            timer = asyncio.ensure_future(workflow.sleep(timedelta(minutes=1), summary=summary))
        self._started = True
        await workflow.wait_condition(lambda: self._signalled)
        if timer is not None:
            timer.cancel()
        if f.status_upserts:
            workflow.upsert_search_attributes(
                [sa.PAYMENT_STATUS.value_set(str(TransactionStatus.SUCCEEDED))]
            )
        await self._activity(f, body, "second activity")
        return body if body else "done"

    async def _activity(self, f: BareFeatures, body: str, summary: str) -> None:
        if f.local_activities:
            await workflow.execute_local_activity(
                bare_activity,
                body,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ONE_ATTEMPT,
                summary=summary if body else None,
            )
        elif body:
            await workflow.execute_activity(
                bare_activity, body, start_to_close_timeout=ACTIVITY_TIMEOUT, summary=summary
            )
        else:
            await workflow.execute_activity(bare_activity, start_to_close_timeout=ACTIVITY_TIMEOUT)

    @workflow.update
    async def checkout(self, body: str = "") -> str:
        await workflow.wait_condition(lambda: self._started)
        return body

    @workflow.signal
    def notify(self, body: str = "") -> None:
        self._signalled = True


@workflow.defn
class BareListenerWorkflow:
    """The webhook benchmark's baseline: a workflow taking many signals, each as small as a
    notification's observation, until told to stop."""

    def __init__(self) -> None:
        self._received = 0
        self._stop = False

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self._stop)
        return self._received

    @workflow.signal
    def notify(self, payload: dict[str, str]) -> None:
        self._received += 1

    @workflow.signal
    def stop(self) -> None:
        self._stop = True

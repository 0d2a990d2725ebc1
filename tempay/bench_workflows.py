"""The bare baseline the benchmark compares against: the same count of activities, updates
and signals as a payment (create at the provider, notification, merchant event), with
empty bodies and no provider, webhook or signature."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="bare_activity")
async def bare_activity() -> str:
    return ""


@workflow.defn
class BareSettlementWorkflow:
    def __init__(self) -> None:
        self._started = False
        self._signalled = False

    @workflow.run
    async def run(self) -> str:
        await workflow.execute_activity(bare_activity, start_to_close_timeout=timedelta(seconds=30))
        self._started = True
        await workflow.wait_condition(lambda: self._signalled)
        await workflow.execute_activity(bare_activity, start_to_close_timeout=timedelta(seconds=30))
        return "done"

    @workflow.update
    async def checkout(self) -> str:
        await workflow.wait_condition(lambda: self._started)
        return ""

    @workflow.signal
    def notify(self) -> None:
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

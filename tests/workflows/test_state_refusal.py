"""A status change outside the table fails the workflow task (retried, visible to an
operator) and changes nothing, as in SettlesByProvider._set_status (workflows/settling.py),
the one function that changes a payment's, refund's or withdrawal's status, only through
next_status."""

from __future__ import annotations

import asyncio
import uuid

from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tempay import search_attributes as sa
from tempay.domain import TransactionKind, TransactionStatus
from workflows.states import PAYMENT, next_status


@workflow.defn(sandboxed=False)
class MovesStatus:
    """A payment's status and nothing else: each `move` signal asks the table, then
    publishes the status as the real workflows do."""

    def __init__(self) -> None:
        self._status = PAYMENT.initial

    @workflow.run
    async def run(self) -> TransactionStatus:
        await workflow.wait_condition(lambda: False)
        return self._status

    @workflow.signal
    def move(self, new: TransactionStatus) -> None:
        self._status = next_status(TransactionKind.PAYMENT, self._status, new)
        workflow.upsert_search_attributes([sa.PAYMENT_STATUS.value_set(str(self._status))])

    @workflow.query
    def status(self) -> TransactionStatus:
        return self._status


async def task_failures(handle: WorkflowHandle) -> list[str]:
    history = await handle.fetch_history()
    return [
        e.workflow_task_failed_event_attributes.failure.message
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]


async def test_a_refused_transition_fails_the_workflow_task_and_changes_nothing(
    refund_env: WorkflowEnvironment,
) -> None:
    # A server of the test's own (tests/workflows/conftest.py): a failed workflow task
    # leaves the time-skipping server unable to skip time for the tests after it.
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    client = refund_env.client
    async with Worker(client, task_queue=task_queue, workflows=[MovesStatus]):
        handle = await client.start_workflow(
            MovesStatus.run, id=f"moves-{uuid.uuid4().hex[:8]}", task_queue=task_queue
        )
        try:
            for allowed in (
                TransactionStatus.PENDING,
                TransactionStatus.SUCCEEDED,
                TransactionStatus.REFUNDED,
            ):
                await handle.signal(MovesStatus.move, allowed)
            assert await handle.query(MovesStatus.status) is TransactionStatus.REFUNDED
            assert await task_failures(handle) == []

            await handle.signal(MovesStatus.move, TransactionStatus.SUCCEEDED)
            failures: list[str] = []
            for _ in range(200):  # the worker fails the task within a moment
                if failures := await task_failures(handle):
                    break
                await asyncio.sleep(0.05)
            assert failures[0] == (
                "a payment cannot go from REFUNDED to SUCCEEDED "
                "(from REFUNDED it can go to: nothing)"
            )
            # The workflow is not failed, only stuck at its last allowed status (its search
            # attribute, as the real workflows keep it, says so): Temporal retries the task.
            description = await handle.describe()
            assert description.status is WorkflowExecutionStatus.RUNNING
            assert description.typed_search_attributes.get(sa.PAYMENT_STATUS) == "REFUNDED"
        finally:
            await handle.terminate("test over")

"""On the real dev server: status queries run on the rate-capped `{task_queue}-status` queue,
creates stay on the main queue, and the worker asks the server for the configured cap."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from temporalio.api.enums.v1 import EventType, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from commands.worker import build_worker
from proof import worker as proof_worker
from proof.load import webhook_load
from providers.sandbox.keys import ensure_keypair, load_private_key
from tempay.domain import PaymentView, SettlementTiming, TransactionStatus
from tempay.pacing import PacingInterceptor
from tests.support.stack import Stack, running_stack, start_payment
from workflows.payment import PaymentWorkflow

pytestmark = pytest.mark.e2e

CAP = 2.0


@pytest.fixture(scope="module")
async def stack(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    task_queue = f"tq-load-{uuid.uuid4().hex[:8]}"
    async with running_stack(
        dev_env.client,
        tmp_path_factory.mktemp("load"),
        task_queue,
        settings_overrides={"status_query_rate_cap": CAP},
        # webhook_load signals the baseline listeners too, as `tempay bench` does.
        worker_extras=(proof_worker.WORKFLOWS, proof_worker.ACTIVITIES),
    ) as s:
        yield s


async def scheduled_activities(handle: WorkflowHandle[Any, Any]) -> list[tuple[str, str]]:
    """(activity type, task queue) of every ActivityTaskScheduled event in the history."""
    history = await handle.fetch_history()
    return [
        (
            event.activity_task_scheduled_event_attributes.activity_type.name,
            event.activity_task_scheduled_event_attributes.task_queue.name,
        )
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


async def asked_once(handle: WorkflowHandle[PaymentWorkflow, PaymentView]) -> bool:
    """Whether the provider has answered at least one status query, and the workflow waits
    for the next: a poll whose first attempt is done (it is on attempt 2 or later), or, for
    inputs that query one by one, a query answered and the next one scheduled."""
    view = await handle.query(PaymentWorkflow.details)
    if view.status_queries < 1:
        return False
    if view.polling_since is None:
        return view.next_status_query_at is not None
    pending = (await handle.describe()).raw_description.pending_activities
    return any(p.activity_type.name == "poll_payment" and p.attempt >= 2 for p in pending)


async def queried_then_paid(
    stack: Stack, order_id: str, timing: SettlementTiming | None
) -> WorkflowHandle[PaymentWorkflow, PaymentView]:
    """A payment whose provider is asked at least once before the payer pays."""
    handle, _ = await start_payment(stack.client, stack.settings, order_id, timing=timing)
    for _ in range(300):
        if await asked_once(handle):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("no status query was made")
    async with httpx.AsyncClient(timeout=10) as http:
        paid = await http.post(f"{stack.sandbox_url}/sandbox/payments/{order_id}/pay", json={})
        paid.raise_for_status()
    view = await asyncio.wait_for(handle.result(), timeout=60)
    assert view.status is TransactionStatus.SUCCEEDED
    return handle


async def test_status_worker_is_configured_with_the_cap(stack: Stack) -> None:
    # A second worker on the stack's own queues is refused by the SDK: build one elsewhere.
    settings = stack.settings.model_copy(
        update={"task_queue": f"tq-config-{uuid.uuid4().hex[:8]}", "status_query_rate_cap": 7.5}
    )
    workers = build_worker(stack.client, settings, {})
    main, status = workers.main.config(), workers.status.config()
    assert main["task_queue"] == settings.task_queue
    assert main.get("max_task_queue_activities_per_second") is None
    assert main["max_cached_workflows"] == settings.worker_max_cached_workflows == 500
    assert status["task_queue"] == f"{settings.task_queue}-status"
    assert status["max_task_queue_activities_per_second"] == pytest.approx(7.5 * 0.9)
    assert [type(i).__name__ for i in status["interceptors"]] == ["PacingInterceptor"]
    pacing = status["interceptors"][0]
    assert isinstance(pacing, PacingInterceptor)
    assert pacing.pacer.interval == pytest.approx(1 / (7.5 * 0.9))
    assert not status.get("workflows")
    names = {a.__temporal_activity_definition.name for a in status["activities"]}  # type: ignore[attr-defined]
    assert names == {"query_payment", "poll_payment", "query_refund", "query_transfer"}


async def test_running_status_worker_polls_with_the_cap(stack: Stack) -> None:
    """The server sees the paced rate (90% of the cap): the status queue's pollers report it."""
    queue = TaskQueue(name=f"{stack.settings.task_queue}-status")
    for _ in range(100):
        described = await stack.client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=stack.client.namespace,
                task_queue=queue,
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            )
        )
        if described.pollers:
            break
        await asyncio.sleep(0.1)
    assert described.pollers
    rates = [poller.rate_per_second for poller in described.pollers]
    assert rates == pytest.approx([CAP * 0.9] * len(rates))


async def test_status_queries_run_on_the_status_queue(stack: Stack) -> None:
    order_id = f"load-{uuid.uuid4().hex[:10]}"
    handle = await queried_then_paid(stack, order_id, timing=None)
    scheduled = await scheduled_activities(handle)
    main, status = stack.settings.task_queue, f"{stack.settings.task_queue}-status"
    # The create is a local activity, run by the main worker in a workflow task.
    assert "create_payment" not in {name for name, _ in scheduled}
    asking = ("query_payment", "poll_payment")
    queries = [queue for name, queue in scheduled if name in asking]
    assert ("poll_payment", status) in scheduled and set(queries) == {status}
    assert all(queue == main for name, queue in scheduled if name not in asking)
    async with httpx.AsyncClient(timeout=10) as http:
        stats = (await http.get(f"{stack.sandbox_url}/sandbox/stats")).json()
    assert stats["status_queries"]["total"] >= len(queries)


async def test_inputs_without_a_status_queue_query_on_the_main_queue(stack: Stack) -> None:
    """Workflows started before the field existed keep working: their queries stay put."""
    timing = SettlementTiming(
        first_status_query_delay=timedelta(seconds=1),
        status_query_backoff_cap=timedelta(seconds=2),
        refund_window=timedelta(0),
    )
    assert timing.status_query_task_queue is None
    handle = await queried_then_paid(stack, f"load-{uuid.uuid4().hex[:10]}", timing)
    asking = ("query_payment", "poll_payment")
    queries = [q for name, q in await scheduled_activities(handle) if name in asking]
    assert queries and set(queries) == {stack.settings.task_queue}


async def test_webhook_load_at_tiny_size(stack: Stack) -> None:
    private_path, _ = ensure_keypair(stack.sandbox_settings.directory)
    async with httpx.AsyncClient(timeout=30) as http:
        figures = await webhook_load(
            stack.client,
            stack.settings,
            http,
            load_private_key(private_path),
            rate=5,
            duration=3,
            pool=3,
        )
    assert figures["notifications"] == 15 and figures["signals"] == 15
    assert figures["non_2xx"] == 0 and figures["statuses"] == {200: 15}
    assert figures["signal_errors"] == 0 and figures["signals_received"] == 15
    for key in ("ack", "signal"):
        assert 0 < figures[f"{key}_p50_ms"] <= figures[f"{key}_p99_ms"] <= figures[f"{key}_max_ms"]
    assert figures["p99_ratio"] == figures["ack_p99_ms"] / figures["signal_p99_ms"]

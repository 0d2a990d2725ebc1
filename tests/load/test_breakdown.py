"""`tempay bench --breakdown`'s workflows on the real dev server: the baseline is exactly as
it was (no input, no bodies, nothing but its activities, update and signal), and each
feature puts into history what a payment's history holds. No timings."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from commands.worker import WORKFLOW_RUNNER
from proof.baseline_workflows import BareFeatures, BareSettlementWorkflow, bare_activity
from proof.bench import ALL_STEPS, Bench, CpuMeter, breakdown_phases, breakdown_table
from tempay import search_attributes as sa
from tempay.settings import Settings

pytestmark = pytest.mark.e2e

E = EventType


async def run_bare(
    client: Client, task_queue: str, features: BareFeatures | None
) -> WorkflowHistory:
    settings = Settings(task_queue=task_queue)
    async with (
        httpx.AsyncClient() as http,
        Worker(
            client,
            task_queue=task_queue,
            workflows=[BareSettlementWorkflow],
            activities=[bare_activity],
            workflow_runner=WORKFLOW_RUNNER,
        ),
    ):
        bench = Bench(client, settings, http)
        await bench.bare(0, "t", features)
        return await client.get_workflow_handle(f"bare-{bench.run_id}-t-0").fetch_history()


def kinds(history: WorkflowHistory) -> Counter[int]:
    return Counter(event.event_type for event in history.events)


async def test_the_baseline_has_no_bodies_and_no_extras(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    history = await run_bare(dev_env.client, task_queue, None)
    events = kinds(history)
    assert events[E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED] == 2
    assert events[E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED] == 1
    assert events[E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED] == 1
    for extra in (E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES, E.EVENT_TYPE_TIMER_STARTED):
        assert events[extra] == 0
    started = history.events[0].workflow_execution_started_event_attributes
    assert not started.input.payloads
    assert not started.search_attributes.indexed_fields
    signal = next(
        e for e in history.events if e.event_type == E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    )
    assert not signal.workflow_execution_signaled_event_attributes.input.payloads


async def test_all_four_extras_go_into_history(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    features = BareFeatures(True, True, True, payload_bytes=300)
    history = await run_bare(dev_env.client, task_queue, features)
    events = kinds(history)
    assert events[E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED] == 2
    assert events[E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES] == 2
    assert events[E.EVENT_TYPE_TIMER_STARTED] == 1
    assert events[E.EVENT_TYPE_TIMER_CANCELED] == 1
    started = history.events[0].workflow_execution_started_event_attributes
    assert set(started.search_attributes.indexed_fields) == {key.name for key in sa.ALL}
    statuses = [
        e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields[
            sa.PAYMENT_STATUS.name
        ].data
        for e in history.events
        if e.event_type == E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
    ]
    assert statuses == [b'"PENDING"', b'"SUCCEEDED"']
    inputs = [
        e.activity_task_scheduled_event_attributes.input.payloads[0].data
        for e in history.events
        if e.event_type == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert [len(data) for data in inputs] == [302, 302]  # the JSON string, quotes included
    signal = next(
        e for e in history.events if e.event_type == E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    )
    assert len(signal.workflow_execution_signaled_event_attributes.input.payloads[0].data) == 302


async def test_local_activities_put_markers_where_the_activities_were(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    """As a payment's create and first merchant delivery: no activity task, one workflow
    task fewer for each, and a marker in history instead."""
    history = await run_bare(dev_env.client, task_queue, BareFeatures(local_activities=True))
    baseline = kinds(await run_bare(dev_env.client, task_queue, None))
    events = kinds(history)
    assert events[E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED] == 0
    markers = [
        e.marker_recorded_event_attributes.marker_name
        for e in history.events
        if e.event_type == E.EVENT_TYPE_MARKER_RECORDED
    ]
    assert markers == ["core_local_activity"] * 2
    completed = E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    assert events[completed] < baseline[completed]
    assert events[E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED] == 1


def test_each_step_adds_one_feature_and_the_last_all_of_them() -> None:
    phases = breakdown_phases(512)
    *single, everything = phases.values()
    assert everything == BareFeatures(True, True, True, 512, local_activities=True)
    assert list(phases)[-1] == ALL_STEPS
    for features in single:
        switched = [
            features.search_attributes,
            features.status_upserts,
            features.status_timer,
            features.payload_bytes > 0,
            features.local_activities,
        ]
        assert switched.count(True) == 1
    assert "+ 512-byte payloads" in phases and "+ local activities" in phases


def test_breakdown_table_puts_each_step_beside_the_baseline() -> None:
    cpu = CpuMeter({"temporal": 1, "worker": 2})
    cpu.spent = {
        "payments": {"temporal": 2.0, "worker": 1.0},
        "bare": {"temporal": 1.0, "worker": 0.5},
        ALL_STEPS: {"temporal": 1.8, "worker": 0.6},
    }
    figures = {"payments_per_s": 6.0, "bare_per_s": 10.0, f"{ALL_STEPS}_per_s": 7.5}
    table = breakdown_table(cpu, figures, count=10).splitlines()
    assert table[2].split() == ["bare", "baseline", "10.0", "1.00", "150.0", "100.0", "50.0"]
    assert table[3].split() == ["+", "all", "of", "them", "7.5", "0.75", "240.0", "180.0", "60.0"]
    assert table[4].split() == ["payments", "6.0", "0.60", "300.0", "200.0", "100.0"]
    assert table[-1] == "payments / bare with all of them: 0.80"

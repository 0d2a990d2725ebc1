"""`tempay bench --breakdown`'s workflows on the real dev server: the baseline is exactly as
it was (no input, no bodies, nothing but its activities, update and signal), and each
feature puts into history what a payment's history holds; the book step writes what a
settled payment writes to the book, one row per workflow. No timings."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from book import Book
from book.migrate import upgrade
from commands.worker import WORKFLOW_RUNNER
from proof import worker as proof_worker
from proof.baseline_workflows import BareFeatures, BareSettlementWorkflow, settled_entry
from proof.bench import (
    ALL_STEPS,
    BOOK_STEP,
    Bench,
    CpuMeter,
    breakdown_phases,
    breakdown_table,
)
from tempay import search_attributes as sa
from tempay.domain import PaymentView, TransactionStatus
from tempay.settings import Settings
from tests.support.stack import running_stack

pytestmark = pytest.mark.e2e

E = EventType


@pytest.fixture
def book(tmp_path: Path) -> Iterator[Book]:
    """A SQLite book at the schema, as the bench stack's {data_dir}/tempay.db."""
    book = Book(f"sqlite:///{tmp_path / 'tempay.db'}")
    upgrade(book)
    yield book
    book.close()


async def run_bare(
    client: Client,
    task_queue: str,
    features: BareFeatures | None,
    book: Book | None = None,
    count: int = 1,
) -> WorkflowHistory:
    """`count` bare workflows on a worker with the bench worker's activities (the book's
    bound to `book`; without one, none that writes it); the last one's history."""
    settings = Settings(task_queue=task_queue)
    async with (
        httpx.AsyncClient() as http,
        Worker(
            client,
            task_queue=task_queue,
            workflows=[BareSettlementWorkflow],
            activities=list(
                proof_worker.ACTIVITIES if book is None else proof_worker.activities(book)
            ),
            workflow_runner=WORKFLOW_RUNNER,
        ),
    ):
        bench = Bench(client, settings, http)
        for i in range(count):
            await bench.bare(i, "t", features)
        last = f"bare-{bench.run_id}-t-{count - 1}"
        return await client.get_workflow_handle(last).fetch_history()


def bare_ids(history: WorkflowHistory, count: int) -> list[str]:
    prefix = history.workflow_id.rsplit("-", 1)[0]
    return [f"{prefix}-{i}" for i in range(count)]


def activity_types(history: WorkflowHistory) -> list[str]:
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


def kinds(history: WorkflowHistory) -> Counter[int]:
    return Counter(event.event_type for event in history.events)


async def test_the_baseline_has_no_bodies_and_no_extras(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    history = await run_bare(dev_env.client, task_queue, None)
    events = kinds(history)
    assert activity_types(history) == ["bare_activity", "bare_activity"]
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


async def test_the_book_step_leaves_one_book_row_per_workflow(
    dev_env: WorkflowEnvironment, task_queue: str, book: Book
) -> None:
    """Its second activity writes a settled payment's row and three-entry journal, keyed
    by the bare workflow's id, before its work; the first activity is the baseline's."""
    history = await run_bare(dev_env.client, task_queue, BareFeatures(book_write=True), book, 3)
    assert activity_types(history) == ["bare_activity", "bare_record_then_activity"]
    ids = bare_ids(history, 3)
    assert sorted(row.workflow_id for row in book.rows()) == ids
    for workflow_id in ids:
        row = book.get(workflow_id)
        assert row is not None
        assert (row.kind, row.status, row.provider, row.version) == (
            "payment",
            "SUCCEEDED",
            "sandbox",
            2,
        )
        assert row.settled_amount == row.amount and row.settled_by == "notification"
        assert [c.to_status for c in book.journal(workflow_id)] == [
            TransactionStatus.CREATED,
            TransactionStatus.PENDING,
            TransactionStatus.SUCCEEDED,
        ]


async def test_all_of_them_write_the_book_from_the_local_activity(
    dev_env: WorkflowEnvironment, task_queue: str, book: Book
) -> None:
    features = breakdown_phases(300)[ALL_STEPS]
    history = await run_bare(dev_env.client, task_queue, features, book, 2)
    assert kinds(history)[E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED] == 0
    assert sorted(row.workflow_id for row in book.rows()) == bare_ids(history, 2)
    assert book.count() == {"SUCCEEDED": 2}


async def test_the_book_entry_is_a_bench_payments_field_for_field(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    """settled_entry against what a real bench payment (no refund window) writes at
    settlement: the same fields set, the same journal, and about the same size."""
    async with running_stack(
        dev_env.client,
        tmp_path,
        task_queue,
        settings_overrides={"refund_window": timedelta(0)},
        time_scale=0.001,
    ) as stack:
        async with httpx.AsyncClient(base_url=stack.sandbox_url) as http:
            bench = Bench(stack.client, stack.settings, http)
            await bench.payment(0, "r0p0")  # settled, or it raises
        workflow_id = bench.order(0, "r0p0").workflow_id
        real_book = Book.from_settings(stack.settings)
        try:
            real, journal = real_book.get(workflow_id), real_book.journal(workflow_id)
        finally:
            real_book.close()
    assert real is not None
    ours = settled_entry(f"bare-{bench.run_id}-r0p1-0", journal[0].at, journal[-1].at)
    view = ours.view.model_dump(mode="json")
    assert {k for k, v in view.items() if v} == {k for k, v in real.view.items() if v}
    assert ours.version == real.version
    assert [(c.from_status, c.to_status, c.by) for c in ours.changes] == [
        (c.from_status, c.to_status, c.by) for c in journal
    ]
    real_size = len(PaymentView.model_validate(real.view).model_dump_json())
    assert abs(len(ours.view.model_dump_json()) - real_size) <= 16


def test_each_step_adds_one_feature_and_the_last_all_of_them() -> None:
    phases = breakdown_phases(512)
    *single, everything = phases.values()
    assert everything == BareFeatures(True, True, True, 512, True, book_write=True)
    assert list(phases)[-1] == ALL_STEPS
    for features in single:
        switched = [
            features.search_attributes,
            features.status_upserts,
            features.status_timer,
            features.payload_bytes > 0,
            features.local_activities,
            features.book_write,
        ]
        assert switched.count(True) == 1
    assert "+ 512-byte payloads" in phases and "+ local activities" in phases
    assert phases[BOOK_STEP] == BareFeatures(book_write=True)


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

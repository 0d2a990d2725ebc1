"""Reconciliation for the CLI, /api and `tempay dev`: run a provider's day and read its
report (the workflow: workflows/reconciliation.py), and keep a Temporal Schedule per
provider that runs it daily."""

from __future__ import annotations

import asyncio
from datetime import date

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    WorkflowFailureError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from book import Book
from book import reconciliation as books
from tempay.errors import InvalidInput, TransactionNotFound
from tempay.settings import Settings
from tempay.statements import ReconcileRequest, ReconciliationReport
from workflows.reconciliation import ReconciliationWorkflow, reconciliation_id


class ReconciliationFailed(RuntimeError):
    """The run failed (a statement refused, a provider not enabled): the reason in one line."""


def parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"the date must be YYYY-MM-DD, not {text!r}") from None


async def reconcile(
    client: Client, settings: Settings, book: Book, provider: str, day: date
) -> ReconciliationReport:
    """Run the provider's day (again, if it ran before: nothing that has not changed
    changes) and answer its report from the book. A run of that day already under way is
    joined, not doubled."""
    try:
        await client.execute_workflow(
            ReconciliationWorkflow.run,
            ReconcileRequest(provider=provider, day=day),
            id=reconciliation_id(provider, day),
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"reconcile {provider} {day}",
        )
    except WorkflowFailureError as exc:
        cause: BaseException = exc
        while (deeper := getattr(cause, "cause", None)) is not None:
            cause = deeper  # down to the activity's own error: the reason
        raise ReconciliationFailed(f"reconciling {provider} {day} failed: {cause}") from None
    return await report(book, provider, day)


async def report(book: Book, provider: str, day: date) -> ReconciliationReport:
    found = await asyncio.to_thread(books.report, book, provider, day)
    if found is None:
        raise TransactionNotFound(f"no reconciliation of {provider} for {day}")
    return found


def schedule_id(provider: str) -> str:
    return f"reconcile-{provider}"


async def ensure_schedules(
    client: Client, settings: Settings, providers: dict[str, str]
) -> list[str]:
    """A Schedule per provider (name -> its statement timezone), daily at
    TEMPAY_RECONCILE_AT in that timezone; each run reconciles yesterday and catches up on
    missed days. An existing schedule is left as it is. Answers the ids created."""
    hour, minute = (int(part) for part in settings.reconcile_at.split(":"))
    created = []
    for provider, timezone in providers.items():
        schedule = Schedule(
            action=ScheduleActionStartWorkflow(
                ReconciliationWorkflow.run,
                ReconcileRequest(provider=provider),
                id=f"{schedule_id(provider)}-scheduled",
                task_queue=settings.task_queue,
            ),
            spec=ScheduleSpec(
                calendars=[
                    ScheduleCalendarSpec(
                        hour=[ScheduleRange(hour)],
                        minute=[ScheduleRange(minute)],
                        second=[ScheduleRange(0)],
                    )
                ],
                time_zone_name=timezone,
            ),
            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        )
        try:
            await client.create_schedule(schedule_id(provider), schedule)
        except ScheduleAlreadyRunningError:
            continue
        created.append(schedule_id(provider))
    return created

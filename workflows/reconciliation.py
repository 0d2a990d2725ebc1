"""ReconciliationWorkflow: a provider's statement for one day against the book.

`reconcile-{provider}-{date}` compares the day (one activity, which saves what it finds in
the book), asks the provider about each open transaction the statement shows settled (the
transaction's own workflow queries and settles by the usual path: the statement alone
never settles anything), tells the merchant about each discrepancy a person must decide
(`reconciliation.discrepancy`), and closes the day. Every step is idempotent, so a run
that crashed resumes where Temporal's history says it was, and running a day again
changes nothing that has not changed.

A scheduled run (no day in its input: the Temporal Schedule `reconcile-{provider}` that
`tempay dev` creates) reconciles the provider's yesterday and every day of the week before
it not yet reconciled, each as a child `reconcile-{provider}-{date}`.
"""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.reconciliation import ReconciliationActivities
    from tempay.errors import STATEMENT_REFUSED
    from tempay.statements import (
        AskProvider,
        Comparison,
        DayRequest,
        ReconcileRequest,
    )

COMPARE_TIMEOUT = timedelta(minutes=30)
HEARTBEAT = timedelta(minutes=2)
STEP_TIMEOUT = timedelta(minutes=2)
QUERIES_AT_ONCE = 10
RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    maximum_interval=timedelta(minutes=10),
    non_retryable_error_types=[STATEMENT_REFUSED],
)
# The merchant's endpoint may be down: as for every merchant event, retried for 3 days.
ANNOUNCE_TIMEOUT = timedelta(days=3)
# A heartbeat per event delivered: a worker lost mid-announcement is noticed in 30 s.
ANNOUNCE_HEARTBEAT = timedelta(seconds=30)


def reconciliation_id(provider: str, day: date) -> str:
    return f"reconcile-{provider}-{day.isoformat()}"


@workflow.defn
class ReconciliationWorkflow:
    def __init__(self) -> None:
        self._lines: list[str] = []

    @workflow.run
    async def run(self, request: ReconcileRequest) -> list[Comparison]:
        if request.day is None:
            return await self._scheduled(request.provider)
        return [await self._reconcile(request.provider, request.day)]

    async def _scheduled(self, provider: str) -> list[Comparison]:
        days = await workflow.execute_activity_method(
            ReconciliationActivities.days_to_reconcile,
            provider,
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=RETRY,
            summary="which days to reconcile",
        )
        self._show(f"**{provider}**: reconciling {', '.join(d.isoformat() for d in days)}")
        results = []
        for day in days:
            try:
                results.extend(
                    await workflow.execute_child_workflow(
                        ReconciliationWorkflow.run,
                        ReconcileRequest(provider=provider, day=day),
                        id=reconciliation_id(provider, day),
                        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                    )
                )
            except WorkflowAlreadyStartedError:
                continue  # a run of that day by hand is under way
            except ChildWorkflowError as exc:
                # One day's statement failing (not ready, refused) leaves the others.
                workflow.logger.error("%s %s: %s", provider, day, exc.cause or exc)
        return results

    async def _reconcile(self, provider: str, day: date) -> Comparison:
        request = DayRequest(provider=provider, day=day)
        self._show(f"**{provider} {day}**: comparing the statement with the book")
        comparison = await workflow.execute_activity_method(
            ReconciliationActivities.compare_statement,
            request,
            start_to_close_timeout=COMPARE_TIMEOUT,
            heartbeat_timeout=HEARTBEAT,
            retry_policy=RETRY,
            summary=f"compare {provider}'s statement for {day}",
        )
        counts = comparison.counts
        summary = (
            f"{comparison.statement_lines} statement lines: {counts.matched} matched, "
            f"{counts.missing_in_tempay} missing in tempay, {counts.missing_at_provider} "
            f"missing at the provider, {counts.status_mismatch} status and "
            f"{counts.amount_mismatch} amount mismatches"
        )
        self._show(f"**{provider} {day}**: {summary}")
        asked = 0
        for start in range(0, len(comparison.to_query), QUERIES_AT_ONCE):
            chunk = comparison.to_query[start : start + QUERIES_AT_ONCE]
            await asyncio.gather(
                *(
                    workflow.execute_activity_method(
                        ReconciliationActivities.ask_provider,
                        AskProvider(provider=provider, day=day, workflow_id=workflow_id),
                        start_to_close_timeout=STEP_TIMEOUT,
                        retry_policy=RETRY,
                        summary=f"ask the provider about {workflow_id}",
                    )
                    for workflow_id in chunk
                )
            )
            asked += len(chunk)
            self._show(f"- status queries asked: {asked} of {len(comparison.to_query)}")
        if comparison.to_review:
            self._show(f"- review items: {comparison.to_review}, telling the merchant")
            await workflow.execute_activity_method(
                ReconciliationActivities.announce_discrepancies,
                request,
                start_to_close_timeout=COMPARE_TIMEOUT,
                heartbeat_timeout=ANNOUNCE_HEARTBEAT,
                schedule_to_close_timeout=ANNOUNCE_TIMEOUT,
                retry_policy=RETRY,
                summary="tell the merchant about the discrepancies",
            )
        await workflow.execute_activity_method(
            ReconciliationActivities.finish_reconciliation,
            request,
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=RETRY,
            summary="close the day in the book",
        )
        self._show(f"- done: `tempay reconcile --provider {provider} --date {day}` shows it")
        return comparison

    def _show(self, line: str) -> None:
        """Progress in the Temporal UI (current details); the first line is the summary."""
        self._lines.append(line)
        workflow.set_current_details("\n".join(self._lines))

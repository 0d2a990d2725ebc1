"""Reconciliation's activities: compare a provider's statement for a day with the book, ask
the provider about open transactions the statement shows settled, tell the merchant about
what a person must decide, and close the day (workflows/reconciliation.py runs them).

Each is idempotent, so a retry or a worker killed mid-run repeats nothing that matters:
the comparison is saved in one transaction and upserted by (provider, day, key); a status
query is harmless to repeat; a discrepancy's merchant event has a fixed id and is marked
delivered in the book once its merchant answered 2xx.

A statement that cannot be trusted (malformed, a wrong hash, another merchant's) fails the
comparison for good with the reason, before anything is written: the book is unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.merchant import MerchantActivities
from book import Book
from book import reconciliation as books
from providers.base import ProviderAdapter
from tempay.domain import OperatorAction, payment_workflow_id, refund_workflow_id
from tempay.errors import STATEMENT_REFUSED, ProviderRefused, StatementError
from tempay.statements import (
    AskProvider,
    Comparison,
    DayRequest,
    DiscrepancyEvent,
    DiscrepancyEventData,
    StatementLine,
    StatementLineKind,
    discrepancy_event_id,
    in_batches,
)

log = logging.getLogger("tempay.reconciliation")

DISCREPANCIES = "tempay_reconciliation_discrepancies"
# Answers that mean "no trade that day" rather than "no statement yet".
EMPTY_DAY_CODES = {"NO_STATEMENT_EXIST"}
OPERATOR = "reconciliation"


class ReconciliationActivities:
    def __init__(
        self,
        book: Book,
        adapters: dict[str, ProviderAdapter],
        client: Client,
        merchant: MerchantActivities,
    ) -> None:
        self._book = book
        self._adapters = adapters
        self._client = client
        self._merchant = merchant

    def _adapter(self, provider: str) -> ProviderAdapter:
        adapter = self._adapters.get(provider)
        if adapter is None:
            raise ApplicationError(
                f"provider {provider!r} is not enabled in this worker", non_retryable=True
            )
        if not adapter.offers_statements:
            raise ApplicationError(f"{provider} offers no statements", non_retryable=True)
        return adapter

    @activity.defn(name="days_to_reconcile")
    async def days_to_reconcile(self, provider: str) -> list[date]:
        """The provider's yesterday, and each day of the week before it not yet reconciled
        (a schedule that missed runs catches up)."""
        adapter = self._adapter(provider)
        today = datetime.now(UTC).astimezone(ZoneInfo(adapter.statement_timezone)).date()
        days = [today - timedelta(days=n) for n in range(7, 0, -1)]
        done = await asyncio.to_thread(books.completed_days, self._book, provider, days[0])
        return [d for d in days if d not in done or d == days[-1]]

    @activity.defn(name="compare_statement")
    async def compare_statement(self, request: DayRequest) -> Comparison:
        adapter = self._adapter(request.provider)
        comparer = books.Comparer(
            self._book, request.provider, request.day, adapter.statement_timezone
        )
        try:
            async for batch in in_batches(adapter.statement(request.day), books.BATCH):
                unknown = await asyncio.to_thread(comparer.take, batch)
                for line in unknown:
                    comparer.unknown(line, await self._open_in_temporal(line))
                activity.heartbeat(comparer.lines)
        except StatementError as exc:
            raise ApplicationError(
                f"{request.provider} statement for {request.day}: {exc}",
                type=STATEMENT_REFUSED,
                non_retryable=True,
            ) from None
        except ProviderRefused as exc:
            if exc.code not in EMPTY_DAY_CODES:
                raise ApplicationError(
                    f"{request.provider} has no statement for {request.day}: {exc}",
                    type=STATEMENT_REFUSED,
                    non_retryable=True,
                ) from None
        comparison = await asyncio.to_thread(comparer.finish)
        now = datetime.now(UTC)
        await asyncio.to_thread(
            books.save, self._book, request.provider, request.day, comparison, comparer.found, now
        )
        counter = activity.metric_meter().create_counter(
            DISCREPANCIES, "Discrepancies found by reconciliation, by provider and type"
        )
        for kind, n in comparison.counts.model_dump().items():
            if kind != "matched" and n:
                counter.add(n, {"provider": request.provider, "type": kind})
        log.info(
            "%s %s: %d statement lines, %s",
            request.provider,
            request.day,
            comparison.statement_lines,
            comparison.counts.model_dump(),
        )
        return comparison

    async def _open_in_temporal(self, line: StatementLine) -> str | None:
        """The workflow id of the open transaction a line names, when Temporal has one
        still running (its PENDING may not be in the book yet)."""
        if line.kind is StatementLineKind.REFUND:
            if not line.refund_id:
                return None
            workflow_id = refund_workflow_id(line.refund_id)
        else:
            if not line.order_id:
                return None
            workflow_id = payment_workflow_id(line.order_id)
        try:
            described = await self._client.get_workflow_handle(workflow_id).describe()
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                return None
            raise
        except ValueError:  # not an id tempay could have made
            return None
        return workflow_id if described.status is WorkflowExecutionStatus.RUNNING else None

    @activity.defn(name="ask_provider")
    async def ask_provider(self, request: AskProvider) -> str:
        """Ask the transaction's workflow to query the provider now; what it answered."""
        action = OperatorAction(
            operator=OPERATOR,
            reason=f"{request.provider} statement for {request.day} shows it settled",
        )
        handle = self._client.get_workflow_handle(request.workflow_id)
        try:
            view = await handle.execute_update("force_status_query", action, result_type=dict)
            outcome = f"status query asked: now {view.get('status', '?')}"
        except WorkflowUpdateFailedError as exc:
            outcome = f"status query refused: {exc.cause or exc}"
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND:
                raise
            outcome = "no such workflow"
        await asyncio.to_thread(
            books.set_outcome,
            self._book,
            request.provider,
            request.day,
            request.workflow_id,
            outcome,
        )
        return outcome

    @activity.defn(name="announce_discrepancies")
    async def announce_discrepancies(self, request: DayRequest) -> int:
        """Deliver `reconciliation.discrepancy` for each review item not yet delivered; a
        merchant that does not answer 2xx fails the activity, which Temporal retries (those
        already delivered are not sent again)."""
        items = await asyncio.to_thread(
            books.unannounced, self._book, request.provider, request.day
        )
        for done, item in enumerate(items):
            activity.heartbeat(done)
            event = DiscrepancyEvent(
                id=discrepancy_event_id(request.provider, request.day, item.key),
                created_at=datetime.now(UTC),
                data=DiscrepancyEventData(
                    provider=request.provider, date=request.day, discrepancy=item
                ),
            )
            await self._merchant.deliver(event.id, event.model_dump_json().encode())
            await asyncio.to_thread(
                books.mark_announced,
                self._book,
                request.provider,
                request.day,
                item.key,
                datetime.now(UTC),
            )
        return len(items)

    @activity.defn(name="finish_reconciliation")
    async def finish_reconciliation(self, request: DayRequest) -> None:
        await asyncio.to_thread(
            books.finish, self._book, request.provider, request.day, datetime.now(UTC)
        )

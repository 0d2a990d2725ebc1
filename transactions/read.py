"""Reading transactions: one by id (its workflow's result once closed, else a query), a
filtered list, and counts by status, from Temporal's visibility store."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from book import Book, TransactionRecord
from tempay import search_attributes as sa
from tempay.domain import (
    IN_FLIGHT,
    PaymentView,
    RefundView,
    TransactionStatus,
    WithdrawalView,
    parse_kind,
    parse_status,
    payment_workflow_id,
    refund_workflow_id,
    withdrawal_workflow_id,
)
from tempay.errors import (
    BookUnavailable,
    InvalidInput,
    TemporalUnavailable,
    TransactionNotFound,
    WorkerUnavailable,
)
from workflows.payment import PaymentWorkflow
from workflows.refund import RefundWorkflow
from workflows.withdrawal import WithdrawalWorkflow

M = TypeVar("M", bound=BaseModel)


async def recorded(book: Book | None, workflow_id: str, result_type: type[M]) -> M | None:
    """The transaction as the book last recorded it, marked as the book's answer."""
    if book is None:
        return None
    record = await asyncio.to_thread(book.get, workflow_id)
    if record is None:
        return None
    return result_type.model_validate({**record.view, "source": "book"})


async def _view(
    client: Client,
    workflow_id: str,
    result_type: type[M],
    query: Any,
    what: str,
    book: Book | None,
) -> M:
    """A transaction's view: from Temporal while it holds the workflow (its result once
    completed, else its `details` query); from the book once retention has removed it."""
    handle = client.get_workflow_handle(workflow_id, result_type=result_type)
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            if (found := await recorded(book, workflow_id, result_type)) is not None:
                return found
            raise TransactionNotFound(f"no {what}") from None
        raise
    if description.status is WorkflowExecutionStatus.COMPLETED:
        return await handle.result()
    try:
        return await handle.query(query)
    except RPCError as exc:
        # A query runs on a worker; without one, the server can only say which status.
        status = description.typed_search_attributes.get(sa.PAYMENT_STATUS)
        raise WorkerUnavailable(
            f"{what} is {status or 'running'}, but no worker answered "
            f"for its details ({exc.message}): is `tempay dev` or `tempay worker` running?"
        ) from None


async def payment_view(client: Client, order_id: str, book: Book | None = None) -> PaymentView:
    return await _view(
        client,
        payment_workflow_id(order_id),
        PaymentView,
        PaymentWorkflow.details,
        f"transaction for order {order_id!r}",
        book,
    )


async def withdrawal_view(
    client: Client, withdrawal_id: str, book: Book | None = None
) -> WithdrawalView:
    return await _view(
        client,
        withdrawal_workflow_id(withdrawal_id),
        WithdrawalView,
        WithdrawalWorkflow.details,
        f"withdrawal {withdrawal_id!r}",
        book,
    )


async def refund_view(client: Client, refund_id: str, book: Book | None = None) -> RefundView:
    return await _view(
        client,
        refund_workflow_id(refund_id),
        RefundView,
        RefundWorkflow.details,
        f"refund {refund_id!r}",
        book,
    )


@dataclass(frozen=True)
class TransactionRow:
    order_id: str
    status: str
    kind: str
    provider: str
    workflow_id: str
    created_at: datetime | None = None
    source: str = "book"  # or "temporal"


# A provider filter goes into the visibility query: only names of this form reach it.
PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def parse_provider(name: str) -> str:
    if not PROVIDER_NAME.fullmatch(name):
        raise InvalidInput(
            f"provider {name!r} must be 1-64 characters of letters, digits, '_', '-' or '.'"
        )
    return name


def transactions_query(
    status: str | None = None, kind: str | None = None, provider: str | None = None
) -> str:
    """The visibility query for tempay's transactions, filtered; raises InvalidInput on a
    status, kind or provider that is not one. Every value in it is one of a known set or
    matches PROVIDER_NAME, so nothing a user types can change the query's meaning."""
    clauses = [f"{sa.TRANSACTION_KIND.name} IS NOT NULL"]
    if status is not None:
        status = parse_status(status)
        clauses.append(f"{sa.PAYMENT_STATUS.name} = '{status}'")
    if kind is not None:
        kind = parse_kind(kind)
        clauses.append(f"{sa.TRANSACTION_KIND.name} = '{kind}'")
    if provider is not None:
        clauses.append(f"{sa.PROVIDER.name} = '{parse_provider(provider)}'")
    return " AND ".join(clauses)


def from_temporal_instead(exc: BookUnavailable, what: str) -> str:
    """The warning when a read falls back from the book to Temporal."""
    return f"{exc}; {what} from Temporal instead, which keeps closed ones only for its retention"


def _fallback(warn: Callable[[str], None] | None, exc: BookUnavailable, what: str) -> None:
    if warn is not None:
        warn(from_temporal_instead(exc, what))


def _in_flight_query(status: str | None, kind: str | None, provider: str | None) -> str:
    """Temporal's open transactions not yet settled (IN_FLIGHT), filtered."""
    wanted = [parse_status(status)] if status is not None else [str(s) for s in IN_FLIGHT]
    either = " OR ".join(f"{sa.PAYMENT_STATUS.name} = '{s}'" for s in wanted)
    return (
        f"{transactions_query(None, kind, provider)} AND ExecutionStatus = 'Running' AND ({either})"
    )


def _book_row(record: TransactionRecord) -> TransactionRow:
    return TransactionRow(
        order_id=record.order_id or record.transaction_id,
        status=record.status,
        kind=record.kind,
        provider=record.provider,
        workflow_id=record.workflow_id,
        created_at=record.created_at,
    )


async def _temporal_rows(client: Client, query: str, limit: int | None) -> list[TransactionRow]:
    rows = []
    async for execution in client.list_workflows(query, limit=limit):
        attrs = execution.typed_search_attributes
        rows.append(
            TransactionRow(
                order_id=attrs.get(sa.ORDER_ID) or execution.id,
                status=attrs.get(sa.PAYMENT_STATUS) or "?",
                kind=attrs.get(sa.TRANSACTION_KIND) or "?",
                provider=attrs.get(sa.PROVIDER) or "?",
                workflow_id=execution.id,
                created_at=execution.start_time,
                source="temporal",
            )
        )
    return rows


def _unreachable(exc: RPCError | TemporalUnavailable) -> str:
    message = exc.message if isinstance(exc, RPCError) else str(exc)
    return (
        f"Temporal did not answer ({message}); transactions in flight (CREATED, PENDING) "
        "from the book instead, which holds a payment's PENDING only from its first "
        "status query"
    )


async def list_transactions(
    client: Client | None,
    status: str | None = None,
    limit: int | None = None,
    *,
    kind: str | None = None,
    provider: str | None = None,
    book: Book | None = None,
    warn: Callable[[str], None] | None = None,
) -> AsyncIterator[TransactionRow]:
    """Newest first. As DESIGN.md says of reads, from Temporal while a transaction is open
    and from the book after: transactions in flight (CREATED, PENDING) from Temporal's open
    workflows, settled ones from the book, which holds them after Temporal's retention too.
    When the book cannot be reached, everything from Temporal (`warn` hears why; without a
    `client`, BookUnavailable is raised instead); when Temporal cannot, everything from the
    book. Each row says where it came from."""
    query = transactions_query(status, kind, provider)  # refuses a bad filter first
    if book is None:
        if client is None:
            raise TransactionNotFound("no book to list from, and no Temporal client")
        for row in await _temporal_rows(client, query, limit):
            yield row
        return
    in_flight = status is None or parse_status(status) in IN_FLIGHT
    settled = status is None or not in_flight
    records: list[TransactionRecord] = []
    if settled:
        try:
            records = await asyncio.to_thread(
                book.rows, status, kind, provider, limit, settled_only=True
            )
        except BookUnavailable as exc:
            if client is None:
                raise
            _fallback(warn, exc, "listing")
            for row in await _temporal_rows(client, query, limit):
                yield row
            return
    open_rows: list[TransactionRow] = []
    if in_flight:
        try:
            if client is None:
                raise TemporalUnavailable("no Temporal client")
            open_rows = await _temporal_rows(
                client, _in_flight_query(status, kind, provider), limit
            )
        except (RPCError, TemporalUnavailable) as exc:
            if warn is not None and client is not None:  # without: the caller knows
                warn(_unreachable(exc))
            wanted = [parse_status(status)] if status is not None else [str(s) for s in IN_FLIGHT]
            found = await asyncio.gather(
                *(asyncio.to_thread(book.rows, s, kind, provider, limit) for s in wanted)
            )
            records = [*records, *(r for rs in found for r in rs)]
    rows = heapq.merge(
        open_rows,
        sorted((_book_row(r) for r in records), key=_newest_first),
        key=_newest_first,
    )
    for row in itertools.islice(rows, limit):
        yield row


async def _count_in_flight(
    client: Client | None, statuses: list[str], kind: str | None, provider: str | None
) -> dict[str, int]:
    if not statuses:
        return {}
    if client is None:
        raise TemporalUnavailable("no Temporal client")
    counted = await asyncio.gather(
        *(client.count_workflows(_in_flight_query(s, kind, provider)) for s in statuses)
    )
    return {s: c.count for s, c in zip(statuses, counted, strict=True)}


def _newest_first(row: TransactionRow) -> tuple[float, str]:
    at = row.created_at.timestamp() if row.created_at is not None else 0.0
    return (-at, row.workflow_id)


@dataclass(frozen=True)
class TransactionCounts:
    by_status: dict[str, int]  # in TransactionStatus order, zeros included
    total: int


async def count_transactions(
    client: Client | None,
    status: str | None = None,
    *,
    kind: str | None = None,
    provider: str | None = None,
    book: Book | None = None,
    warn: Callable[[str], None] | None = None,
) -> TransactionCounts:
    """How many transactions are in each status (only `status`, if given): settled ones by
    one grouped query on the book, those in flight (CREATED, PENDING) by Temporal's open
    workflows (from the book with a warning when Temporal does not answer); without a book
    (or when it cannot be reached), all from Temporal's visibility.

    From Temporal: one CountWorkflowExecutions per status, all at once. Temporal's `GROUP BY`
    works only on ExecutionStatus (the dev server and server 1.32 answer "'GROUP BY' clause
    is not supported for search attribute PaymentStatus"). Counts are the visibility
    store's, which trails the workflows by a moment."""
    transactions_query(status, kind, provider)  # refuse bad filters before any query
    statuses = [parse_status(status)] if status is not None else list(TransactionStatus.__members__)
    if book is not None:
        try:
            grouped = await asyncio.to_thread(book.count, status, kind, provider)
        except BookUnavailable as exc:
            if client is None:
                raise
            _fallback(warn, exc, "counting")
        else:
            by_status = {s: grouped.get(s, 0) for s in statuses}
            in_flight = [s for s in statuses if s in IN_FLIGHT]
            try:
                by_status.update(await _count_in_flight(client, in_flight, kind, provider))
            except (RPCError, TemporalUnavailable) as exc:
                if warn is not None and client is not None:  # without: the caller knows
                    warn(_unreachable(exc))
            return TransactionCounts(by_status=by_status, total=sum(by_status.values()))
    if client is None:
        raise TransactionNotFound("no book to count from, and no Temporal client")
    counted = await asyncio.gather(
        *(client.count_workflows(transactions_query(s, kind, provider)) for s in statuses)
    )
    by_status = {s: c.count for s, c in zip(statuses, counted, strict=True)}
    return TransactionCounts(by_status=by_status, total=sum(by_status.values()))

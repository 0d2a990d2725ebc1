"""The book after a fault scenario (issue 20): every transaction the scenario made has exactly
one row whose status is the workflow's final one and what the provider's ground truth says,
whose amounts and provider id are the provider's, whose journal is whole (seq 1..n, each
entry starting where the previous one ended, from the kind's first status to the row's, no
transition written twice), and whose version is the newest write its workflow asked for.

`check_book` compares a real Book with what each transaction must look like
(`BookExpectation`, built by proof/faults.py from the workflows' views and the sandbox's
ground truth); `asked_versions` finds the newest write each workflow asked for by replaying
its history (the local attempts of a write leave no input in the history, so reading the
history is not enough). Both are used by `tempay faults`; tests/faults/test_book_check.py
feeds `check_book` a real SQLite book, whole and damaged.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from temporalio.client import Client, WorkflowHistory
from temporalio.worker import (
    Interceptor,
    Replayer,
    StartActivityInput,
    StartLocalActivityInput,
    UnsandboxedWorkflowRunner,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from book import Book, TransactionRecord
from tempay.domain import (
    BookedEvent,
    BookEntry,
    StatusChange,
    TransactionKind,
    TransactionStatus,
)
from workflows.payment import PaymentWorkflow
from workflows.refund import RefundWorkflow
from workflows.states import PAYMENT, PAYOUT, StateMachine
from workflows.withdrawal import WithdrawalWorkflow

# The activities that write the book, and where their argument holds the BookEntry.
BOOK_WRITES = {"record_transaction", "record_then_notify_merchant"}


@dataclass(frozen=True)
class BookExpectation:
    """What one transaction's row must say. A None field is not checked, except where noted."""

    name: str  # "payment flt-ab12cd-3", as the scenario's other findings name it
    workflow_id: str
    kind: TransactionKind
    status: TransactionStatus | None  # the workflow's final status (its result, or its view)
    truth_status: TransactionStatus | None  # what the provider's ground truth says it must be
    amount: Decimal | None = None  # what was asked
    currency: str | None = None
    # The money the provider moved (paid, refunded, transferred): None when it moved none, and
    # then the row must say none too. Checked only when `money_checked`.
    settled_amount: Decimal | None = None
    money_checked: bool = True
    refunded_amount: Decimal | None = None  # a payment: the provider's successful refunds
    provider_ref: str | None = None  # the provider's own id, where it records one
    settled_at: datetime | None = None  # the workflow's
    settled_by: str | None = None  # the workflow's
    asked_version: int | None = None  # the newest write the workflow asked for


def machine(kind: TransactionKind) -> StateMachine:
    return PAYMENT if kind in (TransactionKind.PAYMENT, TransactionKind.RECHARGE) else PAYOUT


def journal_problems(
    name: str, kind: TransactionKind, status: str, changes: Sequence[StatusChange]
) -> list[str]:
    """A journal must run seq 1..n without gaps or repeats, from the kind's first status
    (written by "create") to the row's `status`, each entry leaving from where the previous
    one arrived, along the kind's state machine, and no transition twice (what a write
    repeated under another seq would leave)."""
    if not changes:
        return [f"{name}: book: no journal"]
    problems: list[str] = []
    seqs = [c.seq for c in changes]
    repeated = sorted(s for s, n in Counter(seqs).items() if n > 1)
    missing = sorted(set(range(1, max(seqs) + 1)) - set(seqs))
    if repeated:
        problems.append(f"{name}: book: journal seq {repeated} written more than once")
    if missing:
        problems.append(f"{name}: book: journal has no seq {missing} (of 1..{max(seqs)})")
    ordered = sorted(changes, key=lambda c: c.seq)
    first, states = ordered[0], machine(kind)
    if (first.from_status, first.to_status, first.by) != (None, states.initial, "create"):
        problems.append(
            f"{name}: book: journal starts {first.from_status} -> {first.to_status} by "
            f"{first.by}, not {states.initial} by create"
        )
    edges = states.edges()
    for previous, change in zip(ordered, ordered[1:], strict=False):
        if change.from_status != previous.to_status:
            problems.append(
                f"{name}: book: journal seq {change.seq} leaves {change.from_status}, "
                f"but seq {previous.seq} arrived at {previous.to_status}"
            )
        elif change.from_status is not None and (change.from_status, change.to_status) not in (
            edges
        ):
            problems.append(
                f"{name}: book: journal seq {change.seq} {change.from_status} -> "
                f"{change.to_status} is not a {states.name} transition"
            )
    transitions = Counter((c.from_status, c.to_status) for c in ordered)
    for (before, after), n in transitions.items():
        if n > 1:
            problems.append(f"{name}: book: journal has {before} -> {after} {n} times")
    if ordered[-1].to_status != status:
        problems.append(
            f"{name}: book: journal ends at {ordered[-1].to_status}, the row says {status}"
        )
    return problems


def _money(value: Decimal | None) -> Decimal:
    return Decimal(0) if value is None else value


def row_problems(expect: BookExpectation, row: TransactionRecord) -> list[str]:
    """The row against the workflow's final state and the provider's ground truth."""
    name, problems = expect.name, []

    def differs(what: str, book: Any, want: Any, whose: str) -> None:
        problems.append(f"{expect.name}: book: {what} {book}, {whose} {want}")

    if row.kind != expect.kind:
        differs("kind", row.kind, expect.kind, "the scenario made a")
    if expect.status is not None and row.status != expect.status:
        differs("status", row.status, expect.status, "the workflow ended")
    if expect.truth_status is not None and row.status != expect.truth_status:
        differs("status", row.status, expect.truth_status, "the provider says")
    if expect.amount is not None and row.amount != expect.amount:
        differs("amount", row.amount, expect.amount, "asked")
    if expect.currency is not None and row.currency != expect.currency:
        differs("currency", row.currency, expect.currency, "asked")
    if expect.money_checked and row.settled_amount != expect.settled_amount:
        differs("settled amount", row.settled_amount, expect.settled_amount, "the provider moved")
    if expect.kind is TransactionKind.PAYMENT and expect.money_checked:
        if _money(row.refunded_amount) != _money(expect.refunded_amount):
            differs("refunded", row.refunded_amount, expect.refunded_amount, "the provider")
        if _money(row.refunding_amount) != 0:
            problems.append(f"{name}: book: {row.refunding_amount} still refunding")
    if expect.provider_ref is not None and row.provider_ref != expect.provider_ref:
        differs("provider id", row.provider_ref, expect.provider_ref, "the provider's is")
    if expect.asked_version is not None and row.version != expect.asked_version:
        if row.version < expect.asked_version:
            problems.append(
                f"{name}: book: holds write {row.version}, the workflow's newest is "
                f"{expect.asked_version} (a write missing, or the row went back)"
            )
        else:
            problems.append(
                f"{name}: book: holds write {row.version}, the workflow asked for "
                f"{expect.asked_version} at most"
            )
    return problems


def settlement_differences(expect: BookExpectation, row: TransactionRecord) -> str | None:
    """How the row's settlement time or path differs from the workflow's, if it does.

    Not a problem, but worth a note: a workflow task that wrote the book and then was lost (its
    worker killed, or Temporal stopped, before the task completed) runs again later, and so
    does its write, at the same version with its own `workflow.now()`. The book keeps the
    first write of a version (book/store.py), so the row holds the lost attempt's time (and
    path, had it settled another way) while status, money and journal are the same."""
    parts = []
    if expect.settled_at is not None and row.settled_at != expect.settled_at:
        if row.settled_at is None:
            parts.append(f"settled at None, the workflow says {expect.settled_at}")
        else:
            seconds = (expect.settled_at - row.settled_at).total_seconds()
            when = "before" if seconds > 0 else "after"
            parts.append(f"settled_at {abs(seconds):.1f} s {when} the workflow's")
    if expect.settled_by is not None and row.settled_by != expect.settled_by:
        parts.append(f"settled by {row.settled_by}, the workflow says {expect.settled_by}")
    return f"{expect.name}: book: " + "; ".join(parts) if parts else None


@dataclass
class BookFindings:
    problems: list[str] = field(default_factory=list)  # each fails the scenario
    # Settlements the book holds as a lost workflow task wrote them (settlement_differences).
    differences: list[str] = field(default_factory=list)


def check_book(
    book: Book, expected: Iterable[BookExpectation], known: Iterable[str] = ()
) -> BookFindings:
    """Every expected transaction's row and journal; then any row of the scenario's that
    nobody expected. `known`: workflow ids the scenario may have made without expecting a row
    (a refund the engine refused), which are then not reported."""
    found = BookFindings()
    problems = found.problems
    expectations = list(expected)
    rows = {r.workflow_id: r for r in book.rows()}
    for expect in expectations:
        row = rows.pop(expect.workflow_id, None)
        if row is None:
            problems.append(f"{expect.name}: book: no row for {expect.workflow_id}")
            continue
        problems += row_problems(expect, row)
        if (difference := settlement_differences(expect, row)) is not None:
            found.differences.append(difference)
        problems += journal_problems(
            expect.name, expect.kind, row.status, book.journal(expect.workflow_id)
        )
    for workflow_id in sorted(set(rows) - set(known)):
        problems.append(f"book: a row for {workflow_id}, which the scenario never made")
    return found


# ---- the newest write each workflow asked for ----------------------------------------------


def _entry(arg: Any) -> BookEntry | None:
    if isinstance(arg, BookEntry):
        return arg
    if isinstance(arg, BookedEvent):
        return arg.entry
    return None


class _WritesSeen(Interceptor):
    """Sees every book write a replayed workflow asks for, local attempts included."""

    def __init__(self) -> None:
        self.asked: dict[str, int] = {}

    def _saw(self, activity: str, args: Sequence[Any]) -> None:
        if activity in BOOK_WRITES and args and (entry := _entry(args[0])) is not None:
            workflow_id = entry.view.workflow_id
            self.asked[workflow_id] = max(self.asked.get(workflow_id, 0), entry.version)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        seen = self

        class Outbound(WorkflowOutboundInterceptor):
            def start_activity(self, input: StartActivityInput) -> Any:
                seen._saw(str(input.activity), input.args)
                return super().start_activity(input)

            def start_local_activity(self, input: StartLocalActivityInput) -> Any:
                seen._saw(str(input.activity), input.args)
                return super().start_local_activity(input)

        class Inbound(WorkflowInboundInterceptor):
            def init(self, outbound: WorkflowOutboundInterceptor) -> None:
                super().init(Outbound(outbound))

        return Inbound


class _WorkerNoise(logging.Filter):
    """What replayed workflow code reports that its worker already logged (worker.log): an
    activity's failure that the workflow never awaited, reported when its task is collected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Task exception was never retrieved")


_NOISE = _WorkerNoise()


async def asked_versions(
    client: Client, workflow_ids: Sequence[str], concurrency: int = 16
) -> tuple[dict[str, int], list[str]]:
    """The newest book write (its version) each workflow has asked for so far, by replaying
    its history here; and what could not be replayed (a workflow that is not there, or a
    history that no longer replays), one line each."""
    limit = asyncio.Semaphore(concurrency)
    failures: list[str] = []

    async def history(workflow_id: str) -> WorkflowHistory | None:
        async with limit:
            for attempt in range(10):
                try:
                    return await client.get_workflow_handle(workflow_id).fetch_history()
                except Exception as exc:
                    if attempt == 9:
                        failures.append(f"{workflow_id}: history not read: {exc}")
                    await asyncio.sleep(0.5)
        return None

    histories = [h for h in await asyncio.gather(*map(history, workflow_ids)) if h is not None]
    instance_log = logging.getLogger("temporalio.worker._workflow_instance")
    if _NOISE not in instance_log.filters:
        instance_log.addFilter(_NOISE)
    seen = _WritesSeen()
    replayer = Replayer(
        workflows=[PaymentWorkflow, RefundWorkflow, WithdrawalWorkflow],
        data_converter=client.data_converter,
        interceptors=[seen],
        workflow_runner=UnsandboxedWorkflowRunner(),
    )

    async def each() -> AsyncIterator[WorkflowHistory]:
        for h in histories:
            yield h

    results = await replayer.replay_workflows(each(), raise_on_replay_failure=False)
    by_run = {h.run_id: h.workflow_id for h in histories}
    for run_id, error in results.replay_failures.items():
        failures.append(f"{by_run.get(run_id, run_id)}: history did not replay: {error}")
    return seen.asked, failures

"""A transaction's journal and its writes to the book (book/), shared by every kind.

Every status change (workflows/settling.py `_set_status`) is a journal entry, kept in the
workflow; each change also asks for a book write. One writer runs in the background and
writes the newest state, in order: the row (its view as of that change, `version`
numbering the writes) with the whole journal so far. The write is idempotent and forward
only (book/store.py), so a retried activity, a replay or a worker crash writes nothing
twice and never regresses the row. A merchant event waits for the write of its change
(`written`), so the book holds a settlement before the merchant hears of it; the workflow
ends only once the book holds its last state.

The write is tried once as a local activity, then as a regular activity retried until the
database answers (workflows/local_first.py): while it is down, nothing settles further
out of the book's sight, and nothing is lost.

Which runs write: payments from revision 5 (`BOOK_REVISION`), refunds and withdrawals
from revision 1, from their start and without any marker. Runs started before the book
existed write from their next status change on: each such write asks its own patch id
(`book-1`, `book-2`, ...), since a patch's answer is fixed for the whole run by the first
time it is asked, and their history replays the changes made before the upgrade without a
write. The journal is rebuilt on replay from every change, so their first write carries
all of it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows.local_first import try_locally

with workflow.unsafe.imports_passed_through():
    from activities.book import BookActivities
    from tempay.domain import (
        BookEntry,
        PaymentView,
        RefundView,
        StatusChange,
        TransactionStatus,
        WithdrawalView,
    )

ATTEMPT_TIMEOUT = timedelta(seconds=10)
# Until the database answers: every 1 s, doubling to a minute.
BOOK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1)
)


class BookWriter:
    """The journal of one transaction, and its writes to the book."""

    def __init__(self, writes: bool, created_at: datetime) -> None:
        # False: a run from before the book; it asks a patch per write (see the module).
        self._writes_from_start = writes
        self._created_at = created_at
        self.journal: list[StatusChange] = []
        self.version = 0  # writes asked for
        self.written = 0  # writes the book holds
        self._writer: asyncio.Task[None] | None = None
        self._pending: BookEntry | None = None
        self._held = False  # the pending write waits for flush() (see `write`)
        self._carried: BookEntry | None = None  # being written by a merchant delivery

    def begin(self, status: TransactionStatus) -> None:
        """The journal's first entry: the status the transaction starts in."""
        if not self.journal:
            self.journal.append(
                StatusChange(seq=1, to_status=status, at=workflow.now(), by="create")
            )

    def change(
        self,
        view: PaymentView | RefundView | WithdrawalView,
        before: TransactionStatus | None,
        after: TransactionStatus,
        by: str,
        operator: str | None = None,
        reason: str | None = None,
        hold: bool = False,
    ) -> None:
        """Journal a status change and have the book take it (`hold`: see `write`)."""
        self.journal.append(
            StatusChange(
                seq=len(self.journal) + 1,
                from_status=before,
                to_status=after,
                at=workflow.now(),
                by=by,
                operator=operator,
                reason=reason,
            )
        )
        self.write(view, hold=hold)

    def write(self, view: PaymentView | RefundView | WithdrawalView, hold: bool = False) -> None:
        """Have the book take `view` as it is now (and the journal so far). With `hold`, the
        write waits until `flush()` or a later write, which carries it: a payment's PENDING
        is written when its first status query is due, unless it settles first."""
        if not (self._writes_from_start or workflow.patched(f"book-{self.version + 1}")):
            return
        self.version += 1
        entry = BookEntry(
            version=self.version,
            at=workflow.now(),
            created_at=self._created_at,
            view=view.model_copy(deep=True),
            changes=list(self.journal),
        )
        self._pending = entry
        self._held = hold
        if not hold:
            self.flush()

    def flush(self) -> None:
        """Start writing a held write (nothing when none is waiting)."""
        self._held = False
        if self.written < self.version and (self._writer is None or self._writer.done()):
            self._writer = asyncio.ensure_future(self._write_newest())

    def carry(self) -> BookEntry | None:
        """The newest write, if not yet written, for a merchant delivery to take with it
        (workflows/merchant.py): the writer leaves it alone until `carried` or `release`."""
        entry = self._pending
        if entry is None or self._carried is not None or self.written >= entry.version:
            return None
        self._carried, self._held = entry, False
        return entry

    def carried(self, entry: BookEntry) -> None:
        """The delivery's activity wrote `entry`."""
        self._carried = None
        self.written = max(self.written, entry.version)

    def release(self, entry: BookEntry) -> None:
        """The delivery could not say whether it wrote `entry`: the writer writes it."""
        self._carried = None
        self.flush()

    async def _write_newest(self) -> None:
        while self.written < self.version and self._pending is not None:
            entry = self._pending  # the newest: it carries everything the older ones did
            if entry is self._carried:
                await workflow.wait_condition(lambda: self._carried is None)
                continue
            await _record(entry)
            self.written = max(self.written, entry.version)

    def is_written(self, version: int) -> bool:
        return self.written >= version

    async def written_up_to(self, version: int) -> None:
        await workflow.wait_condition(lambda: self.written >= version)

    @property
    def held(self) -> bool:
        return self._held and self.written < self.version

    @property
    def done(self) -> bool:
        return self.written >= self.version


async def _record(entry: BookEntry) -> None:
    written = await try_locally(
        BookActivities.record_transaction,
        entry,
        start_to_close_timeout=ATTEMPT_TIMEOUT,
        summary="write the book",
    )
    if written is None:  # the local attempt failed: retried as an activity until it answers
        await workflow.execute_activity_method(
            BookActivities.record_transaction,
            entry,
            start_to_close_timeout=ATTEMPT_TIMEOUT,
            retry_policy=BOOK_RETRY,
            summary="write the book",
        )


def book_lines(book: BookWriter) -> list[str]:
    """The book's progress, as a line of the current details."""
    if book.version == 0:
        return []
    if book.held:
        return ["- book: written when the first status query is due, or at settlement"]
    if book.done:
        return [f"- book: written ({book.written} write" + ("s" if book.written > 1 else "") + ")"]
    return [f"- book: write {book.version} pending (the database may be down; retried)"]

"""Refunds and transfers finish asynchronously, as at a real provider.

A refund or transfer is accepted as *_PROCESSING with a persisted `complete_at`; one task
finishes each when it is due (REFUND_SUCCESS, TRANSFER_SUCCESS or TRANSFER_FAILED) and
enqueues its notification in the same transaction. A restart picks up where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from providers.sandbox.notifier import IDLE_POLL_SECONDS, Notifier, utc_iso
from providers.sandbox.store import (
    REFUND_SUCCESS,
    TRANSFER_FAILED,
    TRANSFER_SUCCESS,
    SandboxStore,
    Transfer,
)

log = logging.getLogger(__name__)

# A payee account starting with this does not exist: the transfer fails.
INVALID_PAYEE_PREFIX = "invalid"


def transfer_outcome(transfer: Transfer) -> tuple[str, str | None]:
    """The transfer's final status and, when it failed, why."""
    if transfer.payee_account.lower().startswith(INVALID_PAYEE_PREFIX):
        return TRANSFER_FAILED, f"PAYEE_NOT_EXIST: no account {transfer.payee_account!r}"
    return TRANSFER_SUCCESS, None


class Processor:
    def __init__(self, store: SandboxStore, notifier: Notifier) -> None:
        self._store = store
        self._notifier = notifier
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="sandbox-processor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def wake(self) -> None:
        """Call from the event loop after accepting a refund or transfer."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                self.finish_due(time.time())
                timeout = self._idle_timeout()
            except Exception:
                log.exception("sandbox processor: could not finish due refunds and transfers")
                timeout = IDLE_POLL_SECONDS
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def finish_due(self, now: float) -> None:
        finished = False
        finished_at = utc_iso(datetime.now(UTC))
        for refund in self._store.due_refunds(now):
            self._store.finish_refund(
                refund.out_request_no,
                status=REFUND_SUCCESS,
                finished_at=finished_at,
                deliveries=self._notifier.plan(),
            )
            finished = True
        for transfer in self._store.due_transfers(now):
            status, fail_reason = transfer_outcome(transfer)
            self._store.finish_transfer(
                transfer.out_biz_no,
                status=status,
                fail_reason=fail_reason,
                finished_at=finished_at,
                deliveries=self._notifier.plan(),
            )
            finished = True
        if finished:
            self._notifier.wake()
            self._wake.set()  # there may be more than one batch due

    def _idle_timeout(self) -> float:
        next_at = self._store.next_completion_at()
        if next_at is None:
            return IDLE_POLL_SECONDS
        return min(max(next_at - time.time(), 0.0), IDLE_POLL_SECONDS)

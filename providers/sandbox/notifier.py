"""Signed notifications (trades, refunds, transfers), retried on Alipay's schedule until the
merchant says `success`.

Each status change that notifies (pay, decline, a refund or transfer finishing) enqueues its
deliveries (persisted in the store, with faults drawn once at
enqueue time). A scheduler task hands due deliveries to `delivery_concurrency` workers; an
event wakes it on enqueue, so a fresh notification goes out within milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
import uuid
from datetime import UTC, datetime
from typing import Literal

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from providers.sandbox.settings import Faults, SandboxSettings
from providers.sandbox.signature import SIGNATURE_HEADER, sign_body
from providers.sandbox.store import (
    Delivery,
    PlannedDelivery,
    Refund,
    SandboxStore,
    Trade,
    Transfer,
)

log = logging.getLogger(__name__)

# Fault draws come from here: seed it (`notifier.rng.seed(n)`) for a reproducible run.
rng = random.Random()

# Alipay's schedule: after a failed attempt, wait this long (times time_scale) and try again.
RETRY_DELAYS_SECONDS: tuple[float, ...] = (
    4 * 60,
    10 * 60,
    10 * 60,
    60 * 60,
    2 * 60 * 60,
    6 * 60 * 60,
    15 * 60 * 60,
)
ACKNOWLEDGEMENT = "success"
# Upper bound on an idle sleep: the store may get due work the event did not announce.
IDLE_POLL_SECONDS = 1.0

NotificationMode = Literal["normal", "drop", "duplicate"]


def utc_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def notification_body(delivery: Delivery, trade: Trade, notify_time: datetime) -> bytes:
    """The raw body that is signed and sent: compact JSON, UTF-8."""
    payload = {
        "notify_id": delivery.notify_id,
        "notify_time": utc_iso(notify_time),
        "notify_type": "trade_status_sync",
        "out_trade_no": trade.out_trade_no,
        "trade_no": trade.trade_no,
        "trade_status": delivery.status,
        "total_amount": trade.amount,
        "receipt_amount": trade.paid_amount,
        "currency": trade.paid_currency or trade.currency,
        "gmt_payment": trade.paid_at,
    }
    return _encode(payload)


def refund_notification_body(delivery: Delivery, refund: Refund, notify_time: datetime) -> bytes:
    payload = {
        "notify_id": delivery.notify_id,
        "notify_time": utc_iso(notify_time),
        "notify_type": "refund_status_sync",
        "out_trade_no": refund.out_trade_no,
        "trade_no": refund.trade_no,
        "out_request_no": refund.out_request_no,
        "refund_no": refund.refund_no,
        "refund_status": delivery.status,
        "refund_amount": refund.amount,
        "currency": refund.currency,
        "gmt_refund": refund.finished_at,
    }
    return _encode(payload)


def transfer_notification_body(
    delivery: Delivery, transfer: Transfer, notify_time: datetime
) -> bytes:
    payload = {
        "notify_id": delivery.notify_id,
        "notify_time": utc_iso(notify_time),
        "notify_type": "transfer_status_sync",
        "out_biz_no": transfer.out_biz_no,
        "transfer_no": transfer.transfer_no,
        "transfer_status": delivery.status,
        "amount": transfer.amount,
        "currency": transfer.currency,
        "fail_reason": transfer.fail_reason,
        "gmt_finish": transfer.finished_at,
    }
    return _encode(payload)


def _encode(payload: dict[str, str | None]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def is_acknowledged(response: httpx.Response) -> bool:
    return response.status_code == 200 and response.text.strip() == ACKNOWLEDGEMENT


class Notifier:
    def __init__(
        self,
        store: SandboxStore,
        settings: SandboxSettings,
        faults: Faults,
        private_key: rsa.RSAPrivateKey,
    ) -> None:
        self._store = store
        self._settings = settings
        self._faults = faults
        self._private_key = private_key
        self._wake = asyncio.Event()
        # Deliveries handed to a worker and not finished: the scheduler skips them.
        self._in_flight: set[int] = set()
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # Enqueueing

    def plan(self, mode: NotificationMode = "normal") -> list[PlannedDelivery]:
        """The deliveries for one notification, with this moment's faults drawn."""
        faults = self._faults
        notify_id = uuid.uuid4().hex
        dropped = mode == "drop" or (mode == "normal" and rng.random() < faults.drop_rate)
        if dropped:
            return [PlannedDelivery(notify_id, next_attempt_at=None, dropped=True)]
        duplicated = mode == "duplicate" or (
            mode == "normal" and rng.random() < faults.duplicate_rate
        )
        return [
            PlannedDelivery(notify_id, next_attempt_at=self._first_attempt_at())
            for _ in range(2 if duplicated else 1)
        ]

    def _first_attempt_at(self) -> float:
        hold = rng.uniform(0, self._faults.reorder_window) if self._faults.reorder_window else 0
        return time.time() + self._faults.delay_seconds + hold

    def wake(self) -> None:
        """Call after committing new deliveries, so they go out now rather than next poll."""
        loop = self._loop
        if loop is None:
            return  # not started: the loop reads the store when it starts
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:  # asyncio.Event is not thread-safe
            loop.call_soon_threadsafe(self._wake.set)

    # Lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        # One SSL context for all workers: building one per client costs ~0.1 s each.
        ssl_context = httpx.create_ssl_context()
        self._tasks = [asyncio.create_task(self._schedule(), name="sandbox-notifier")]
        self._tasks += [
            asyncio.create_task(self._work(ssl_context), name=f"sandbox-notifier-{n}")
            for n in range(self._settings.delivery_concurrency)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        # An interrupted attempt is not recorded, so it is simply retried after a restart.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._in_flight.clear()

    # The delivery loop: one scheduler hands due deliveries to a fixed set of workers.

    async def _schedule(self) -> None:
        while True:
            self._wake.clear()
            try:
                self._hand_out_due_deliveries()
                timeout = self._idle_timeout()
            except Exception:
                # A store hiccup must not end deliveries for good: log and try again soon.
                log.exception("sandbox notifier: could not read due deliveries")
                timeout = IDLE_POLL_SECONDS
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _hand_out_due_deliveries(self) -> None:
        free = self._settings.delivery_concurrency - len(self._in_flight)
        if free <= 0:
            return
        due = self._store.due_deliveries(time.time(), exclude=self._in_flight, limit=free)
        for delivery in due:
            self._in_flight.add(delivery.id)
            self._queue.put_nowait(delivery)

    def _idle_timeout(self) -> float:
        if len(self._in_flight) >= self._settings.delivery_concurrency:
            return IDLE_POLL_SECONDS  # a finishing delivery wakes us earlier
        next_at = self._store.next_attempt_at(exclude=self._in_flight)
        if next_at is None:
            return IDLE_POLL_SECONDS
        return min(max(next_at - time.time(), 0.0), IDLE_POLL_SECONDS)

    async def _work(self, ssl_context: ssl.SSLContext) -> None:
        # A client per worker, one connection each: httpx's shared pool costs CPU that grows
        # with the number of concurrent requests, and benchmarks push many through here.
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        timeout = self._settings.delivery_timeout
        async with httpx.AsyncClient(timeout=timeout, limits=limits, verify=ssl_context) as client:
            while True:
                delivery = await self._queue.get()
                try:
                    await self._deliver(client, delivery)
                finally:
                    self._in_flight.discard(delivery.id)
                    # A worker is free, and the delivery may have a new next attempt.
                    self._wake.set()

    async def _deliver(self, client: httpx.AsyncClient, delivery: Delivery) -> None:
        try:
            response_status, error = await self._attempt(client, delivery)
        except Exception as exc:  # never let one delivery take the loop down
            log.exception("sandbox notifier: delivery %s failed unexpectedly", delivery.id)
            response_status, error = None, repr(exc)
        delivered = error is None
        self._store.record_attempt(
            delivery.id,
            delivered=delivered,
            response_status=response_status,
            error=error,
            next_attempt_at=None if delivered else self._retry_at(delivery.attempts + 1),
        )

    async def _attempt(
        self, client: httpx.AsyncClient, delivery: Delivery
    ) -> tuple[int | None, str | None]:
        """Send once; return the HTTP status (if any) and the error, None when acknowledged."""
        # Re-stamped and re-signed on every attempt, like Alipay.
        notification = self._notification(delivery, datetime.now(UTC))
        if notification is None:
            return None, f"{delivery.kind} not found"
        notify_url, body = notification
        headers = {
            SIGNATURE_HEADER: sign_body(self._private_key, body),
            "Content-Type": "application/json",
        }
        try:
            response = await client.post(notify_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        if is_acknowledged(response):
            return response.status_code, None
        return response.status_code, f"not acknowledged: {response.text[:200]!r}"

    def _notification(self, delivery: Delivery, now: datetime) -> tuple[str, bytes] | None:
        """Where the notification goes and its body; None when its subject is gone."""
        if delivery.kind == "refund":
            refund = self._store.get_refund(delivery.out_no)
            if refund is None:
                return None
            return refund.notify_url, refund_notification_body(delivery, refund, now)
        if delivery.kind == "transfer":
            transfer = self._store.get_transfer(delivery.out_no)
            if transfer is None:
                return None
            return transfer.notify_url, transfer_notification_body(delivery, transfer, now)
        trade = self._store.get_trade(delivery.out_no)
        if trade is None:
            return None
        return trade.notify_url, notification_body(delivery, trade, now)

    def _retry_at(self, attempts_made: int) -> float | None:
        """When to try again after `attempts_made` attempts failed; None: give up."""
        if attempts_made > len(RETRY_DELAYS_SECONDS):
            return None
        delay = RETRY_DELAYS_SECONDS[attempts_made - 1] * self._settings.time_scale
        return time.time() + delay

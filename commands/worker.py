"""The tempay worker: payment, refund and withdrawal workflows, and the activities that talk to
providers and merchants."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.book import BookActivities
from activities.merchant import MerchantActivities
from activities.payments import PaymentActivities
from activities.reconciliation import ReconciliationActivities
from activities.refunds import RefundActivities
from activities.transfers import TransferActivities
from book import Book
from book.migrate import open_book
from commands.worker_health import WorkerHealth, serving_health
from providers.base import ProviderAdapter
from providers.registry import build_adapters
from tempay.codec import EncryptionCodec
from tempay.pacing import Pacer, PacingInterceptor, paced_rate
from tempay.settings import Settings, get_settings
from tempay.temporal import connect, metrics_address, metrics_runtime
from workflows.payment import PaymentWorkflow
from workflows.reconciliation import ReconciliationWorkflow
from workflows.refund import RefundWorkflow
from workflows.withdrawal import WithdrawalWorkflow

# The sandbox's runtime checks (no clock, randomness, I/O or threads from workflow code) stay
# on; only the per-run re-import of every module a workflow imports is skipped. tempay's
# workflow modules hold no mutable global state, and re-importing them was about a third of
# the worker's CPU per payment (`tempay bench`, docs/benchmarks.md).
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
)

WORKFLOWS = [PaymentWorkflow, RefundWorkflow, WithdrawalWorkflow, ReconciliationWorkflow]


class TempayWorkers:
    """The two workers of a tempay process, run together (`async with`): `main` on the task
    queue (workflows and every activity), `status` on `{task_queue}-status` (the status-query
    activities only), which the server rate-limits to 90% of `TEMPAY_STATUS_QUERY_RATE_CAP`
    per second across every worker polling it."""

    def __init__(self, main: Worker, status: Worker) -> None:
        self.main, self.status = main, status
        self._stack: contextlib.AsyncExitStack | None = None

    @property
    def workers(self) -> tuple[Worker, Worker]:
        return self.main, self.status

    async def __aenter__(self) -> TempayWorkers:
        async with contextlib.AsyncExitStack() as starting:
            await starting.enter_async_context(self.main)
            await starting.enter_async_context(self.status)
            stack = starting.pop_all()
        self._stack = stack
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            # Both stop taking tasks at once and share one grace period (one after the other,
            # the main worker would keep taking tasks while the status worker drained).
            await asyncio.gather(self.main.shutdown(), self.status.shutdown())
            await stack.aclose()


def build_worker(
    client: Client,
    settings: Settings,
    adapters: dict[str, ProviderAdapter],
    extra_workflows: Sequence[type] = (),
    extra_activities: Sequence[Callable[..., Any]] = (),
    book: Book | None = None,
) -> TempayWorkers:
    """tempay's workers; `extra_workflows` and `extra_activities` also run on the main queue
    (the benchmarks' baselines, beside the payments they are compared with: proof/worker.py)."""
    payments = PaymentActivities(adapters)
    refunds = RefundActivities(adapters)
    transfers = TransferActivities(adapters)
    merchant = MerchantActivities(settings)
    # Without a book (some tests), nothing serves the book's activities: the workflows' writes
    # then wait, retried, as they would for a database that is down.
    writes: list[Callable[..., Any]] = []
    if book is not None:
        book_activities = BookActivities(book, merchant)
        reconciling = ReconciliationActivities(book, adapters, client, merchant)
        writes = [
            book_activities.record_transaction,
            book_activities.record_then_notify_merchant,
            reconciling.days_to_reconcile,
            reconciling.compare_statement,
            reconciling.ask_provider,
            reconciling.announce_discrepancies,
            reconciling.finish_reconciliation,
        ]
    queries: list[Callable[..., Any]] = [
        payments.query_payment,
        payments.poll_payment,
        refunds.query_refund,
        transfers.query_transfer,
    ]
    main = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[*WORKFLOWS, *extra_workflows],
        workflow_runner=WORKFLOW_RUNNER,
        max_cached_workflows=settings.worker_max_cached_workflows,
        graceful_shutdown_timeout=settings.worker_shutdown_grace,
        activities=[
            payments.create_payment,
            payments.close_payment,
            refunds.create_refund,
            transfers.create_transfer,
            merchant.notify_merchant,
            *writes,
            *extra_activities,
            # Still here for workflows whose input names no status-query queue (started
            # before it existed): their queries run uncapped on the main queue.
            *queries,
        ],
    )
    # The server's limit holds for every worker together, as a sustained rate; the pacer
    # spaces this process's queries so that its token bucket's bursts never reach the
    # provider. Both aim 10% under the cap, for the jitter on the way (tempay/pacing.py).
    rate = paced_rate(settings.status_query_rate_cap)
    status = Worker(
        client,
        task_queue=settings.status_query_task_queue,
        activities=queries,
        max_task_queue_activities_per_second=rate,
        interceptors=[PacingInterceptor(Pacer(rate))],
        graceful_shutdown_timeout=settings.worker_shutdown_grace,
    )
    return TempayWorkers(main, status)


async def run_worker(
    settings: Settings | None = None,
    extra_workflows: Sequence[type] = (),
    extra_activities: Sequence[Callable[..., Any]] = (),
) -> None:
    # The workflow sandbox re-imports workflow modules for every workflow run: without
    # bytecode caching (PYTHONDONTWRITEBYTECODE) each run recompiles their source.
    sys.dont_write_bytecode = False
    settings = settings or get_settings()
    # The book first: a worker never writes to a schema other than its own (one line says
    # what to run), and never starts without its book.
    book = open_book(settings)
    client = await connect(settings, runtime=metrics_runtime(settings))
    if not isinstance(client.data_converter.payload_codec, EncryptionCodec):
        logging.getLogger("tempay.worker").warning(
            "payloads are NOT encrypted: set TEMPAY_CODEC_KEYS (or run under `tempay dev`, "
            "which creates %s/codec_keys) so history holds no payment data in clear",
            settings.data_dir,
        )
    adapters = build_adapters(settings)
    worker = build_worker(client, settings, adapters, extra_workflows, extra_activities, book)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    logging.getLogger("tempay.worker").info(
        "worker polling task queues %r and %r (status queries paced at %g/s, cap %g/s) on %s",
        settings.task_queue,
        settings.status_query_task_queue,
        paced_rate(settings.status_query_rate_cap),
        settings.status_query_rate_cap,
        client.service_client.config.target_host,
    )
    address = metrics_address(settings)
    logging.getLogger("tempay.worker").info(
        "worker metrics %s", f"at http://{address}/metrics" if address else "off"
    )
    health = WorkerHealth(client, client.namespace, book)  # a profile's, where it names one
    async with serving_health(health, settings) as health_address:
        logging.getLogger("tempay.worker").info(
            "worker health %s", f"at http://{health_address}/readyz" if health_address else "off"
        )
        async with worker:
            health.polling = True
            await stop.wait()
            health.stopping = True
            logging.getLogger("tempay.worker").info(
                "worker stopping: running activities get up to %gs (TEMPAY_WORKER_SHUTDOWN_GRACE)",
                settings.worker_shutdown_grace.total_seconds(),
            )
    for adapter in adapters.values():
        await adapter.aclose()
    book.close()

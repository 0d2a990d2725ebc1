"""The tempay worker: payment, refund and withdrawal workflows, and the activities that talk to
providers and merchants."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from temporalio.client import Client
from temporalio.worker import Worker

from activities.merchant import MerchantActivities
from activities.payments import PaymentActivities
from activities.refunds import RefundActivities
from activities.transfers import TransferActivities
from providers.base import ProviderAdapter
from providers.registry import build_adapters
from tempay.bench_workflows import BareSettlementWorkflow, bare_activity
from tempay.settings import Settings, get_settings
from tempay.temporal import connect, metrics_address, metrics_runtime
from workflows.payment import PaymentWorkflow
from workflows.refund import RefundWorkflow
from workflows.withdrawal import WithdrawalWorkflow

WORKFLOWS = [PaymentWorkflow, RefundWorkflow, WithdrawalWorkflow, BareSettlementWorkflow]


def build_worker(
    client: Client, settings: Settings, adapters: dict[str, ProviderAdapter]
) -> Worker:
    payments = PaymentActivities(adapters)
    refunds = RefundActivities(adapters)
    transfers = TransferActivities(adapters)
    merchant = MerchantActivities(settings)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=WORKFLOWS,
        activities=[
            payments.create_payment,
            payments.query_payment,
            payments.close_payment,
            refunds.create_refund,
            refunds.query_refund,
            transfers.create_transfer,
            transfers.query_transfer,
            merchant.notify_merchant,
            bare_activity,
        ],
    )


async def run_worker(settings: Settings | None = None) -> None:
    # The workflow sandbox re-imports workflow modules for every workflow run: without
    # bytecode caching (PYTHONDONTWRITEBYTECODE) each run recompiles their source.
    sys.dont_write_bytecode = False
    settings = settings or get_settings()
    client = await connect(settings, runtime=metrics_runtime(settings))
    if client.data_converter.payload_codec is None:
        logging.getLogger("tempay.worker").warning(
            "payloads are NOT encrypted: set TEMPAY_CODEC_KEYS (or run under `tempay dev`, "
            "which creates %s/codec_keys) so history holds no payment data in clear",
            settings.data_dir,
        )
    adapters = build_adapters(settings)
    worker = build_worker(client, settings, adapters)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    logging.getLogger("tempay.worker").info(
        "worker polling task queue %r on %s", settings.task_queue, settings.temporal_address
    )
    address = metrics_address(settings)
    logging.getLogger("tempay.worker").info(
        "worker metrics %s", f"at http://{address}/metrics" if address else "off"
    )
    async with worker:
        await stop.wait()
    for adapter in adapters.values():
        await adapter.aclose()

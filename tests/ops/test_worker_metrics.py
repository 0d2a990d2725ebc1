"""The worker's Prometheus endpoint on the real dev server: the SDK's worker metrics and
tempay's settlements and merchant deliveries, counted as the transactions settle."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from commands.dev import free_port, port_in_use
from tempay.domain import TransactionStatus, WithdrawalView
from tempay.errors import MetricsUnavailable
from tempay.settings import Settings
from tempay.statements import ReconcileRequest
from tempay.temporal import metrics_address, metrics_runtime
from tests.support.cli import tempay
from tests.support.stack import Stack, running_stack, start_payment
from tests.support.worker_process import WorkerProcess, worker_env
from transactions import build_withdrawal, start_withdrawal
from transactions.reconcile import reconcile, report
from workflows.reconciliation import ReconciliationWorkflow, reconciliation_id

pytestmark = pytest.mark.e2e

Labels = frozenset[tuple[str, str]]


SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


async def scrape(url: str) -> dict[tuple[str, Labels], float]:
    """The samples of Prometheus's text format, named exactly as exposed (a parser such as
    prometheus_client's would add `_total` to counters' names)."""
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            match = SAMPLE.fullmatch(line)
            assert match, line
            name, labels, value = match.groups()
            samples[(name, frozenset(LABEL.findall(labels or "")))] = float(value)
    return samples


def total(metrics: dict[tuple[str, Labels], float], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in metrics.items() if n == name and want <= ls)


def test_metrics_address_and_off(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert (settings.worker_metrics_host, settings.worker_metrics_port) == ("127.0.0.1", 9464)
    assert metrics_address(settings) == "127.0.0.1:9464"
    off = Settings(data_dir=tmp_path, worker_metrics_port=0)
    assert metrics_address(off) is None and metrics_runtime(off) is None
    v6 = Settings(data_dir=tmp_path, worker_metrics_host="::1", worker_metrics_port=9999)
    assert metrics_address(v6) == "[::1]:9999"


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()
    first = metrics_runtime(Settings(data_dir=tmp_path, worker_metrics_port=port))
    assert first is not None and port_in_use(port)
    with pytest.raises(MetricsUnavailable) as taken:
        metrics_runtime(Settings(data_dir=tmp_path, worker_metrics_port=port))
    assert str(taken.value).startswith(f"cannot serve worker metrics on 127.0.0.1:{port}: ")
    assert "TEMPAY_WORKER_METRICS_PORT" in str(taken.value)
    del first
    gc.collect()
    assert not port_in_use(port)


async def metrics_when_up(url: str, worker: WorkerProcess) -> None:
    for _ in range(300):
        assert worker.process.poll() is None, worker.log.read_text()
        try:
            await scrape(url)
            return
        except httpx.HTTPError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"no metrics at {url}: {worker.log.read_text()}")


async def test_worker_metrics_count_settlements_and_deliveries(
    own_dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = own_dev_env.client
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    run = uuid.uuid4().hex[:6]
    paid, declined, task_queue = f"M-{run}-paid", f"M-{run}-declined", f"tq-metrics-{run}"
    async with running_stack(client, tmp_path, task_queue, worker=False) as stack:
        worker = WorkerProcess(worker_env(stack, port), tmp_path / "worker.log")
        try:
            await metrics_when_up(url, worker)
            # The merchant's application refuses the paid order's first event once.
            stack.merchant.refuse(paid, 1)
            pay, _ = await start_payment(client, stack.settings, paid)
            decline, _ = await start_payment(client, stack.settings, declined)
            async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=10) as sandbox:
                assert (await sandbox.post(f"/sandbox/payments/{paid}/pay", json={})).is_success
                assert (await sandbox.post(f"/sandbox/payments/{declined}/decline")).is_success
            # Each workflow ends once its merchant event is delivered (and, declined, after
            # the late-payment window).
            assert (await pay.result()).status is TransactionStatus.SUCCEEDED
            assert (await decline.result()).status is TransactionStatus.FAILED
            withdrawal = build_withdrawal(
                stack.settings,
                withdrawal_id=f"W-{run}",
                amount="25.00",
                currency="CNY",
                payee_account="payee@example.com",
            )
            await start_withdrawal(client, stack.settings, withdrawal)
            paid_out = client.get_workflow_handle(
                withdrawal.workflow_id, result_type=WithdrawalView
            )
            assert (await paid_out.result()).status is TransactionStatus.SUCCEEDED
            assert len(stack.merchant.events_for(paid)) == 1
            assert len(stack.merchant.events_for(declined)) == 1

            metrics = await scrape(url)
            ours = {"task_queue": task_queue}
            assert total(metrics, "tempay_settlements", kind="payment", status="SUCCEEDED") == 1
            assert total(metrics, "tempay_settlements", kind="payment", status="FAILED") == 1
            assert total(metrics, "tempay_settlements", kind="withdrawal", status="SUCCEEDED") == 1
            assert total(metrics, "tempay_settlements", **ours) == 3
            assert total(metrics, "tempay_settlements", workflow_type="PaymentWorkflow") == 2
            assert total(metrics, "tempay_merchant_deliveries", outcome="delivered", **ours) == 3
            assert total(metrics, "tempay_merchant_deliveries", outcome="failed_attempt") == 1
            assert total(metrics, "tempay_merchant_deliveries", outcome="not_configured") == 0
            # The SDK's own worker metrics, from the same runtime.
            completed = total(
                metrics, "temporal_workflow_completed", workflow_type="PaymentWorkflow", **ours
            )
            assert completed == 2
            # The refused first delivery was the local attempt (workflows/local_first.py);
            # the activity that took over delivered at its first try.
            assert total(metrics, "temporal_local_activity_execution_failed", **ours) == 1
            assert total(metrics, "temporal_activity_execution_failed", **ours) == 0
            assert total(metrics, "temporal_request", operation="RespondWorkflowTaskCompleted") > 0
            assert total(metrics, "temporal_workflow_task_schedule_to_start_latency_count") > 0
        finally:
            assert worker.stop() == 0, worker.log.read_text()
    assert f"worker metrics at {url}" in worker.log.read_text()
    assert not port_in_use(port)


def test_a_worker_whose_metrics_port_is_taken_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPAY_", "TEMPORAL_"))}
        env = {**env, "TEMPAY_DATA_DIR": str(tmp_path), "TEMPAY_WORKER_METRICS_PORT": str(port)}
        assert tempay("db", "upgrade", env=env).returncode == 0  # a worker needs its book
        result = subprocess.run(
            [sys.executable, "-m", "tempay", "worker"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result
    assert result.stderr.strip().splitlines()[-1] == (
        f"tempay: error: cannot serve worker metrics on 127.0.0.1:{port}: Failed starting "
        "Prometheus exporter: Address already in use (os error 98) (set "
        "TEMPAY_WORKER_METRICS_PORT to a free port, or 0 to turn them off)"
    )
    assert "Traceback" not in result.stderr


async def test_a_reconciliation_resumes_after_kill_9_and_counts_what_it_found(
    own_dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """A `tempay worker` killed with SIGKILL while a reconciliation waits on the merchant:
    another worker finishes the same run from its history (the comparison is not run
    again), and the worker's metrics count the discrepancies a run finds."""
    client = own_dev_env.client
    run = uuid.uuid4().hex[:6]
    paid, extra = f"K-{run}-paid", f"K-{run}-extra"
    day = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")).date()
    async with running_stack(
        client, tmp_path, f"tq-rk-{run}", worker=False, statement_extra_trade=extra
    ) as stack:
        first = WorkerProcess(worker_env(stack, free_port()), tmp_path / "worker-1.log")
        second: WorkerProcess | None = None
        try:
            pay, _ = await start_payment(client, stack.settings, paid)
            async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=10) as sandbox:
                assert (await sandbox.post(f"/sandbox/payments/{paid}/pay", json={})).is_success
            await settled_in_book(stack, f"payment-{paid}")
            # The merchant refuses the discrepancy's event: the run waits in its last steps.
            stack.merchant.refuse(extra, 1_000)
            handle = await client.start_workflow(
                ReconciliationWorkflow.run,
                ReconcileRequest(provider="sandbox", day=day),
                id=reconciliation_id("sandbox", day),
                task_queue=stack.settings.task_queue,
            )
            for _ in range(600):
                if stack.merchant.deliveries_for(extra):
                    break
                await asyncio.sleep(0.05)
            assert stack.merchant.deliveries_for(extra), first.log.read_text()[-3000:]
            # Killed mid-attempt (the activity's failure may not have reached Temporal):
            # its heartbeat timeout (30 s) or its retry hands the step to the next worker.
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(10)
            stack.merchant.refusals[extra] = 0  # the merchant is back
            port = free_port()
            second = WorkerProcess(worker_env(stack, port), tmp_path / "worker-2.log")
            [comparison] = await asyncio.wait_for(handle.result(), 120)
            assert comparison.counts.missing_in_tempay == 1
            found = await report(stack.book, "sandbox", day)
            assert found.status == "completed" and found.runs == 1  # compared once
            [item] = [d for d in found.discrepancies if d.order_id == extra]
            assert item.announced
            # Run by hand again, on the second worker: its metrics count what it found.
            url = f"http://127.0.0.1:{port}/metrics"
            await metrics_when_up(url, second)
            await reconcile(client, stack.settings, stack.book, "sandbox", day)
            metrics = await scrape(url)
            found_again = total(
                metrics,
                "tempay_reconciliation_discrepancies",
                provider="sandbox",
                type="missing_in_tempay",
            )
            assert found_again == 1
            assert total(metrics, "tempay_reconciliation_discrepancies", type="matched") == 0
        finally:
            if first.process.poll() is None:
                first.process.kill()
                first.process.wait()
            if second is not None:
                assert second.stop() == 0, second.log.read_text()[-3000:]


async def settled_in_book(stack: Stack, workflow_id: str) -> None:
    for _ in range(300):
        record = await asyncio.to_thread(stack.book.get, workflow_id)
        if record is not None and record.status == "SUCCEEDED":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{workflow_id} never reached the book as SUCCEEDED")

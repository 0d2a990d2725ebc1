"""`tempay bench`: payments settled end to end per second versus bare Temporal, same run.

Both runs share one embedded Temporal (a private `tempay dev` stack in a temporary data
dir, on free ports) and one worker process. A payment: update-with-start (provider create
over HTTP), a scripted pay at the sandbox, the signed notification through the webhook,
settlement. The baseline: the same update-with-start, activity and signal, empty bodies.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy

from commands.dev import Stack, private_settings, private_stack
from proof import worker
from proof.baseline_workflows import BareFeatures, BareSettlementWorkflow
from tempay import search_attributes as sa
from tempay.domain import PaymentOrder, PaymentView, TransactionKind, TransactionStatus
from tempay.errors import InvalidInput
from tempay.settings import Settings
from tempay.temporal import connect
from transactions import build_order, start_payment

ROUNDS = 4
ALL_STEPS = "+ all of them"  # the breakdown's step with every one of the steps before it
BOOK_STEP = "+ book write"  # the breakdown's step writing a settled payment's book entry
BUCKET = re.compile(
    r'^tempay_notification_ack_seconds_bucket\{le="([^"]+)",provider="sandbox"\} (\S+)$', re.M
)


def bench_settings(data_dir: Path) -> Settings:
    # Payments complete at settlement, as the baseline's do (no refund window held open).
    return private_settings(data_dir, refund_window=timedelta(0))


async def ack_buckets(http: httpx.AsyncClient, webhook_url: str) -> dict[float, float]:
    text = (await http.get(f"{webhook_url}/metrics")).text
    return {float(le): float(count) for le, count in BUCKET.findall(text)}


def quantile(buckets: dict[float, float], q: float) -> float:
    """histogram_quantile: linear interpolation inside the bucket holding the q-th value."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total == 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for upper in bounds:
        if buckets[upper] >= rank:
            if upper == float("inf"):
                return lower
            inside = buckets[upper] - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 0)
        lower, below = upper, buckets[upper]
    return lower


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_used(pids: dict[str, int], before: dict[str, float]) -> dict[str, float]:
    return {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}


def stack_pids(stack: Stack) -> dict[str, int]:
    """The stack's processes and this one (the load generator), by name."""
    pids = {c.name: c.process.pid for c in stack.children if c.process is not None}
    return {**pids, "bench": os.getpid()}


class CpuMeter:
    """CPU seconds each process spends inside the measured phases, summed per phase."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.spent: dict[str, dict[str, float]] = {}

    async def measure(self, phase: str, run: Callable[[], Awaitable[float]]) -> float:
        before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        elapsed = await run()
        totals = self.spent.setdefault(phase, dict.fromkeys(self.pids, 0.0))
        for name, used in cpu_used(self.pids, before).items():
            totals[name] += used
        return elapsed


async def run_many(count: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> float:
    """Run `count` transactions, `concurrency` at a time; returns the wall time in seconds."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def lane() -> None:
        while not queue.empty():
            await one(queue.get_nowait())

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return time.perf_counter() - started


class Bench:
    """`http`'s base URL is the sandbox's."""

    def __init__(self, client: Client, settings: Settings, http: httpx.AsyncClient) -> None:
        self.client, self.settings, self.http = client, settings, http
        self.run_id = uuid.uuid4().hex[:6]

    def order(self, i: int, tag: str) -> PaymentOrder:
        return build_order(
            self.settings,
            order_id=f"bench-{self.run_id}-{tag}-{i}",
            amount="10.00",
            currency="CNY",
            subject="bench",
        )

    async def payment(self, i: int, tag: str) -> None:
        order = self.order(i, tag)
        checkout = await start_payment(self.client, self.settings, order)
        paid = await self.http.post(f"/sandbox/payments/{order.order_id}/pay", json={})
        paid.raise_for_status()
        handle = self.client.get_workflow_handle(checkout.workflow_id, result_type=PaymentView)
        view = await handle.result()
        if view.status is not TransactionStatus.SUCCEEDED:
            raise RuntimeError(f"{order.order_id} settled {view.status}")

    async def bare(self, i: int, tag: str, features: BareFeatures | None = None) -> None:
        """A bare workflow; with `features`, asking of Temporal what they name. Without,
        no input, update or signal body at all: the baseline is exactly as it always was."""
        workflow_id = f"bare-{self.run_id}-{tag}-{i}"
        f = features or BareFeatures()
        body = ["x" * f.payload_bytes] if f.payload_bytes else []
        options: dict[str, Any] = {}
        if f.search_attributes:
            options["search_attributes"] = sa.at_start(
                workflow_id, "sandbox", str(TransactionKind.PAYMENT), str(TransactionStatus.CREATED)
            )
        if f.payload_bytes:
            options["static_summary"] = f"bare {workflow_id}"
        start = WithStartWorkflowOperation(
            BareSettlementWorkflow.run,
            args=[features] if features is not None else [],
            id=workflow_id,
            task_queue=self.settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            **options,
        )
        await self.client.execute_update_with_start_workflow(
            BareSettlementWorkflow.checkout, args=body, start_workflow_operation=start
        )
        handle = await start.workflow_handle()
        await handle.signal(BareSettlementWorkflow.notify, args=body)
        await handle.result()


def breakdown_phases(payload_bytes: int) -> dict[str, BareFeatures]:
    """The baseline plus each thing a payment asks of Temporal beyond it, the baseline
    with its activities local as a payment's are, and the baseline writing a settled
    payment's book entry (into the stack's book, as a payment does); then all of them
    together. `payload_bytes`: the size of a bench order's JSON, the payment's typical
    body."""
    return {
        "+ search attributes at start": BareFeatures(search_attributes=True),
        "+ two status upserts": BareFeatures(status_upserts=True),
        "+ status-query timer": BareFeatures(status_timer=True),
        f"+ {payload_bytes}-byte payloads": BareFeatures(payload_bytes=payload_bytes),
        "+ local activities": BareFeatures(local_activities=True),
        BOOK_STEP: BareFeatures(book_write=True),
        ALL_STEPS: BareFeatures(
            search_attributes=True,
            status_upserts=True,
            status_timer=True,
            payload_bytes=payload_bytes,
            local_activities=True,
            book_write=True,
        ),
    }


async def measure(
    payments: int,
    concurrency: int,
    settings: Settings,
    sandbox_url: str,
    cpu: CpuMeter,
    breakdown: bool = False,
) -> dict[str, float]:
    """Payments/s and bare workflows/s (and, with `breakdown`, each of breakdown_phases'
    workflows/s, keyed by phase name), plus the webhook's acknowledgement latency."""
    client = await connect(settings)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=sandbox_url, timeout=30, limits=limits) as http:
        bench = Bench(client, settings, http)
        phases: dict[str, Callable[..., Awaitable[None]]] = {
            "payments": bench.payment,
            "bare": bench.bare,
        }
        if breakdown:
            order_bytes = len(bench.order(0, "size").model_dump_json())
            for name, features in breakdown_phases(order_bytes).items():
                phases[name] = partial(bench.bare, features=features)
        warmup = min(50, payments)
        print(f"warm-up: {warmup} payments and {warmup} bare workflows", flush=True)
        await run_many(warmup, concurrency, lambda i: bench.payment(i, "warm"))
        await run_many(warmup, concurrency, lambda i: bench.bare(i, "warm"))
        for number, name in enumerate(list(phases)[2:]):
            await run_many(10, concurrency, partial(phases[name], tag=f"warm{number}"))

        # Interleave rounds (ABBA order) so drift on this shared machine hits all alike.
        before = await ack_buckets(http, settings.webhook_url)
        elapsed = dict.fromkeys(phases, 0.0)
        for round_no in range(ROUNDS):
            count = payments // ROUNDS + (1 if round_no < payments % ROUNDS else 0)
            order = list(phases) if round_no % 2 == 0 else list(reversed(phases))
            print(
                f"round {round_no + 1}/{ROUNDS}: {count} payments, {count} bare"
                + (f", {count} of each breakdown step" if breakdown else ""),
                flush=True,
            )
            for number, name in enumerate(order):
                one = partial(phases[name], tag=f"r{round_no}p{number}")
                elapsed[name] += await cpu.measure(name, partial(run_many, count, concurrency, one))
        after = await ack_buckets(http, settings.webhook_url)
    delta = {le: after[le] - before.get(le, 0.0) for le in after}
    return {
        **{f"{name}_per_s": payments / seconds for name, seconds in elapsed.items()},
        "ack_p50_ms": quantile(delta, 0.5) * 1000,
        "ack_p99_ms": quantile(delta, 0.99) * 1000,
    }


async def run_bench(payments: int, concurrency: int, breakdown: bool = False) -> int:
    if payments < ROUNDS or concurrency < 1:
        raise InvalidInput(f"--payments must be at least {ROUNDS} and --concurrency at least 1")
    with tempfile.TemporaryDirectory(prefix="tempay-bench-") as tmp:
        settings = bench_settings(Path(tmp))
        env = {"TEMPAY_SANDBOX_TIME_SCALE": "0.001", **worker.ENV}
        stack = private_stack(settings, sandbox_env=env, with_ui=False, worker=worker.ARGV)
        try:
            stack.start()
            await stack.wait_ready()
            print(
                f"tempay bench: {payments} payments, concurrency {concurrency}, "
                f"embedded Temporal (SQLite WAL) in {tmp}",
                flush=True,
            )
            cpu = CpuMeter(stack_pids(stack))
            figures = await measure(
                payments, concurrency, settings, stack.sandbox_url, cpu, breakdown
            )
        finally:
            stack.stop()
    ratio = figures["payments_per_s"] / figures["bare_per_s"]
    print(
        f"payments end to end: {figures['payments_per_s']:.1f}/s\n"
        f"bare Temporal baseline: {figures['bare_per_s']:.1f}/s\n"
        f"webhook ack latency: p50 {figures['ack_p50_ms']:.1f} ms, "
        f"p99 {figures['ack_p99_ms']:.1f} ms\n"
        f"{cpu_per_transaction(cpu, payments)}",
        flush=True,
    )
    if breakdown:
        print(breakdown_table(cpu, figures, payments), flush=True)
    print(f"ratio (payments / baseline): {ratio:.2f}", flush=True)
    return 0


def breakdown_table(cpu: CpuMeter, figures: dict[str, float], count: int) -> str:
    """Each phase's rate and CPU per workflow, next to the baseline's, same rounds."""
    lines = [
        "breakdown (same rounds; CPU ms per workflow: all processes, Temporal, worker):",
        f"  {'':32} {'per s':>6} {'vs bare':>7} {'CPU ms':>7} {'temporal':>8} {'worker':>7}",
    ]
    names = [name for name in cpu.spent if name not in ("payments", "bare")]
    for name in ["bare", *names, "payments"]:
        spent = cpu.spent[name]
        rate = figures[f"{name}_per_s"]
        label = "bare baseline" if name == "bare" else name
        lines.append(
            f"  {label:32} {rate:6.1f} {rate / figures['bare_per_s']:7.2f} "
            f"{sum(spent.values()) / count * 1000:7.1f} "
            f"{spent.get('temporal', 0.0) / count * 1000:8.1f} "
            f"{spent.get('worker', 0.0) / count * 1000:7.1f}"
        )
    same = figures["payments_per_s"] / figures[f"{ALL_STEPS}_per_s"]
    lines.append(f"payments / bare with all of them: {same:.2f}")
    return "\n".join(lines)


def cpu_per_transaction(cpu: CpuMeter, count: int) -> str:
    """Where the time goes: CPU milliseconds per payment and per bare workflow, by process."""
    lines = ["CPU ms per transaction (payments | bare):"]
    for name in cpu.pids:
        pay = cpu.spent["payments"][name] / count * 1000
        bare = cpu.spent["bare"][name] / count * 1000
        lines.append(f"  {name:9} {pay:7.1f} | {bare:7.1f}")
    pay_total = sum(cpu.spent["payments"].values()) / count * 1000
    bare_total = sum(cpu.spent["bare"].values()) / count * 1000
    lines.append(f"  {'total':9} {pay_total:7.1f} | {bare_total:7.1f}")
    return "\n".join(lines)

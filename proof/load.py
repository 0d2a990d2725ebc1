"""Load benchmarks beside `tempay bench`'s throughput ratio:

- webhook (`tempay bench --webhook-rate R --duration S`): signed notifications at a steady R
  per second (open loop: each has a scheduled send time, whether or not earlier ones have
  been answered) against the real webhook, about payments that are PENDING; interleaved in
  the same run, bare `handle.signal(...)` calls at the same rate to a bare workflow.
  Acknowledgement latency p50/p99/max and non-2xx count next to the bare signal's p50/p99.
- waiting at scale (`tempay bench --pending N[,N...]`): N payments waiting at once. The
  worker's peak RSS, the status-query rate the provider sees against the cap, and the time
  for all of them to settle once their notifications arrive. One fresh stack per size.

Latencies are measured from each call's scheduled time, so a client that falls behind
shows up in the figures instead of quietly sending slower (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from temporalio.client import Client, WorkflowHandle

from commands.dev import private_stack
from proof import worker
from proof.baseline_workflows import BareListenerWorkflow
from proof.bench import bench_settings, cpu_seconds, cpu_used, run_many
from providers.sandbox.keys import ensure_keypair, load_private_key
from providers.sandbox.notifier import utc_iso
from providers.sandbox.signature import SIGNATURE_HEADER, sign_body
from tempay.domain import SettlementTiming
from tempay.errors import InvalidInput
from tempay.pacing import paced_rate
from tempay.settings import Settings
from tempay.temporal import connect
from transactions import build_order, settlement_timing, start_payment

SANDBOX_ENV = {"TEMPAY_SANDBOX_TIME_SCALE": "0.001"}


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) by linear interpolation between order statistics (as
    numpy's default); NaN for no samples."""
    if not 0 <= q <= 1:
        raise ValueError(f"quantile {q} is not between 0 and 1")
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    position = q * (len(ordered) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


@dataclass
class Shot:
    """One open-loop call: when it was due, how late it left, how long until answered."""

    index: int
    lag: float  # seconds between its scheduled time and when it was sent
    latency: float  # seconds from its scheduled time to its answer
    ok: bool


async def open_loop(
    rate: float,
    duration: float,
    fire: Callable[[int], Awaitable[bool]],
    offset: float = 0.0,
    clock: Callable[[], float] = time.perf_counter,
) -> list[Shot]:
    """Call `fire(i)` at scheduled times start + offset + i/rate for `duration` seconds,
    each in its own task, never waiting for earlier calls to answer. `fire` returns whether
    the call succeeded (an exception counts as a failure)."""
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    count = round(rate * duration)
    start = clock() + offset

    async def shot(i: int, due: float) -> Shot:
        sent = clock()
        try:
            ok = await fire(i)
        except Exception:  # noqa: BLE001 - any failure of the call is a failed shot
            ok = False
        return Shot(i, max(0.0, sent - due), clock() - due, ok)

    tasks: list[asyncio.Task[Shot]] = []
    for i in range(count):
        due = start + i / rate
        wait = due - clock()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(shot(i, due)))
    return list(await asyncio.gather(*tasks))


def latency_figures(prefix: str, shots: Sequence[Shot]) -> dict[str, float]:
    ms = [s.latency * 1000 for s in shots]
    return {
        f"{prefix}_p50_ms": percentile(ms, 0.5),
        f"{prefix}_p99_ms": percentile(ms, 0.99),
        f"{prefix}_max_ms": max(ms, default=float("nan")),
    }


def pending_timing(settings: Settings, first_query: timedelta) -> SettlementTiming:
    """Payments that wait: first status query after `first_query`, expiry far away."""
    return settlement_timing(settings).model_copy(
        update={
            "first_status_query_delay": first_query,
            "expires_after": timedelta(hours=6),
            "refund_window": timedelta(0),
        }
    )


class Notifications:
    """Signed sandbox notifications, as the sandbox provider sends them."""

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        self.private_key = private_key
        self.run_id = uuid.uuid4().hex[:8]

    def pending(self, i: int, order_id: str, trade_no: str | None) -> tuple[bytes, dict[str, str]]:
        """A fresh 'still waiting for the payer' notification: a real signal to the
        workflow that settles nothing, so one pending payment can take many."""
        payload = {
            "notify_id": f"bench-{self.run_id}-{i}",
            "notify_time": utc_iso(datetime.now(UTC)),
            "notify_type": "trade_status_sync",
            "out_trade_no": order_id,
            "trade_no": trade_no,
            "trade_status": "WAIT_BUYER_PAY",
            "total_amount": "10.00",
            "receipt_amount": None,
            "currency": "CNY",
            "gmt_payment": None,
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {SIGNATURE_HEADER: sign_body(self.private_key, body)}
        headers["Content-Type"] = "application/json"
        return body, headers


async def start_pending(
    client: Client,
    settings: Settings,
    count: int,
    concurrency: int,
    tag: str,
    first_query: timedelta,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[str, str | None]]:
    """Start `count` payments that wait for the payer; returns (order_id, trade_no) each.
    `progress`, if given, is called with the number started so far after each start."""
    timing = pending_timing(settings, first_query)
    started: list[tuple[str, str | None]] = [("", None)] * count
    done = 0

    async def one(i: int) -> None:
        nonlocal done
        order = build_order(
            settings,
            order_id=f"{tag}-{i}",
            amount="10.00",
            currency="CNY",
            subject="bench",
            timing=timing,
        )
        checkout = await start_payment(client, settings, order)
        started[i] = (order.order_id, checkout.provider_trade_no)
        done += 1
        if progress is not None:
            progress(done)

    await run_many(count, concurrency, one)
    return started


async def webhook_load(
    client: Client,
    settings: Settings,
    http: httpx.AsyncClient,
    private_key: rsa.RSAPrivateKey,
    rate: float,
    duration: float,
    pool: int = 100,
) -> dict[str, Any]:
    """Notifications at `rate`/s for `duration` s to `pool` pending payments through the
    webhook, and bare signals at the same rate (half a period later) to `pool` bare
    workflows. Returns the figures as a dict."""
    if rate <= 0 or duration <= 0 or pool < 1:
        raise InvalidInput("--webhook-rate, --duration and the pool must be positive")
    run_id = uuid.uuid4().hex[:6]
    payments = await start_pending(
        client, settings, pool, min(pool, 20), f"wh-{run_id}", timedelta(hours=1)
    )
    bare: list[WorkflowHandle[Any, Any]] = [
        await client.start_workflow(
            BareListenerWorkflow.run,
            id=f"bare-listener-{run_id}-{i}",
            task_queue=settings.task_queue,
        )
        for i in range(pool)
    ]
    signer = Notifications(private_key)
    url = f"{settings.webhook_url.rstrip('/')}/notify/sandbox"
    statuses: dict[int, int] = {}
    # Signed before the clock starts: the provider signs on its own machine, so the RSA
    # work is not taken from the two cores the measured services share with this process.
    signed = [signer.pending(i, *payments[i % pool]) for i in range(round(rate * duration))]

    async def notify(i: int) -> bool:
        body, headers = signed[i]
        response = await http.post(url, content=body, headers=headers)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        return 200 <= response.status_code < 300

    async def signal(i: int) -> bool:
        await bare[i % pool].signal(BareListenerWorkflow.notify, {"notify_id": f"bare-{i}"})
        return True

    began = time.perf_counter()
    notified, signalled = await asyncio.gather(
        open_loop(rate, duration, notify), open_loop(rate, duration, signal, offset=0.5 / rate)
    )
    elapsed = time.perf_counter() - began
    for handle in bare:
        await handle.signal(BareListenerWorkflow.stop)
    received = sum([await handle.result() for handle in bare])
    figures: dict[str, Any] = {
        "rate": rate,
        "duration_s": duration,
        "notifications": len(notified),
        "elapsed_s": elapsed,
        "non_2xx": sum(1 for s in notified if not s.ok),
        "statuses": dict(sorted(statuses.items())),
        "send_lag_max_ms": max((s.lag for s in notified), default=0.0) * 1000,
        **latency_figures("ack", notified),
        "signals": len(signalled),
        "signal_errors": sum(1 for s in signalled if not s.ok),
        "signals_received": received,
        **latency_figures("signal", signalled),
    }
    figures["p99_ratio"] = figures["ack_p99_ms"] / figures["signal_p99_ms"]
    return figures


def print_webhook(f: dict[str, Any]) -> None:
    print(
        f"webhook: {f['notifications']} signed notifications at {f['rate']:g}/s over "
        f"{f['elapsed_s']:.1f} s (send lag max {f['send_lag_max_ms']:.1f} ms)\n"
        f"  ack latency: p50 {f['ack_p50_ms']:.1f} ms, p99 {f['ack_p99_ms']:.1f} ms, "
        f"max {f['ack_max_ms']:.1f} ms; non-2xx or unanswered {f['non_2xx']} "
        f"(statuses {f['statuses']})\n"
        f"bare signal: {f['signals']} calls, p50 {f['signal_p50_ms']:.1f} ms, "
        f"p99 {f['signal_p99_ms']:.1f} ms, max {f['signal_max_ms']:.1f} ms; "
        f"errors {f['signal_errors']}\n"
        f"ratio (ack p99 / bare signal p99): {f['p99_ratio']:.2f}",
        flush=True,
    )


class PrivateStack:
    """`tempay dev`'s processes in a temporary data dir on free ports, for one benchmark."""

    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="tempay-bench-")
        self.settings = bench_settings(Path(self._tmp.name))
        env = {**SANDBOX_ENV, **(extra_env or {})}
        if "TEMPAY_STATUS_QUERY_RATE_CAP" in env:
            cap = float(env["TEMPAY_STATUS_QUERY_RATE_CAP"])
            self.settings = self.settings.model_copy(update={"status_query_rate_cap": cap})
        env.update(worker.ENV)
        self.stack = private_stack(
            self.settings, sandbox_env=env, with_ui=False, worker=worker.ARGV
        )

    async def __aenter__(self) -> PrivateStack:
        try:
            self.stack.start()
            await self.stack.wait_ready()
        except BaseException:
            self.stack.stop()
            self._tmp.cleanup()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stack.stop()
        self._tmp.cleanup()

    @property
    def private_key(self) -> rsa.RSAPrivateKey:
        private_path, _ = ensure_keypair(self.settings.data_dir / "sandbox")
        return load_private_key(private_path)

    @property
    def worker_pid(self) -> int:
        return self.pids()["worker"]

    def pids(self) -> dict[str, int]:
        return {
            child.name: child.process.pid
            for child in self.stack.children
            if child.process is not None
        }


async def run_webhook_bench(rate: float, duration: float, pool: int) -> int:
    if rate <= 0 or duration <= 0 or pool < 1:
        raise InvalidInput("--webhook-rate, --duration and --pool must be positive")
    async with PrivateStack() as private:
        settings = private.settings
        print(
            f"tempay bench (webhook): {rate:g}/s for {duration:g} s to {pool} pending payments "
            f"and {pool} bare workflows; embedded Temporal in {settings.data_dir}",
            flush=True,
        )
        client = await connect(settings)
        limits = httpx.Limits(max_connections=max(100, int(rate * 2)))
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            # Warm-up: connections, the worker's workflow cache, the webhook's client.
            await webhook_load(client, settings, http, private.private_key, min(rate, 20), 2, 5)
            pids = {**private.pids(), "bench": os.getpid()}
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            figures = await webhook_load(
                client, settings, http, private.private_key, rate, duration, pool
            )
            used = cpu_used(pids, before)
    print_webhook(figures)
    # Where the CPU went (both loads together): which process saturates first.
    print(
        "CPU seconds during the run: "
        + ", ".join(f"{name} {seconds:.1f}" for name, seconds in used.items()),
        flush=True,
    )
    return 0


# Waiting at scale


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB: its resident set now, and its peak."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def rate_figures(per_second: Sequence[Sequence[int]], since: float, until: float) -> dict[str, Any]:
    """Status queries the provider saw each second in [since, until]: max, mean (over the
    seconds from the first query to the last), and the busiest 10 s window's mean."""
    counts = {int(second): int(n) for second, n in per_second if since <= second <= until}
    if not counts:
        return {"queries": 0, "max_per_s": 0, "mean_per_s": 0.0, "max_10s_mean": 0.0}
    first, last = min(counts), max(counts)
    series = [counts.get(s, 0) for s in range(first, last + 1)]
    windows = [sum(series[i : i + 10]) / 10 for i in range(max(1, len(series) - 9))]
    return {
        "queries": sum(series),
        "max_per_s": max(series),
        "mean_per_s": sum(series) / len(series),
        "max_10s_mean": max(windows),
        "query_seconds": len(series),
    }


async def count_running(client: Client) -> int:
    result = await client.count_workflows(
        "WorkflowType = 'PaymentWorkflow' AND ExecutionStatus = 'Running'"
    )
    return result.count


async def pay_once(http: httpx.AsyncClient, url: str, retried: list[str]) -> httpx.Response:
    """The payer pays, once: a call lost to a transport error (a connection reset, no
    answer) is asked again, up to 3 times, and noted in `retried`. If the lost call had
    gone through, the repeat finds the trade paid (409, TRADE_SUCCESS): that counts as paid."""
    for attempt in range(4):
        try:
            response = await http.post(url, json={})
        except httpx.TransportError as exc:
            if attempt == 3:
                raise
            retried.append(f"{type(exc).__name__} {exc}".strip())
            await asyncio.sleep(0.5)
            continue
        if attempt and response.status_code == 409:
            if response.json().get("status") == "TRADE_SUCCESS":
                return httpx.Response(200, json=response.json(), request=response.request)
        return response
    raise AssertionError("unreachable")


async def pending_at_scale(
    count: int, concurrency: int, cap: float, first_query: float, query_window: float | None
) -> dict[str, Any]:
    """One size on a fresh stack. Phases: start `count` payments; keep them waiting until
    every one has been queried at least once (or `query_window` s after the last start: by default
    the longest first delay plus what the paced rate needs for `count` queries, plus 30 s); then
    pay each at the sandbox (immediate signed notification) and time until none is running.
    """
    if query_window is None:
        query_window = first_query * 1.2 + count / paced_rate(cap) + 30
    env = {"TEMPAY_STATUS_QUERY_RATE_CAP": str(cap)}
    async with PrivateStack(env) as private:
        settings = private.settings
        client = await connect(settings)
        pid = private.worker_pid
        pids = private.pids()
        cpu_before = {name: cpu_seconds(p) for name, p in pids.items()}
        peak = {"rss": rss_kib(pid)[0]}
        stop_sampling = asyncio.Event()

        async def sample() -> None:
            while not stop_sampling.is_set():
                peak["rss"] = max(peak["rss"], rss_kib(pid)[0])
                try:
                    await asyncio.wait_for(stop_sampling.wait(), 0.5)
                except TimeoutError:
                    pass

        sampler = asyncio.create_task(sample())
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            stats_url = f"{private.stack.sandbox_url}/sandbox/stats"
            began = time.time()
            print(f"  {count}: starting payments", flush=True)
            last = [0, began]

            def progress(done: int) -> None:
                # Every 1,000 starts: when, and the start rate since the previous line (it
                # drops once the first status queries, due after --first-query s, compete).
                if done % 1000 == 0 and done < count:
                    now = time.time()
                    rate = (done - last[0]) / (now - last[1])
                    print(
                        f"  {count}: {done} started at {now - began:.0f} s ({rate:.1f}/s)",
                        flush=True,
                    )
                    last[:] = [done, now]

            orders = await start_pending(
                client, settings, count, concurrency, f"wait-{uuid.uuid4().hex[:6]}",
                timedelta(seconds=first_query), progress,
            )  # fmt: skip
            started_s = time.time() - began
            print(f"  {count}: started in {started_s:.1f} s; awaiting status queries", flush=True)
            deadline = time.time() + query_window
            while True:  # `asked`: payments queried at least once, when paying begins
                asked = (await http.get(stats_url)).json()["status_queries"]["distinct"]
                if asked >= count or time.time() >= deadline:
                    break
                await asyncio.sleep(1)
            waited_until = time.time()
            running_before = await count_running(client)

            print(f"  {count}: paying all at the sandbox", flush=True)
            settle_began = time.perf_counter()

            retried: list[str] = []

            async def pay(i: int) -> None:
                url = f"{private.stack.sandbox_url}/sandbox/payments/{orders[i][0]}/pay"
                response = await pay_once(http, url, retried)
                response.raise_for_status()

            paid_s = await run_many(count, concurrency, pay)
            if retried:
                print(
                    f"  {count}: {len(retried)} pay calls retried after a transport error "
                    f"(first: {retried[0]})",
                    flush=True,
                )
            while (running := await count_running(client)) > 0:
                if time.perf_counter() - settle_began > 1800:
                    raise RuntimeError(f"{running} payments still running after 30 min")
                await asyncio.sleep(0.5)
            settle_s = time.perf_counter() - settle_began
            stats = (await http.get(stats_url)).json()["status_queries"]
            ended = time.time()
        stop_sampling.set()
        await sampler
        hwm = rss_kib(pid)[1]
        cpu = cpu_used(pids, cpu_before)
    rates = rate_figures(stats["per_second"], began, ended)
    return {
        "pending": count,
        "waiting_before_pay": running_before,
        "asked_before_pay": asked,
        "start_s": started_s,
        "wait_s": waited_until - began,
        "peak_rss_mb": max(peak["rss"], hwm) / 1024,
        "cap_per_s": cap,
        **rates,
        "pay_calls_s": paid_s,
        "settle_s": settle_s,
        # CPU seconds over the whole run: which process the waiting costs.
        "worker_cpu_s": cpu.get("worker", 0.0),
        "temporal_cpu_s": cpu.get("temporal", 0.0),
    }


TABLE = (
    ("pending", "{:}", "pending"),
    ("peak RSS MB", "{:.0f}", "peak_rss_mb"),
    ("queries", "{:}", "queries"),
    ("asked", "{:}", "asked_before_pay"),
    ("max q/s", "{:}", "max_per_s"),
    ("max 10s q/s", "{:.1f}", "max_10s_mean"),
    ("mean q/s", "{:.1f}", "mean_per_s"),
    ("cap q/s", "{:g}", "cap_per_s"),
    ("start s", "{:.1f}", "start_s"),
    ("pay calls s", "{:.1f}", "pay_calls_s"),
    ("settle s", "{:.1f}", "settle_s"),
    ("worker CPU s", "{:.0f}", "worker_cpu_s"),
    ("Temporal CPU s", "{:.0f}", "temporal_cpu_s"),
)


def pending_table(rows: Sequence[dict[str, Any]]) -> str:
    header = " | ".join(name for name, _, _ in TABLE)
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = []
        for name, fmt, key in TABLE:
            cells.append(fmt.format(row[key]).rjust(len(name)))
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InvalidInput(f"--pending takes sizes like 1000,5000,10000, not {text!r}") from None
    if not sizes or any(size < 1 for size in sizes):
        raise InvalidInput(f"--pending takes positive sizes like 1000,5000,10000, not {text!r}")
    return sizes


async def run_pending_bench(
    sizes: str,
    concurrency: int,
    cap: float | None,
    first_query: float,
    query_window: float | None,
) -> int:
    counts = parse_sizes(sizes)
    if concurrency < 1 or first_query <= 0 or (query_window is not None and query_window < 0):
        raise InvalidInput("--concurrency, --first-query must be positive, --query-window >= 0")
    if cap is None:
        cap = Settings().status_query_rate_cap
    if not cap > 0:
        raise InvalidInput("--status-cap must be positive")
    print(
        f"tempay bench (pending): sizes {counts}, status-query cap {cap:g}/s, first query "
        f"after {first_query:g} s (+-20%), concurrency {concurrency}; a fresh stack per size",
        flush=True,
    )
    rows = []
    for count in counts:
        rows.append(await pending_at_scale(count, concurrency, cap, first_query, query_window))
        print(pending_table(rows[-1:]), flush=True)
    print(pending_table(rows), flush=True)
    return 0

"""The load benchmarks' pieces at tiny sizes: functional checks only, no timed assertions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from commands.dev import Stack, private_stack
from proof.bench import bench_settings
from proof.load import (
    TABLE,
    Shot,
    latency_figures,
    open_loop,
    parse_sizes,
    pay_once,
    pending_table,
    percentile,
    rate_figures,
)
from providers.sandbox.app import QueryCounter
from tempay.errors import InvalidInput
from tempay.settings import Settings


def test_percentile_interpolates_between_order_statistics() -> None:
    samples = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(samples, 0) == 1.0
    assert percentile(samples, 0.5) == 3.0
    assert percentile(samples, 1) == 5.0
    assert percentile(samples, 0.25) == 2.0
    assert percentile(samples, 0.99) == pytest.approx(4.96)
    assert percentile([7.0], 0.99) == 7.0


def test_percentile_of_nothing_is_nan_and_bad_quantile_refused() -> None:
    assert percentile([], 0.5) != percentile([], 0.5)  # NaN
    with pytest.raises(ValueError):
        percentile([1.0], 1.5)


async def test_open_loop_fires_every_call_without_waiting_for_answers() -> None:
    """No call answers until all have been sent: a closed loop would never get there."""
    count, launched = 12, []
    all_sent = asyncio.Event()

    async def fire(i: int) -> bool:
        launched.append(i)
        if len(launched) == count:
            all_sent.set()
        await all_sent.wait()
        if i == 3:
            raise RuntimeError("a failed call")
        return i != 5

    # The timeout only keeps a broken (closed-loop) scheduler from hanging the test.
    shots = await asyncio.wait_for(open_loop(200, count / 200, fire), timeout=30)
    assert sorted(launched) == list(range(count))
    assert [s.index for s in shots] == list(range(count))
    assert [s.index for s in shots if not s.ok] == [3, 5]
    assert all(s.latency >= s.lag >= 0 for s in shots)


async def test_open_loop_schedules_in_order_with_offset() -> None:
    fired: list[int] = []

    async def fire(i: int) -> bool:
        fired.append(i)
        return True

    shots = await open_loop(100, 0.05, fire, offset=0.01)
    assert fired == [0, 1, 2, 3, 4]
    assert len(shots) == 5
    with pytest.raises(ValueError):
        await open_loop(0, 1, fire)


def test_latency_figures_in_milliseconds() -> None:
    shots = [Shot(i, 0.0, latency, True) for i, latency in enumerate([0.001, 0.002, 0.003])]
    figures = latency_figures("ack", shots)
    assert figures == {"ack_p50_ms": pytest.approx(2.0), "ack_p99_ms": pytest.approx(2.98),
                       "ack_max_ms": pytest.approx(3.0)}  # fmt: skip


def test_rate_figures_count_seconds_between_first_and_last_query() -> None:
    per_second = [[100, 4], [101, 6], [104, 2], [200, 9]]
    figures = rate_figures(per_second, since=100, until=150)
    assert figures["queries"] == 12
    assert figures["max_per_s"] == 6
    assert figures["query_seconds"] == 5  # 100..104, the quiet seconds count too
    assert figures["mean_per_s"] == pytest.approx(12 / 5)
    assert figures["max_10s_mean"] == pytest.approx(1.2)
    assert rate_figures([], 0, 1)["queries"] == 0


def test_pending_table_has_a_row_per_size() -> None:
    row = {key: 1 for _, _, key in TABLE}
    text = pending_table([row | {"pending": 1000}, row | {"pending": 5000}])
    lines = text.splitlines()
    assert lines[0].startswith("pending | peak RSS MB")
    assert len(lines) == 4 and "5000" in lines[3]


def test_sizes_are_validated() -> None:
    assert parse_sizes("1000,5000, 10000") == [1000, 5000, 10000]
    for bad in ("", "ten", "100,-5", "0"):
        with pytest.raises(InvalidInput):
            parse_sizes(bad)


def test_query_counter_counts_per_second() -> None:
    counter = QueryCounter()
    for subject, now in (
        ("payment/a", 10.1),
        ("payment/b", 10.9),
        ("payment/a", 11.0),
        ("refund/a/r1", 13.5),
    ):
        counter.record(subject, now)
    assert counter.as_json() == {
        "total": 4,
        "distinct": 3,
        "per_second": [[10, 2], [11, 1], [13, 1]],
    }


def test_query_counter_keeps_a_bounded_history() -> None:
    counter = QueryCounter()
    for second in range(QueryCounter.KEEP_SECONDS + 5):
        counter.record("payment/a", float(second))
    seconds = [s for s, _ in counter.as_json()["per_second"]]
    assert len(seconds) == QueryCounter.KEEP_SECONDS and seconds[0] == 5
    assert counter.total == QueryCounter.KEEP_SECONDS + 5


def test_status_query_rate_cap_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEMPAY_STATUS_QUERY_RATE_CAP", raising=False)
    assert Settings().status_query_rate_cap == 50
    monkeypatch.setenv("TEMPAY_STATUS_QUERY_RATE_CAP", "2.5")
    monkeypatch.setenv("TEMPAY_TASK_QUEUE", "shop")
    settings = Settings()
    assert settings.status_query_rate_cap == 2.5
    assert settings.status_query_task_queue == "shop-status"
    for bad in ("0", "-1", "fast"):
        monkeypatch.setenv("TEMPAY_STATUS_QUERY_RATE_CAP", bad)
        with pytest.raises(ValueError):
            Settings()


def test_cpu_seconds_of_this_process_grow() -> None:
    import os

    from proof.load import cpu_seconds, cpu_used

    pid = os.getpid()
    before = {"me": cpu_seconds(pid)}
    sum(i * i for i in range(300_000))
    used = cpu_used({"me": pid}, before)
    assert used["me"] >= 0 and set(used) == {"me"}


def test_a_bench_stack_takes_none_of_the_dev_stacks_ports(tmp_path: Path) -> None:
    """A benchmark runs beside `tempay dev`: each of its listening ports is a fresh one."""
    dev, bench = Stack(Settings()), private_stack(bench_settings(tmp_path))

    def ports(stack: Stack) -> dict[str, int]:
        settings = stack.settings
        return {
            "temporal": int(settings.temporal_address.rsplit(":", 1)[1]),
            "ui": settings.temporal_ui_port,
            "webhook": settings.webhook_port,
            "sandbox": stack.sandbox_port,
            "worker metrics": settings.worker_metrics_port,
        }

    taken = set(ports(dev).values())
    assert not {name for name, port in ports(bench).items() if port in taken}
    # ... and its processes are told them: the worker's metrics port, not the default.
    env = bench.env()
    assert env["TEMPAY_WORKER_METRICS_PORT"] == str(bench.settings.worker_metrics_port)
    assert env["TEMPAY_WEBHOOK_PORT"] == str(bench.settings.webhook_port)


async def test_a_pay_call_lost_in_transit_is_asked_again_and_a_repeat_counts_as_paid() -> None:
    calls: list[int] = []

    def provider(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:  # it went through, but the answer was lost
            raise httpx.ReadError("", request=request)
        return httpx.Response(409, json={"code": "TRADE_STATUS_ERROR", "status": "TRADE_SUCCESS"})

    retried: list[str] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(provider)) as http:
        response = await pay_once(http, "http://127.0.0.1:9/sandbox/payments/o/pay", retried)
    assert response.status_code == 200 and len(calls) == 2
    assert retried == ["ReadError"]


async def test_a_pay_call_is_not_retried_on_an_answer_and_gives_up_after_three_retries() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"code": "TRADE_STATUS_ERROR", "status": "TRADE_CLOSED"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(refused)) as http:
        response = await pay_once(http, "http://127.0.0.1:9/p", [])
    assert response.status_code == 409  # a first answer stands: not paid

    def lost(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    retried: list[str] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(lost)) as http:
        with pytest.raises(httpx.ConnectError):
            await pay_once(http, "http://127.0.0.1:9/p", retried)
    assert retried == ["ConnectError refused"] * 3

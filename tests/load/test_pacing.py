"""The status-query pacer: slots at least 1/rate apart, in arrival order, with no burst after
a quiet moment. A fake clock, so nothing here depends on this machine's speed."""

from __future__ import annotations

import asyncio
import time

import pytest

from tempay.pacing import Pacer, paced_rate


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.starts: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds  # only one sleeper at a time in these tests

    async def call(self, pacer: Pacer) -> None:
        await pacer.wait()
        self.starts.append(self.now)


async def test_calls_are_spaced_by_the_interval() -> None:
    fake = FakeTime()
    pacer = Pacer(50, clock=fake.clock, sleep=fake.sleep)
    for _ in range(120):
        await fake.call(pacer)
    gaps = [b - a for a, b in zip(fake.starts, fake.starts[1:], strict=False)]
    assert min(gaps) == pytest.approx(0.02)
    # No wall-clock second holds more than the cap.
    per_second: dict[int, int] = {}
    for start in fake.starts:
        second = int(round(start, 9))  # 100 + 50 x 0.02 is 100.99999999999 in floats
        per_second[second] = per_second.get(second, 0) + 1
    assert max(per_second.values()) <= 50


async def test_no_burst_after_a_quiet_moment() -> None:
    fake = FakeTime()
    pacer = Pacer(10, clock=fake.clock, sleep=fake.sleep)
    await fake.call(pacer)
    fake.now += 60  # quiet for a minute: a token bucket would now let 10 through at once
    for _ in range(3):
        await fake.call(pacer)
    assert fake.starts[1:] == pytest.approx([160.0, 160.1, 160.2])


async def test_concurrent_callers_go_one_interval_apart_in_arrival_order() -> None:
    fake = FakeTime()  # one sleeper at a time holds: callers wait their turn before sleeping
    pacer = Pacer(4, clock=fake.clock, sleep=fake.sleep)
    order: list[int] = []

    async def call(i: int) -> None:
        await fake.call(pacer)
        order.append(i)

    await asyncio.gather(*(call(i) for i in range(5)))
    assert order == [0, 1, 2, 3, 4]
    assert fake.starts == pytest.approx([100.0, 100.25, 100.5, 100.75, 101.0])


async def test_a_stalled_event_loop_releases_no_burst() -> None:
    # A worker busy replaying histories blocks its event loop; slots planned in advance
    # would all fall due during the stall and their callers would wake together. The real
    # clock here, but only as a lower bound: a slower machine makes the gaps longer.
    pacer = Pacer(50)
    released: list[float] = []

    async def call() -> None:
        await pacer.wait()
        released.append(time.monotonic())

    callers = [asyncio.create_task(call()) for _ in range(8)]
    await asyncio.sleep(0.005)  # the first is through, the rest wait their turn
    time.sleep(0.15)  # noqa: ASYNC251 - on purpose: the loop blocks for seven intervals
    await asyncio.gather(*callers)
    gaps = [b - a for a, b in zip(released, released[1:], strict=False)]
    assert len(released) == 8
    assert min(gaps) >= 0.0199


async def test_a_caller_cancelled_while_waiting_uses_no_slot() -> None:
    fake = FakeTime()
    pacer = Pacer(10, clock=fake.clock, sleep=fake.sleep)
    await fake.call(pacer)  # at 100.0: the next may go at 100.1
    blocked = asyncio.Event()

    async def stuck(seconds: float) -> None:
        blocked.set()
        await asyncio.Event().wait()  # a sleep that never ends, until cancelled

    pacer._sleep = stuck
    waiting = asyncio.create_task(pacer.wait())
    await blocked.wait()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    pacer._sleep = fake.sleep
    await fake.call(pacer)  # still due 100.1 after the last caller through, not 100.2
    assert fake.starts == pytest.approx([100.0, 100.1])


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Pacer(0)


def test_workers_aim_under_the_cap() -> None:
    # 10% headroom for the varying delay between a slot and the provider's clock.
    assert paced_rate(50) == pytest.approx(45)
    assert paced_rate(2.5) == pytest.approx(2.25)

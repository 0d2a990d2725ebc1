"""The status-query pacer: slots at least 1/rate apart, in arrival order, with no burst after
a quiet moment. A fake clock, so nothing here depends on this machine's speed."""

from __future__ import annotations

import asyncio

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
    time = FakeTime()
    pacer = Pacer(50, clock=time.clock, sleep=time.sleep)
    for _ in range(120):
        await time.call(pacer)
    gaps = [b - a for a, b in zip(time.starts, time.starts[1:], strict=False)]
    assert min(gaps) == pytest.approx(0.02)
    # No wall-clock second holds more than the cap.
    per_second: dict[int, int] = {}
    for start in time.starts:
        second = int(round(start, 9))  # 100 + 50 x 0.02 is 100.99999999999 in floats
        per_second[second] = per_second.get(second, 0) + 1
    assert max(per_second.values()) <= 50


async def test_no_burst_after_a_quiet_moment() -> None:
    time = FakeTime()
    pacer = Pacer(10, clock=time.clock, sleep=time.sleep)
    await time.call(pacer)
    time.now += 60  # quiet for a minute: a token bucket would now let 10 through at once
    for _ in range(3):
        await time.call(pacer)
    assert time.starts[1:] == pytest.approx([160.0, 160.1, 160.2])


async def test_concurrent_callers_get_distinct_slots_in_arrival_order() -> None:
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    pacer = Pacer(4, clock=lambda: 0.0, sleep=record)
    await asyncio.gather(*(pacer.wait() for _ in range(5)))
    assert slept == pytest.approx([0.25, 0.5, 0.75, 1.0])  # the first goes at once


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Pacer(0)


def test_workers_aim_under_the_cap() -> None:
    # 10% headroom for the varying delay between a slot and the provider's clock.
    assert paced_rate(50) == pytest.approx(45)
    assert paced_rate(2.5) == pytest.approx(2.25)

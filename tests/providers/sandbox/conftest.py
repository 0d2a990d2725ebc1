"""The sandbox tests' merchant receiver: one per test module, like the sandbox it listens to."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.providers.sandbox import Receiver, running_receiver


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as receiver:
        yield receiver

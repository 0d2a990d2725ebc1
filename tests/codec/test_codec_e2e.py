"""End to end on the real dev server: a payment settles on a stack whose every client
encrypts; the raw history holds only ciphertext, and the real `temporal` CLI reads it
through the webhook service's codec endpoint."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from google.protobuf.message import Message
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import History
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tempay.codec import ENCODING
from tempay.domain import PaymentOrder, TransactionStatus
from tempay.temporal import find_binary
from tests.support.stack import Stack, running_stack, start_payment

pytestmark = pytest.mark.e2e

AMOUNT = "4321.09"
TOKEN = "e2e-codec-token"
CLI_TIMEOUT = 30


@pytest.fixture(scope="module")
async def stack(
    codec_client: tuple[Client, str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    client, entry = codec_client
    overrides = {"codec_keys": SecretStr(entry), "codec_auth_token": SecretStr(TOKEN)}
    async with running_stack(
        client,
        tmp_path_factory.mktemp("codec-e2e"),
        f"tq-codec-{uuid.uuid4().hex[:8]}",
        settings_overrides=overrides,
    ) as s:
        yield s


def payloads_in(message: Message, path: str = "") -> Iterator[tuple[str, Payload]]:
    """Every Payload in a proto message, with its field path."""
    if isinstance(message, Payload):
        yield path, message
        return
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        where = f"{path}.{field.name}"
        if field.message_type.GetOptions().map_entry:
            items: Any = value.items()
            for key, item in items:
                if isinstance(item, Message):
                    yield from payloads_in(item, f"{where}[{key}]")
        elif isinstance(value, Message):
            yield from payloads_in(value, where)
        else:
            for i, item in enumerate(value):
                yield from payloads_in(item, f"{where}[{i}]")


def without_ids(history: History) -> History:
    """The history minus what is in clear by design: search attributes (indexed by the
    server; DESIGN.md: status, order id, provider, kind, no secrets) and the workflow id
    (`payment-{order_id}`, the idempotency key)."""
    copy = History()
    copy.CopyFrom(history)
    for event in copy.events:
        kind = event.WhichOneof("attributes")
        assert kind is not None
        attributes = getattr(event, kind)
        for name in ("search_attributes", "workflow_id"):
            if name in attributes.DESCRIPTOR.fields_by_name:
                attributes.ClearField(name)
    return copy


async def cli(*args: str) -> tuple[int, str, str]:
    """The real `temporal` binary, without blocking the loop the webhook service runs on."""
    process = await asyncio.create_subprocess_exec(
        str(find_binary("temporal")),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode or 0, out.decode(), err.decode()


async def test_history_is_encrypted_and_the_cli_decrypts_it_through_the_codec_endpoint(
    stack: Stack, dev_env: WorkflowEnvironment
) -> None:
    order_id = f"codec-{uuid.uuid4().hex[:10]}"
    handle, checkout = await start_payment(stack.client, stack.settings, order_id, amount=AMOUNT)
    async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=10) as sandbox:
        paid = await sandbox.post(f"/sandbox/payments/{order_id}/pay", json={})
        assert paid.status_code == 200, paid.text
    view = await asyncio.wait_for(handle.result(), 15)
    assert view.status is TransactionStatus.SUCCEEDED
    assert str(view.amount) == AMOUNT and view.order_id == order_id

    # The history as the server holds it, read by a client without the codec.
    plain_client = dev_env.client
    assert plain_client.data_converter.payload_codec is None
    raw = await plain_client.get_workflow_handle(handle.id).fetch_history()
    history = History(events=raw.events)
    # The input, activity calls and results, the provider's signal, the update and the result.
    # Left out: search attributes, and the SDK core's own marker data (a patch's id; a
    # local activity's seq, attempt, activity type and times). A local activity's result
    # (the marker's `result`) is a payload like any other and is checked.
    payloads = [
        (where, p)
        for where, p in payloads_in(history)
        if ".search_attributes" not in where
        and "[patch-data]" not in where
        and ".marker_recorded_event_attributes.details[data]." not in where
    ]
    assert len(payloads) >= 6, [where for where, _ in payloads]
    assert any(".details[result]." in where for where, _ in payloads)
    for where, payload in payloads:
        assert payload.metadata["encoding"] == b"binary/encrypted", where
        assert payload.metadata["encryption-key-id"] == b"k-e2e", where
    # The amount is nowhere; the order id only where the design names it in clear.
    assert AMOUNT.encode() not in history.SerializeToString()
    assert order_id.encode() not in without_ids(history).SerializeToString()

    address = stack.client.service_client.config.target_host
    show = ["workflow", "show", "--workflow-id", handle.id, "--address", address]
    show += ["--namespace", stack.client.namespace, "--detailed"]
    endpoint = f"{stack.webhook_url}/codec"
    decrypted = [f"input[0].order_id: {order_id}", f"input[0].amount: {AMOUNT}"]

    # Without the codec the CLI shows ciphertext only.
    code, out, err = await cli(*show)
    assert code == 0, err
    assert "input.payloads[0].metadata.encoding: " + base64.b64encode(ENCODING).decode() in out
    assert AMOUNT not in out and not any(line in out for line in decrypted)

    # Without the token the codec endpoint refuses (the CLI retries it until its timeout)
    # and nothing is decrypted.
    code, out, err = await cli(*show, "--codec-endpoint", endpoint, "--command-timeout", "1s")
    assert code != 0
    assert AMOUNT not in out + err

    code, out, err = await cli(
        *show, "--codec-endpoint", endpoint, "--codec-auth", f"Bearer {TOKEN}"
    )
    assert code == 0, err
    for line in decrypted:
        assert line in out


PAYER_OPENID = f"oPayer{uuid.uuid4().hex[:20]}"
PAYER_IP = "198.51.100.213"


@pytest.mark.parametrize(
    ("channel", "details", "secret"),
    [
        ("wechat_jsapi", {"payer_openid": PAYER_OPENID}, PAYER_OPENID),
        ("wechat_h5", {"payer_client_ip": PAYER_IP}, PAYER_IP),
    ],
)
async def test_payer_details_are_ciphertext_in_history_and_nowhere_else(
    stack: Stack,
    dev_env: WorkflowEnvironment,
    caplog: pytest.LogCaptureFixture,
    channel: str,
    details: dict[str, str],
    secret: str,
) -> None:
    """A payer's openid and IP are personal data: the provider gets them (the sandbox here),
    Temporal holds them only encrypted, and no search attribute, view, merchant event, book
    row or log line of tempay's shows them."""
    caplog.set_level(logging.DEBUG)
    order_id = f"payer-{uuid.uuid4().hex[:10]}"
    handle, checkout = await start_payment(
        stack.client,
        stack.settings,
        order_id,
        channel=channel,
        payer_openid=details.get("payer_openid"),
        payer_client_ip=details.get("payer_client_ip"),
    )
    assert checkout.payer_action is not None
    async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=10) as sandbox:
        paid = await sandbox.post(f"/sandbox/payments/{order_id}/pay", json={})
        assert paid.status_code == 200, paid.text
    view = await asyncio.wait_for(handle.result(), 15)
    assert view.status is TransactionStatus.SUCCEEDED

    # The order in the history carries the detail (for the provider), under encryption.
    started = (await handle.fetch_history()).events[0].workflow_execution_started_event_attributes
    [order] = await stack.client.data_converter.decode(started.input.payloads, [PaymentOrder])
    assert order.payer is not None and secret in (order.payer.openid, order.payer.client_ip)

    plain = dev_env.client.get_workflow_handle(handle.id)
    raw = History(events=(await plain.fetch_history()).events).SerializeToString()
    assert secret.encode() not in raw  # search attributes and memo included
    description = await plain.describe()
    assert secret not in str(description.raw_description)
    assert secret not in view.model_dump_json()
    assert secret not in checkout.model_dump_json()
    events = stack.merchant.events_for(order_id)
    assert events and all(secret not in e.model_dump_json() for e in events)
    record = stack.book.get(handle.id)
    assert record is not None and secret not in json.dumps(record.view)
    assert "payer_action" not in record.view  # a credential for the payer: not kept
    logged = [r.name for r in caplog.records if secret in r.getMessage()]
    assert logged == []

"""The fuzz suite's stack: tempay's webhook, worker and sandbox
(tests.support.stack.running_stack) plus the Alipay, WeChat Pay and Stripe adapters pointed at
their local fakes, all served by an event loop of their own in a background thread.

Hypothesis and schemathesis drive synchronous tests, so the servers must not share the test's
thread: here the tests send real HTTP from the main thread while uvicorn, the worker and the
Temporal client run in `FuzzStack.loop`. `FuzzStack.run(coro)` runs a coroutine (a Temporal
query, say) in that loop and waits for it.

Each provider has a `Target`: a payment started through that provider and left PENDING (no
status query or expiry for an hour), plus a `ProviderKit` that builds its notifications: validly
signed ones, ones signed with a wrong key or secret, and stale ones. A bad request must leave
every target exactly as it was: same history length (a delivered signal adds an event), no
notification received, still PENDING; and no workflow appears in the namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

import transactions
from providers.base import ProviderAdapter
from providers.registry import build_adapters
from providers.sandbox.notifier import utc_iso
from providers.sandbox.signature import SIGNATURE_HEADER as SANDBOX_SIGNATURE
from providers.sandbox.signature import sign_body
from providers.stripe.adapter import StripeAdapter
from providers.wechatpay.adapter import WechatPayAdapter
from providers.wechatpay.settings import build_config
from tempay.domain import PaymentView, SettlementTiming, TransactionStatus
from tests.support.fakes.alipay_gateway import FakeAlipayGateway, rsa_pem_pair, sign_notification
from tests.support.fakes.stripe_api import FakeStripe
from tests.support.fakes.wechatpay_api import FakeWechatPay, new_key, signed_notification
from tests.support.listeners import serve_listeners
from tests.support.providers.alipay import APP_ID, make_adapter, new_merchant_keys
from tests.support.providers.stripe import API_KEY, WEBHOOK_SECRET
from tests.support.providers.wechatpay import (
    APIV3_KEY,
    APPID,
    CERT_SERIAL,
    MCHID,
    settings_for,
    write_keys,
)
from tests.support.stack import Stack, bound_socket, running_stack, serve, url_of
from webhook.app import close_adapters, webhook_listeners
from webhook.app import create_app as create_webhook_app
from workflows.payment import PaymentWorkflow

T = TypeVar("T")

PROVIDERS = ("sandbox", "alipay", "wechatpay", "stripe")

# Nothing but a notification can move these payments while the suite runs.
QUIET = SettlementTiming(
    first_status_query_delay=timedelta(hours=1),
    status_query_backoff_cap=timedelta(hours=1),
    expires_after=timedelta(hours=2),
    late_payment_window=timedelta(seconds=1),
    refund_window=timedelta(0),
)

# How long the suite's webhook waits for a whole body (TEMPAY_NOTIFICATION_READ_TIMEOUT).
READ_TIMEOUT = timedelta(seconds=3)
# The backend API's key on the fuzz stack (TEMPAY_API_KEY): /api is served, so it is fuzzed
# both without the key (401, nothing changes) and with it (tests/fuzz/test_api_fuzz.py).
BACKEND_API_KEY = "fuzz-" + secrets.token_urlsafe(24)

# Outcomes (webhook/metrics.py) that mean a notification was believed.
BELIEVED = ("signalled", "already_settled", "late_money", "ignored")

CHINA_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class Notification:
    headers: dict[str, str]
    body: bytes


# Each provider's notifications


class ProviderKit:
    """How one provider signs its notifications, for the orders the suite starts."""

    name: str
    currency: str = "CNY"
    channel: str | None = None  # the provider's default
    # The headers that carry the signature (fuzzed with garbage), and those of them without
    # which no notification verifies (dropped by the mutations).
    signature_headers: tuple[str, ...] = ()
    required_headers: tuple[str, ...] = ()

    def payload(self, order_id: str, amount: str = "10.00", age: float = 0.0) -> Any:
        """The decoded content of a paid notification `age` seconds old."""
        raise NotImplementedError

    def encode(self, payload: Any, age: float = 0.0, wrong_key: bool = False) -> Notification:
        """The payload as the provider sends it, signed (with a wrong key when told to)."""
        raise NotImplementedError

    def valid(self, order_id: str, amount: str = "10.00", age: float = 0.0) -> Notification:
        return self.encode(self.payload(order_id, amount, age), age)

    def sign_arbitrary(self, body: bytes, wrong_key: bool = True) -> dict[str, str]:
        """Signature headers for any body (arbitrary bytes cannot be signed 'right' for
        form-signed Alipay; everything else signs the raw body)."""
        raise NotImplementedError

    # A stale notification: how old (seconds) is certainly too old, signed with the right key.
    stale_after: float = 300.0

    def __init__(self) -> None:
        # The provider's trade number for each order: the create's, or one made up on first
        # use (for providers that name it only in notifications), so that every notification
        # about an order names the trade its payment knows (a payment refuses another's).
        self.trade_nos: dict[str, str] = {}

    def trade_no(self, order_id: str) -> str:
        return self.trade_nos.setdefault(order_id, f"T{uuid.uuid4().hex[:20].upper()}")

    def about_another_trade(self, order_id: str, amount: str = "10.00") -> Notification:
        """A valid notification about `order_id` that names a trade its payment never had."""
        known = self.trade_nos.pop(order_id, None)
        try:
            return self.valid(order_id, amount)
        finally:
            self.trade_nos.pop(order_id, None)
            if known is not None:
                self.trade_nos[order_id] = known


class SandboxKit(ProviderKit):
    name = "sandbox"
    signature_headers = (SANDBOX_SIGNATURE,)
    required_headers = signature_headers

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        super().__init__()
        self.key = key
        self.wrong = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def payload(self, order_id: str, amount: str = "10.00", age: float = 0.0) -> Any:
        now = datetime.now(UTC) - timedelta(seconds=age)
        return {
            "notify_id": uuid.uuid4().hex,
            "notify_time": utc_iso(now),
            "notify_type": "trade_status_sync",
            "out_trade_no": order_id,
            "trade_no": self.trade_no(order_id),
            "trade_status": "TRADE_SUCCESS",
            "total_amount": "10.00",
            "receipt_amount": amount,
            "currency": "CNY",
            "gmt_payment": utc_iso(now),
        }

    def encode(self, payload: Any, age: float = 0.0, wrong_key: bool = False) -> Notification:
        body = json.dumps(payload, separators=(",", ":")).encode()
        return Notification(self.sign_arbitrary(body, wrong_key), body)

    def sign_arbitrary(self, body: bytes, wrong_key: bool = True) -> dict[str, str]:
        key = self.wrong if wrong_key else self.key
        return {SANDBOX_SIGNATURE: sign_body(key, body), "Content-Type": "application/json"}


class AlipayKit(ProviderKit):
    """Signed with Alipay's reference SDK (through the fake gateway's helpers)."""

    name = "alipay"
    stale_after = 48 * 3600.0  # TEMPAY_ALIPAY_NOTIFICATION_MAX_AGE; future times are allowed

    def __init__(self, fake: FakeAlipayGateway) -> None:
        super().__init__()
        self.fake = fake
        self.wrong_pem, _ = rsa_pem_pair()

    def payload(self, order_id: str, amount: str = "10.00", age: float = 0.0) -> Any:
        now = (datetime.now(UTC) + timedelta(hours=8) - timedelta(seconds=age)).strftime(
            CHINA_FORMAT
        )
        return {
            "notify_time": now,
            "notify_type": "trade_status_sync",
            "notify_id": secrets.token_hex(16),
            "app_id": self.fake.app_id,
            "charset": "utf-8",
            "version": "1.0",
            "trade_no": self.trade_no(order_id),
            "out_trade_no": order_id,
            "seller_id": self.fake.seller_id,
            "trade_status": "TRADE_SUCCESS",
            "total_amount": amount,
            "receipt_amount": amount,
            "subject": f"Order {order_id}",
            "gmt_payment": now,
        }

    def signed_params(self, payload: dict[str, str], wrong_key: bool = False) -> dict[str, str]:
        return sign_notification(self.wrong_pem if wrong_key else self.fake.private_pem, payload)

    def encode(self, payload: Any, age: float = 0.0, wrong_key: bool = False) -> Notification:
        params = self.signed_params(payload, wrong_key)
        return Notification(
            {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
            urlencode(params).encode(),
        )

    def sign_arbitrary(self, body: bytes, wrong_key: bool = True) -> dict[str, str]:
        # Alipay's signature travels in the form itself, never in a header.
        return {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}


class WechatKit(ProviderKit):
    name = "wechatpay"
    channel = "wechat_native"
    signature_headers = (
        "Wechatpay-Timestamp",
        "Wechatpay-Nonce",
        "Wechatpay-Signature",
        "Wechatpay-Serial",
        "Wechatpay-Signature-Type",
    )
    # Wechatpay-Signature-Type is optional: without it the scheme is the one scheme there is.
    required_headers = signature_headers[:4]

    def __init__(self, fake: FakeWechatPay) -> None:
        super().__init__()
        self.fake = fake
        self.wrong = new_key()

    def payload(self, order_id: str, amount: str = "10.00", age: float = 0.0) -> Any:
        fen = minor_units(amount)
        return {
            "appid": APPID,
            "mchid": MCHID,
            "out_trade_no": order_id,
            "trade_type": "NATIVE",
            "trade_state": "SUCCESS",
            "trade_state_desc": "支付成功",
            "attach": "",
            "transaction_id": self.trade_no(order_id),
            "bank_type": "OTHERS",
            "success_time": (datetime.now(UTC) + timedelta(hours=8)).strftime(
                "%Y-%m-%dT%H:%M:%S+08:00"
            ),
            "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
            "amount": {
                "total": fen,
                "payer_total": fen,
                "currency": "CNY",
                "payer_currency": "CNY",
            },
        }

    def encode(self, payload: Any, age: float = 0.0, wrong_key: bool = False) -> Notification:
        headers, body = signed_notification(
            self.wrong if wrong_key else self.fake.platform_key,
            self.fake.public_key_id,
            self.fake.apiv3_key,
            "TRANSACTION.SUCCESS",
            payload,
            "transaction",
            timestamp=int(time.time() - age),
        )
        return Notification(headers, body)

    def sign_arbitrary(self, body: bytes, wrong_key: bool = True) -> dict[str, str]:
        from wechatpayv3.utils import rsa_sign

        stamp, nonce = str(int(time.time())), secrets.token_hex(16)
        key = self.wrong if wrong_key else self.fake.platform_key
        message = f"{stamp}\n{nonce}\n{body.decode('utf-8', 'replace')}\n"
        return {
            "Content-Type": "application/json",
            "Wechatpay-Timestamp": stamp,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": rsa_sign(key, message),
            "Wechatpay-Serial": self.fake.public_key_id,
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
        }


class StripeKit(ProviderKit):
    name = "stripe"
    currency = "USD"
    signature_headers = ("Stripe-Signature",)
    required_headers = signature_headers

    def __init__(self, fake: FakeStripe) -> None:
        super().__init__()
        self.fake = fake

    def payload(self, order_id: str, amount: str = "10.00", age: float = 0.0) -> Any:
        cents = minor_units(amount)
        event = self.fake.event(
            "checkout.session.completed",
            {
                "id": self.trade_no(order_id),
                "object": "checkout.session",
                "client_reference_id": order_id,
                "metadata": {"order_id": order_id},
                "amount_total": cents,
                "currency": "usd",
                "status": "complete",
                "payment_status": "paid",
                "payment_intent": f"pi_{uuid.uuid4().hex[:24]}",
            },
        )
        event["created"] = int(time.time() - age)
        return event

    def encode(self, payload: Any, age: float = 0.0, wrong_key: bool = False) -> Notification:
        body = json.dumps(payload, indent=2).encode()
        return Notification(self.sign_with(body, age, wrong_key), body)

    def sign_with(self, body: bytes, age: float = 0.0, wrong_key: bool = False) -> dict[str, str]:
        secret = "whsec_wrong_" + secrets.token_hex(8) if wrong_key else WEBHOOK_SECRET
        t = int(time.time() - age)
        v1 = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        return {"Stripe-Signature": f"t={t},v1={v1}", "Content-Type": "application/json"}

    def sign_arbitrary(self, body: bytes, wrong_key: bool = True) -> dict[str, str]:
        return self.sign_with(body, 0.0, wrong_key)


def minor_units(amount: str) -> int | str:
    """ "10.00" -> 1000 (exactly, in Decimal); anything else stays as it is, to be refused."""
    try:
        return int(Decimal(amount) * 100)
    except (InvalidOperation, ValueError, OverflowError):
        return amount


# The stack


@dataclass
class Target:
    provider: str
    order_id: str
    handle: WorkflowHandle[PaymentWorkflow, PaymentView]


@dataclass(frozen=True)
class TargetState:
    history_length: int
    status: TransactionStatus
    notifications_received: int
    duplicate_notifications: int


@dataclass(frozen=True)
class Snapshot:
    workflows: int  # every workflow in the namespace, open or closed
    targets: dict[str, TargetState]
    counts: dict[tuple[str, str], float]


class FuzzStack:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        stack: Stack,
        kits: dict[str, ProviderKit],
        extra_adapters: Callable[[], dict[str, ProviderAdapter]],
    ) -> None:
        self.loop = loop
        self.stack = stack
        self.kits = kits
        self.extra_adapters = extra_adapters
        self.targets: dict[str, Target] = {}

    def __repr__(self) -> str:
        return f"FuzzStack({self.url})"

    @property
    def url(self) -> str:
        return self.stack.webhook_url

    @property
    def client(self) -> Client:
        return self.stack.client

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @contextlib.contextmanager
    def other_webhook(self, **changes: Any) -> Iterator[str]:
        """Another webhook service with every provider, on these settings changed (e.g. a
        dead temporal_address), served from the stack's loop; yields its URL."""
        settings = self.stack.settings.model_copy(update=changes)
        adapters = {**build_adapters(settings), **self.extra_adapters()}
        served = serve(create_webhook_app(settings, adapters))
        url = self.run(served.__aenter__())
        try:
            yield url
        finally:
            self.run(served.__aexit__(None, None, None))

    @contextlib.contextmanager
    def listeners(self, **changes: Any) -> Iterator[dict[str, str]]:
        """The webhook as `tempay webhook` serves it (webhook/server.py: header timeout,
        connection limit, body deadlines; public and internal listeners, or one with
        TEMPAY_INTERNAL_ON_WEBHOOK_PORT), with every provider, on these settings changed,
        from the stack's loop; yields {listener name: URL}."""
        settings = self.stack.settings.model_copy(update=changes)
        adapters = {**build_adapters(settings), **self.extra_adapters()}
        served = serve_listeners(webhook_listeners(settings, adapters), settings)
        urls = self.run(served.__aenter__())
        try:
            yield urls
        finally:
            self.run(served.__aexit__(None, None, None))
            self.run(close_adapters(adapters))

    async def start(self, provider: str) -> Target:
        kit = self.kits[provider]
        order_id = f"fz-{provider[:3]}-{uuid.uuid4().hex[:10]}"
        order = transactions.build_order(
            self.stack.settings,
            order_id=order_id,
            amount="10.00",
            currency=kit.currency,
            provider=provider,
            channel=kit.channel,
            subject=f"Fuzz order {order_id}",
            return_url=f"https://shop.example/orders/{order_id}",
            timing=QUIET,
        )
        checkout = await transactions.start_payment(self.client, self.stack.settings, order)
        assert checkout.status is TransactionStatus.PENDING, checkout
        if checkout.provider_trade_no:
            kit.trade_nos[order_id] = checkout.provider_trade_no
        handle: WorkflowHandle[PaymentWorkflow, PaymentView] = self.client.get_workflow_handle(
            order.workflow_id, result_type=PaymentView
        )
        return Target(provider, order_id, handle)

    async def target_state(self, target: Target) -> TargetState:
        description = await target.handle.describe()
        view = await target.handle.query(PaymentWorkflow.details)
        return TargetState(
            description.history_length,
            view.status,
            view.notifications_received,
            view.duplicate_notifications,
        )

    async def _snapshot(self) -> Snapshot:
        count = await self.client.count_workflows()
        states = {p: await self.target_state(t) for p, t in self.targets.items()}
        return Snapshot(count.count, states, await notification_counts(self.url))

    def snapshot(self) -> Snapshot:
        return self.run(self._snapshot())


async def notification_counts(base_url: str) -> dict[tuple[str, str], float]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        response = await http.get("/metrics")
    return parse_counts(response.text)


def parse_counts(text: str) -> dict[tuple[str, str], float]:
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tempay_notifications_total":
                counts[sample.labels["provider"], sample.labels["outcome"]] = sample.value
    return counts


def increments(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> dict[tuple[str, str], float]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def assert_nothing_changed(before: Snapshot, after: Snapshot) -> None:
    """No workflow appeared, no target moved, and no notification was believed."""
    assert after.workflows == before.workflows, "a workflow was created"
    assert after.targets == before.targets, "a payment changed"
    for state in after.targets.values():
        assert state.status is TransactionStatus.PENDING
        assert state.notifications_received == 0
    believed = {
        k: v for k, v in increments(before.counts, after.counts).items() if k[1] in BELIEVED
    }
    assert believed == {}, f"notifications believed: {believed}"


@contextlib.asynccontextmanager
async def _fuzz_stack(
    temporal_address: str, namespace: str, data_dir: Path
) -> AsyncIterator[tuple[Stack, dict[str, ProviderKit], Callable[[], dict[str, ProviderAdapter]]]]:
    client = await Client.connect(
        temporal_address, namespace=namespace, data_converter=pydantic_data_converter
    )
    async with contextlib.AsyncExitStack() as exits:
        # Alipay: payments are signed URLs, no gateway call; the fake is served all the same.
        merchant = new_merchant_keys()
        alipay_fake = FakeAlipayGateway(APP_ID, merchant.public_pem)
        gateway = await exits.enter_async_context(serve(alipay_fake.app()))

        # WeChat Pay: the fake API creates the Native orders.
        wechat_fake = FakeWechatPay(
            mchid=MCHID,
            appid=APPID,
            apiv3_key=APIV3_KEY.encode(),
            merchant_public_key=(merchant_key := new_key()).public_key(),
            cert_serial=CERT_SERIAL,
        )
        wechat_api = await exits.enter_async_context(serve(wechat_fake.app()))
        keys_dir = data_dir / "wechatpay"
        keys_dir.mkdir(parents=True)
        write_keys(keys_dir, merchant_key, wechat_fake.platform_key)

        # Stripe: the fake API creates the Checkout Sessions.
        sock = bound_socket()
        stripe_fake = FakeStripe(
            api_key=API_KEY, webhook_secrets=[WEBHOOK_SECRET], base_url=url_of(sock)
        )
        await exits.enter_async_context(serve(stripe_fake.app(), sock))

        def extra_adapters() -> dict[str, ProviderAdapter]:
            """A fresh set of the three adapters (each webhook app closes its own)."""
            return {
                "alipay": make_adapter(alipay_fake, merchant, f"{gateway}/gateway.do"),
                "wechatpay": WechatPayAdapter(
                    build_config(settings_for(keys_dir, wechat_fake, wechat_api))
                ),
                "stripe": StripeAdapter(
                    API_KEY, [WEBHOOK_SECRET], api_base=stripe_fake.base_url, timeout=5
                ),
            }

        stack = await exits.enter_async_context(
            running_stack(
                client,
                data_dir / "stack",
                f"tq-fuzz-{uuid.uuid4().hex[:8]}",
                settings_overrides={
                    "notification_read_timeout": READ_TIMEOUT,
                    "api_key": SecretStr(BACKEND_API_KEY),
                },
                extra_adapters=extra_adapters(),
            )
        )
        kits: dict[str, ProviderKit] = {
            "sandbox": SandboxKit(stack.sandbox_private_key()),
            "alipay": AlipayKit(alipay_fake),
            "wechatpay": WechatKit(wechat_fake),
            "stripe": StripeKit(stripe_fake),
        }
        yield stack, kits, extra_adapters


@contextlib.contextmanager
def threaded_stack(temporal_address: str, namespace: str, data_dir: Path) -> Iterator[FuzzStack]:
    """The whole stack in its own thread and event loop, until the block ends."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-stack", daemon=True)
    thread.start()
    context = _fuzz_stack(temporal_address, namespace, data_dir)
    try:
        entered = asyncio.run_coroutine_threadsafe(context.__aenter__(), loop).result(120)
        fuzz = FuzzStack(loop, *entered)
        try:
            for provider in PROVIDERS:
                fuzz.targets[provider] = fuzz.run(fuzz.start(provider))
            yield fuzz
        finally:
            for target in fuzz.targets.values():
                fuzz.run(terminate(target))
            asyncio.run_coroutine_threadsafe(context.__aexit__(None, None, None), loop).result(60)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def terminate(target: Target, reason: str = "fuzz suite finished") -> None:
    """Stop a payment that is still running (one that settled may end at any moment)."""
    description = await target.handle.describe()
    if description.status is WorkflowExecutionStatus.RUNNING:
        try:
            await target.handle.terminate(reason)
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND:  # it ended meanwhile
                raise

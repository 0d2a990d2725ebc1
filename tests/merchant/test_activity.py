"""The notify_merchant activity against a mock HTTP transport, and its settings."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.merchant import MerchantActivities
from tempay.domain import (
    MerchantDeliveryState,
    MerchantEvent,
    PaymentView,
    TransactionKind,
    TransactionStatus,
    merchant_event,
)
from tempay.merchant_webhooks import generate_secret, verify
from tempay.settings import Settings

SECRET = generate_secret()
URL = "http://merchant.test/hooks/tempay"


def event(status: TransactionStatus = TransactionStatus.SUCCEEDED) -> MerchantEvent:
    view = PaymentView(
        workflow_id="payment-ord-1",
        order_id="ord-1",
        kind=TransactionKind.PAYMENT,
        provider="sandbox",
        status=status,
        amount=Decimal("10"),
        currency="CNY",
        paid_amount=Decimal("10.00"),
        paid_currency="CNY",
        settled_at=datetime(2026, 1, 2, tzinfo=UTC),
        settled_by="notification",
    )
    return merchant_event(view, datetime(2026, 1, 2, tzinfo=UTC))


def settings() -> Settings:
    return Settings(merchant_webhook_url=URL, merchant_webhook_secret=SECRET)


class Merchant:
    """Answers with `statuses` in turn (then 200), recording every request."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status = self.statuses.pop(0) if self.statuses else 200
        return httpx.Response(status, text="merchant says no" if status >= 300 else "ok")


async def test_posts_signed_json() -> None:
    merchant = Merchant()
    activities = MerchantActivities(settings(), transport=httpx.MockTransport(merchant))
    delivery = await ActivityEnvironment().run(activities.notify_merchant, event())
    assert delivery.state is MerchantDeliveryState.DELIVERED
    assert (delivery.event_id, delivery.status_code) == ("evt_payment-ord-1_succeeded", 200)
    [request] = merchant.requests
    assert (request.method, str(request.url)) == ("POST", URL)
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == "evt_payment-ord-1_succeeded"
    verify(SECRET, request.headers, request.content)
    body = json.loads(request.content)
    assert body["type"] == "payment.succeeded"
    assert body["data"]["amount"] == "10.00" and body["data"]["paid_amount"] == "10.00"
    assert body["data"]["status"] == "SUCCEEDED"


@pytest.mark.parametrize("status", [301, 400, 404, 500, 503])
async def test_non_2xx_raises_so_temporal_retries(status: int) -> None:
    activities = MerchantActivities(settings(), transport=httpx.MockTransport(Merchant(status)))
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(activities.notify_merchant, event())
    assert refused.value.type == "MerchantRefused"
    assert not refused.value.non_retryable
    assert f"HTTP {status}: merchant says no" in str(refused.value)


async def test_unreachable_raises_so_temporal_retries() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    activities = MerchantActivities(settings(), transport=httpx.MockTransport(down))
    with pytest.raises(ApplicationError) as unreachable:
        await ActivityEnvironment().run(activities.notify_merchant, event())
    assert unreachable.value.type == "MerchantUnreachable"
    assert not unreachable.value.non_retryable


async def test_each_attempt_is_signed_afresh_with_the_same_id() -> None:
    merchant = Merchant(500)
    activities = MerchantActivities(settings(), transport=httpx.MockTransport(merchant))
    with pytest.raises(ApplicationError):
        await ActivityEnvironment().run(activities.notify_merchant, event())
    await ActivityEnvironment().run(activities.notify_merchant, event())
    first, second = merchant.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.content == second.content
    for request in merchant.requests:
        verify(SECRET, request.headers, request.content)


async def test_not_configured_is_an_outcome_said_once(caplog: pytest.LogCaptureFixture) -> None:
    activities = MerchantActivities(Settings(merchant_webhook_url=None))
    with caplog.at_level(logging.INFO, logger="tempay.merchant"):
        for status in (TransactionStatus.SUCCEEDED, TransactionStatus.FAILED):
            delivery = await ActivityEnvironment().run(activities.notify_merchant, event(status))
            assert delivery.state is MerchantDeliveryState.NOT_CONFIGURED
    said = [r for r in caplog.records if "TEMPAY_MERCHANT_WEBHOOK_URL" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO


async def test_the_secret_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    activities = MerchantActivities(settings(), transport=httpx.MockTransport(Merchant(500)))
    with caplog.at_level(logging.DEBUG), pytest.raises(ApplicationError):
        await ActivityEnvironment().run(activities.notify_merchant, event())
    await ActivityEnvironment().run(activities.notify_merchant, event())
    key = SECRET.removeprefix("whsec_")
    assert caplog.records and all(key not in r.getMessage() for r in caplog.records)
    assert key not in repr(settings()) and key not in str(settings().model_dump())


# Settings


def test_settings_accept_a_whsec_secret_and_blank_values() -> None:
    configured = settings()
    assert configured.merchant_webhook_secret is not None
    assert configured.merchant_webhook_secret.get_secret_value() == SECRET
    blank = Settings(merchant_webhook_url=" ", merchant_webhook_secret="")
    assert (blank.merchant_webhook_url, blank.merchant_webhook_secret) == (None, None)


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPAY_MERCHANT_WEBHOOK_URL", URL)
    monkeypatch.setenv("TEMPAY_MERCHANT_WEBHOOK_SECRET", SECRET)
    loaded = Settings()
    assert loaded.merchant_webhook_url == URL
    assert loaded.merchant_webhook_secret is not None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"merchant_webhook_secret": "not-a-whsec-secret-at-all"}, "must start with 'whsec_'"),
        ({"merchant_webhook_secret": "whsec_c2hvcnQ="}, "use at least 24"),
        ({"merchant_webhook_url": URL}, r"SECRET \(whsec_\.\.\.\) is required"),
        ({"merchant_webhook_url": "merchant.test/hook", "merchant_webhook_secret": SECRET}, "http"),
    ],
)
def test_settings_refuse_bad_merchant_config_without_echoing_it(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as refused:
        Settings(**values)
    secret = values.get("merchant_webhook_secret")
    if secret is not None:
        assert secret.removeprefix("whsec_") not in str(refused.value)

"""Merchant activity: POST a settled payment's event to the merchant's application.

Signed by the Standard Webhooks scheme (tempay.merchant_webhooks). Every attempt carries the
event id as `webhook-id` and a fresh timestamp and signature; anything but a 2xx answer
raises, so Temporal retries it on the workflow's schedule until the merchant takes it.
"""

from __future__ import annotations

import logging
import time

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from tempay.domain import MerchantDelivery, MerchantDeliveryState, MerchantEvent
from tempay.merchant_webhooks import signed_headers
from tempay.settings import Settings

log = logging.getLogger("tempay.merchant")

HTTP_TIMEOUT = httpx.Timeout(10.0)
USER_AGENT = "tempay-webhooks/1"
BODY_EXCERPT = 200  # characters of a refusing answer kept in the retry's error
DELIVERIES = "tempay_merchant_deliveries"


def _count(outcome: str) -> None:
    """One delivery attempt: delivered, not_configured or failed_attempt (retried)."""
    activity.metric_meter().create_counter(
        DELIVERIES, "Merchant event delivery attempts, by outcome"
    ).add(1, {"outcome": outcome})


class MerchantActivities:
    """Bound to the worker's settings: the merchant's URL and signing secret."""

    def __init__(
        self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._url = settings.merchant_webhook_url
        self._secret = settings.merchant_webhook_secret
        self._transport = transport  # tests may swap the network out
        self._said_not_configured = False

    @activity.defn(name="notify_merchant")
    async def notify_merchant(self, event: MerchantEvent) -> MerchantDelivery:
        attempt = activity.info().attempt
        if not self._url or self._secret is None:
            if not self._said_not_configured:
                self._said_not_configured = True
                log.info("no TEMPAY_MERCHANT_WEBHOOK_URL: merchant events are recorded, not sent")
            _count("not_configured")
            return MerchantDelivery(
                event_id=event.id, state=MerchantDeliveryState.NOT_CONFIGURED, attempt=attempt
            )

        body = event.model_dump_json().encode()
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            **signed_headers(self._secret.get_secret_value(), event.id, int(time.time()), body),
        }
        try:
            async with httpx.AsyncClient(
                timeout=HTTP_TIMEOUT, transport=self._transport, follow_redirects=False
            ) as http:
                response = await http.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning(
                "merchant event %s, attempt %d: %s unreachable: %s",
                event.id,
                attempt,
                self._url,
                type(exc).__name__,
            )
            _count("failed_attempt")
            raise ApplicationError(
                f"merchant webhook {self._url} unreachable: {type(exc).__name__}: {exc}",
                type="MerchantUnreachable",
            ) from None
        if not response.is_success:
            log.warning(
                "merchant event %s, attempt %d: %s answered HTTP %d",
                event.id,
                attempt,
                self._url,
                response.status_code,
            )
            _count("failed_attempt")
            raise ApplicationError(
                f"merchant webhook answered HTTP {response.status_code}: "
                f"{response.text[:BODY_EXCERPT]}",
                type="MerchantRefused",
            )
        log.info("merchant event %s delivered on attempt %d", event.id, attempt)
        _count("delivered")
        return MerchantDelivery(
            event_id=event.id,
            state=MerchantDeliveryState.DELIVERED,
            attempt=attempt,
            status_code=response.status_code,
        )

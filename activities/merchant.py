"""Merchant activity: POST a settled payment's event to the merchant's application.

Signed by the Standard Webhooks scheme (tempay.merchant_webhooks). Every attempt carries the
event id as `webhook-id` and a fresh timestamp and signature; anything but a 2xx answer
raises, so Temporal retries it on the workflow's schedule until the merchant takes it.

The merchant's URL may carry credentials (`user:password@`, `/hooks/SECRET`, `;token=`,
`?token=`): it is shown only through redact_url (`https://***@merchant.example/…`), in logs,
errors (which Temporal keeps in history) and httpx's own log; text from elsewhere (httpx's
errors, the merchant's answer) goes through redact_urls with every part of it (url_secrets).
"""

from __future__ import annotations

import logging
import time

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from tempay.domain import MerchantDelivery, MerchantDeliveryState, MerchantEvent
from tempay.errors import MERCHANT_REFUSED, MERCHANT_UNREACHABLE
from tempay.merchant_webhooks import redact_url, redact_urls, signed_headers, url_secrets
from tempay.settings import Settings

log = logging.getLogger("tempay.merchant")

HTTP_TIMEOUT = httpx.Timeout(10.0)
USER_AGENT = "tempay-webhooks/1"
BODY_EXCERPT = 200  # characters of a refusing answer kept in the retry's error
DELIVERIES = "tempay_merchant_deliveries"


class _RedactMerchantUrls(logging.Filter):
    """httpx logs every request's full URL at INFO ("HTTP Request: POST <url> ..."), and
    `python worker.py` logs INFO: the merchant URL's password and token would be in each line."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_url(str(arg))
                if isinstance(arg, httpx.URL) and str(arg) in self.urls
                else arg
                for arg in record.args
            )
        return True


_HTTPX_LOG_FILTER = _RedactMerchantUrls()


def _hide_in_httpx_log(url: str) -> None:
    try:
        _HTTPX_LOG_FILTER.urls.add(str(httpx.URL(url)))
    except httpx.InvalidURL:
        return  # httpx cannot send to it either: each attempt fails, its error scrubbed
    httpx_log = logging.getLogger("httpx")
    if _HTTPX_LOG_FILTER not in httpx_log.filters:
        httpx_log.addFilter(_HTTPX_LOG_FILTER)


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
        # Where deliveries go, as logs and errors show it: scheme://host[:port], no more.
        self._shown_url = redact_url(self._url) if self._url else ""
        self._hidden = url_secrets(self._url) if self._url else []
        if self._url and self._shown_url != self._url:
            _hide_in_httpx_log(self._url)

    def _scrubbed(self, text: str) -> str:
        """Text from elsewhere (an httpx error, the merchant's answer) without the URL's
        credentials, which it may echo whole or in part."""
        return redact_urls(text, self._hidden)

    @activity.defn(name="notify_merchant")
    async def notify_merchant(self, event: MerchantEvent) -> MerchantDelivery:
        return await self.deliver(event.id, event.model_dump_json().encode())

    async def deliver(self, event_id: str, body: bytes) -> MerchantDelivery:
        """POST one event's body, signed, from inside an activity; raise unless 2xx."""
        attempt = activity.info().attempt
        if not self._url or self._secret is None:
            if not self._said_not_configured:
                self._said_not_configured = True
                log.info("no TEMPAY_MERCHANT_WEBHOOK_URL: merchant events are recorded, not sent")
            _count("not_configured")
            return MerchantDelivery(
                event_id=event_id, state=MerchantDeliveryState.NOT_CONFIGURED, attempt=attempt
            )

        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            **signed_headers(self._secret.get_secret_value(), event_id, int(time.time()), body),
        }
        try:
            async with httpx.AsyncClient(
                timeout=HTTP_TIMEOUT, transport=self._transport, follow_redirects=False
            ) as http:
                response = await http.post(self._url, content=body, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            # httpx's message may hold the URL (exc.request.url is the whole of it).
            reason = f"{type(exc).__name__}: {self._scrubbed(str(exc))}"
            log.warning(
                "merchant event %s, attempt %d: %s unreachable: %s",
                event_id,
                attempt,
                self._shown_url,
                reason,
            )
            _count("failed_attempt")
            raise ApplicationError(
                f"merchant webhook {self._shown_url} unreachable: {reason}",
                type=MERCHANT_UNREACHABLE,
            ) from None
        if not response.is_success:
            log.warning(
                "merchant event %s, attempt %d: %s answered HTTP %d",
                event_id,
                attempt,
                self._shown_url,
                response.status_code,
            )
            _count("failed_attempt")
            raise ApplicationError(
                f"merchant webhook {self._shown_url} answered HTTP {response.status_code}: "
                # Scrubbed, then cut: a credential cut in half would no longer be recognised.
                f"{self._scrubbed(response.text[: BODY_EXCERPT * 100])[:BODY_EXCERPT]}",
                type=MERCHANT_REFUSED,
            )
        log.info("merchant event %s delivered on attempt %d", event_id, attempt)
        _count("delivered")
        return MerchantDelivery(
            event_id=event_id,
            state=MerchantDeliveryState.DELIVERED,
            attempt=attempt,
            status_code=response.status_code,
        )

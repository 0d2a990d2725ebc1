"""Refund activities: ask a payment's provider to refund, and how the refund went.

A refund request is idempotent at the provider by `refund_id` (Alipay's out_request_no,
WeChat Pay's out_refund_no, a Stripe idempotency key): the same id with the same terms is the
same refund. So unlike a transfer, a refund call whose outcome is unknown is simply retried.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from providers.base import ProviderAdapter
from tempay.domain import RefundObservation, RefundOrder
from tempay.errors import (
    PROVIDER_REJECTED,
    UNKNOWN_PROVIDER,
    ProviderRefused,
    ProviderRejected,
)


class RefundActivities:
    """Bound to the worker's provider adapters, so connections are shared across calls."""

    def __init__(self, adapters: dict[str, ProviderAdapter]) -> None:
        self._adapters = adapters

    def _adapter(self, name: str) -> ProviderAdapter:
        try:
            return self._adapters[name]
        except KeyError:
            raise ApplicationError(
                f"unknown provider {name!r}", type=UNKNOWN_PROVIDER, non_retryable=True
            ) from None

    @activity.defn(name="create_refund")
    async def create_refund(self, order: RefundOrder) -> RefundObservation:
        try:
            answer = await self._adapter(order.provider).create_refund(order.refund_request())
        except ProviderRefused as exc:
            raise ApplicationError(
                str(exc),
                {"code": exc.code, **exc.details},
                type=PROVIDER_REJECTED,
                non_retryable=True,
            ) from exc
        except ProviderRejected as exc:
            raise ApplicationError(str(exc), type=PROVIDER_REJECTED, non_retryable=True) from exc
        # Any other ProviderError (unreachable, 5xx, answer lost) is retried: same refund id.
        return answer.reported_by(order.provider)

    @activity.defn(name="query_refund")
    async def query_refund(self, order: RefundOrder) -> RefundObservation | None:
        """None: the provider has no refund with this id, so nothing was refunded."""
        try:
            found = await self._adapter(order.provider).query_refund(order.refund_request())
        except ProviderRejected as exc:
            raise ApplicationError(str(exc), type=PROVIDER_REJECTED, non_retryable=True) from exc
        return None if found is None else found.reported_by(order.provider)

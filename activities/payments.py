"""Payment activities: create, query and close a payment at its provider."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from providers.base import ProviderAdapter
from tempay.domain import (
    CloseOutcome,
    CreatedPayment,
    PaymentObservation,
    PaymentOrder,
    PaymentPoll,
    PolledPayment,
)
from tempay.errors import PROVIDER_REJECTED, UNKNOWN_PROVIDER, ProviderRejected
from tempay.polling import poll_payment_attempt


class PaymentActivities:
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

    @activity.defn(name="create_payment")
    async def create_payment(self, order: PaymentOrder) -> CreatedPayment:
        # The provider is idempotent by order number, so a retry returns the same trade.
        try:
            return await self._adapter(order.provider).create_payment(order)
        except ProviderRejected as exc:
            raise ApplicationError(str(exc), type=PROVIDER_REJECTED, non_retryable=True) from exc

    @activity.defn(name="query_payment")
    async def query_payment(self, order: PaymentOrder) -> PaymentObservation:
        found = await self._adapter(order.provider).query_payment(order)
        return found.reported_by(order.provider)

    @activity.defn(name="poll_payment")
    async def poll_payment(self, poll: PaymentPoll) -> PolledPayment:
        """Status queries until the provider reports news; each attempt is one query, retried
        by the server on the schedule (tempay/polling.py)."""
        return await poll_payment_attempt(self.query_payment, poll)

    @activity.defn(name="close_payment")
    async def close_payment(self, order: PaymentOrder) -> CloseOutcome:
        try:
            outcome = await self._adapter(order.provider).close_payment(order)
        except ProviderRejected as exc:
            raise ApplicationError(str(exc), type=PROVIDER_REJECTED, non_retryable=True) from exc
        if outcome.observation is not None:
            outcome.observation = outcome.observation.reported_by(order.provider)
        return outcome

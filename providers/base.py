"""What every provider adapter offers the core. The core never sees a provider's wire format."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tempay.domain import (
    CloseOutcome,
    CreatedPayment,
    PaymentObservation,
    PaymentOrder,
    RefundObservation,
    RefundRequest,
    TransferObservation,
    TransferRequest,
)

# Whatever a provider notification can be about.
ProviderObservation = PaymentObservation | RefundObservation | TransferObservation


class ProviderError(Exception):
    """The provider could not be reached or failed; the call may be retried."""


class ProviderRejected(ProviderError):
    """The provider refused the request as invalid; retrying will not help."""


class ProviderRefused(ProviderRejected):
    """The provider refused for a business reason it names in `code` (for example
    REFUND_AMOUNT_EXCEEDED, TRADE_STATUS_ERROR, REFUND_CONFLICT, TRANSFER_CONFLICT), with the
    details it gave (for example `refundable_amount`)."""

    def __init__(self, message: str, code: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = details or {}


class ProviderOutcomeUnknown(ProviderError):
    """The request may have reached the provider, but no answer came back (timeout, 5xx,
    connection lost after sending): the money may or may not have moved. Query before any
    retry that is not protected by the provider's idempotency key."""


class ProviderUnsupported(ProviderRejected):
    """The provider does not offer this operation."""


class NotificationError(Exception):
    """A notification the webhook must refuse; `http_status` says how."""

    http_status = 400


class MalformedNotification(NotificationError):
    http_status = 400


class UnverifiedNotification(NotificationError):
    """Missing, wrong or stale signature."""

    http_status = 401


class VerificationUnavailable(NotificationError):
    """The signature cannot be checked now (our key is missing or unreadable): the
    provider is told to send it again later."""

    http_status = 503


@dataclass(frozen=True)
class Acknowledgement:
    """The exact answer a provider expects once a notification is safely held."""

    status_code: int = 200
    body: str = ""
    media_type: str = "text/plain"


class ProviderAdapter(ABC):
    name: str

    @abstractmethod
    async def create_payment(self, order: PaymentOrder) -> CreatedPayment: ...

    @abstractmethod
    async def query_payment(self, order: PaymentOrder) -> PaymentObservation: ...

    @abstractmethod
    async def close_payment(self, order: PaymentOrder) -> CloseOutcome: ...

    @abstractmethod
    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> PaymentObservation:
        """Verify the raw body first, then map it to the core's observation."""

    @abstractmethod
    def acknowledgement(self) -> Acknowledgement: ...

    def refusal(self, status_code: int, message: str) -> Acknowledgement:
        """The answer to a notification that is not acknowledged (bad signature, malformed,
        unknown order, Temporal unreachable), in the form this provider expects."""
        return Acknowledgement(status_code, json.dumps({"error": message}), "application/json")

    # Refunds and transfers: providers without them refuse, and never move money.

    async def create_refund(self, request: RefundRequest) -> RefundObservation:
        """Ask for the refund; idempotent by `refund_id`. Usually answers PENDING."""
        raise ProviderUnsupported(f"{self.name} does not offer refunds")

    async def query_refund(self, request: RefundRequest) -> RefundObservation | None:
        """The refund as the provider sees it; None when it has no such refund."""
        raise ProviderUnsupported(f"{self.name} does not offer refunds")

    async def create_transfer(self, request: TransferRequest) -> TransferObservation:
        """Ask for the payout; idempotent by `withdrawal_id`. Raises ProviderOutcomeUnknown
        when the request may have arrived but its answer did not."""
        raise ProviderUnsupported(f"{self.name} does not offer transfers")

    async def query_transfer(self, request: TransferRequest) -> TransferObservation | None:
        """The transfer as the provider sees it. None: the provider never received it, so
        no money moved and creating it (with the same withdrawal_id) is safe."""
        raise ProviderUnsupported(f"{self.name} does not offer transfers")

    def parse_any_notification(
        self, headers: Mapping[str, str], body: bytes
    ) -> ProviderObservation:
        """Like `parse_notification`, for every kind of notification the provider sends
        (payments, refunds, transfers); route the result by its type."""
        return self.parse_notification(headers, body)

    async def aclose(self) -> None:  # noqa: B027 - adapters without connections need nothing
        """Release connections."""

"""What every provider adapter offers the core. The core never sees a provider's wire format."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

from tempay.domain import CloseOutcome, CreatedPayment, PaymentObservation, PaymentOrder


class ProviderError(Exception):
    """The provider could not be reached or failed; the call may be retried."""


class ProviderRejected(ProviderError):
    """The provider refused the request as invalid; retrying will not help."""


class NotificationError(Exception):
    """A notification the webhook must refuse; `http_status` says how."""

    http_status = 400


class MalformedNotification(NotificationError):
    http_status = 400


class UnverifiedNotification(NotificationError):
    """Missing, wrong or stale signature."""

    http_status = 401


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

    async def aclose(self) -> None:  # noqa: B027 - adapters without connections need nothing
        """Release connections."""

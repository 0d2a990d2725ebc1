"""What every provider offers the core: an adapter (the core never sees a provider's wire
format), and a ProviderSpec, by which its folder declares it to the registry."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Generic, TypeVar

from pydantic_settings import BaseSettings

from tempay.channels import PayerActionKind, PayerField
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
from tempay.errors import ProviderUnsupported
from tempay.settings import Settings
from tempay.statements import StatementLine

# Whatever a provider notification can be about.
ProviderObservation = PaymentObservation | RefundObservation | TransferObservation


@dataclass(frozen=True)
class Acknowledgement:
    """The exact answer a provider expects once a notification is safely held."""

    status_code: int = 200
    body: str = ""
    media_type: str = "text/plain"


class ProviderAdapter(ABC):
    name: str
    # The provider's own day, for statements and reconciliation (tempay/statements.py).
    statement_timezone: str = "UTC"

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

    def statement(self, day: date) -> AsyncIterator[StatementLine]:
        """The provider's statement for `day` (its own timezone), line by line, streamed
        with bounded memory. Raises StatementError for a statement that is malformed, fails
        its hash, or belongs to another merchant; ProviderError when it cannot be fetched
        (retry); ProviderUnsupported when the provider has none."""
        raise ProviderUnsupported(f"{self.name} offers no statements")

    @property
    def offers_statements(self) -> bool:
        return type(self).statement is not ProviderAdapter.statement

    def parse_any_notification(
        self, headers: Mapping[str, str], body: bytes
    ) -> ProviderObservation:
        """Like `parse_notification`, for every kind of notification the provider sends
        (payments, refunds, transfers); route the result by its type."""
        return self.parse_notification(headers, body)

    async def aclose(self) -> None:  # noqa: B027 - adapters without connections need nothing
        """Release connections."""


S = TypeVar("S", bound=BaseSettings)


@dataclass(frozen=True)
class ChannelSpec:
    """One payment product of a provider, as the core checks an order for it."""

    # The order's `channel` value.
    name: str
    # What the checkout answer hands the payer (tempay/channels.py).
    action: PayerActionKind
    # The payer details an order on it must carry (422 without them); others are dropped.
    needs: frozenset[PayerField] = frozenset()
    # One line for `--help` and the API document.
    description: str = ""
    # The payer's IP must be a public address (the provider compares it with the payer's
    # network as the internet sees it): a private, loopback or reserved one is refused.
    public_payer_ip: bool = False


@dataclass(frozen=True)
class ProviderSpec(Generic[S]):
    """A provider as its folder declares it (`PROVIDER` in its __init__.py). The registry
    lists one per line; the API's provider names and channel defaults come from there."""

    # The --provider value, the route /notify/{name} and the adapter's `name`.
    name: str
    # Its own settings (TEMPAY_<NAME>_*), read from the environment; a malformed value raises.
    settings: Callable[[], S]
    # Whether this deployment offers it, from tempay's settings and its own.
    enabled: Callable[[Settings, S], bool]
    # The adapter; a configuration that cannot work raises, naming the variable (never a secret).
    build: Callable[[Settings, S], ProviderAdapter]
    # The payment products the adapter offers (`channel`); an order naming another is refused
    # before anything starts. Empty: the provider takes no channel.
    channels: tuple[ChannelSpec, ...] = ()
    # The channel an order gets when the caller names none; None: it takes no channel.
    default_channel: str | None = None

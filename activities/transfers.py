"""Transfer activities: pay a withdrawal out at its provider, and ask how the payout went.

Money must never leave twice. `create_transfer` is never retried blindly: when its outcome is
unknown (the request may have reached the provider) it fails with the non-retryable
`TransferOutcomeUnknown`, and the workflow asks `query_transfer` before creating again.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from providers.base import ProviderAdapter
from tempay.domain import TransferObservation, WithdrawalOrder
from tempay.errors import (
    PROVIDER_REJECTED,
    UNKNOWN_PROVIDER,
    ProviderError,
    ProviderOutcomeUnknown,
    ProviderRefused,
    ProviderRejected,
)

# ApplicationError types of create_transfer only, which WithdrawalWorkflow tells apart (with
# PROVIDER_REJECTED: refused, nothing was paid).
OUTCOME_UNKNOWN = "TransferOutcomeUnknown"  # may have reached the provider: query first
NOT_SENT = "ProviderUnreachable"  # never reached the provider: safe to create again


class TransferActivities:
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

    @activity.defn(name="create_transfer")
    async def create_transfer(self, order: WithdrawalOrder) -> TransferObservation:
        adapter = self._adapter(order.provider)
        try:
            answer = await adapter.create_transfer(order.transfer_request())
        except ProviderOutcomeUnknown as exc:
            raise ApplicationError(str(exc), type=OUTCOME_UNKNOWN, non_retryable=True) from exc
        except ProviderRefused as exc:
            raise ApplicationError(
                str(exc), {"code": exc.code}, type=PROVIDER_REJECTED, non_retryable=True
            ) from exc
        except ProviderRejected as exc:
            raise ApplicationError(str(exc), type=PROVIDER_REJECTED, non_retryable=True) from exc
        except ProviderError as exc:
            # The connection was never made: nothing reached the provider.
            raise ApplicationError(str(exc), type=NOT_SENT) from exc
        return answer.reported_by(order.provider)

    @activity.defn(name="query_transfer")
    async def query_transfer(self, order: WithdrawalOrder) -> TransferObservation | None:
        """None: the provider never received the transfer, so no money moved."""
        try:
            found = await self._adapter(order.provider).query_transfer(order.transfer_request())
        except ProviderRejected as exc:
            raise ApplicationError(str(exc), type=PROVIDER_REJECTED, non_retryable=True) from exc
        return None if found is None else found.reported_by(order.provider)

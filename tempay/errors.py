"""Every error that crosses a module boundary, and the names Temporal carries them by.

A workflow sees an activity's failure only as an `ApplicationError` with a `type` string;
the strings below are those types, written once. Errors private to one module (a parser's
`_BadData`, the HTTP server's `BodyTooLarge`) stay beside their code.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

# ApplicationError types: what activities raise and workflows match on.
PROVIDER_REJECTED = "ProviderRejected"  # refused; nothing moved, retrying will not help
UNKNOWN_PROVIDER = "UnknownProvider"  # no adapter by that name on this worker
REFUSED_BY_PROVIDER = (PROVIDER_REJECTED, UNKNOWN_PROVIDER)  # both end the attempt for good
REFUND_REFUSED = "RefundRefused"  # a refund update the payment refuses
MERCHANT_UNREACHABLE = "MerchantUnreachable"
MERCHANT_REFUSED = "MerchantRefused"
# A statement that cannot be trusted or does not exist: the reconciliation fails, unchanged.
STATEMENT_REFUSED = "StatementRefused"


# Input and the transaction service (CLI, /api).
class InvalidInput(ValueError):
    """Input a user can fix: the message says what is wrong."""


class TransactionNotFound(LookupError):
    """No transaction by that id."""


class WorkerUnavailable(RuntimeError):
    """Temporal holds the transaction but no worker answered a query about it."""


class OrderConflict(ValueError):
    """The order id exists with other terms: order ids are idempotency keys."""


class ActionRefused(ValueError):
    """An operator action the transaction refused (cancel a settled payment, resolve what is
    not in review, ...): nothing changed."""


class RefundRefused(ValueError):
    """The refund cannot be made (over-refund, unpaid payment, wrong currency, ...)."""


def update_refusal(exc: WorkflowUpdateFailedError) -> str:
    """Why a workflow refused an update, as its validator or handler said it."""
    cause = exc.cause
    return cause.message if isinstance(cause, ApplicationError) else str(cause or exc)


# Temporal and the payload codec.
class TemporalUnavailable(RuntimeError):
    """Temporal's frontend cannot be reached (or refused the connection)."""


class ToolMissing(RuntimeError):
    """A program tempay runs (the Temporal CLI for `tempay dev`) is not installed: the
    message says what to install."""


class TemporalConfigError(TemporalUnavailable):
    """The Temporal connection settings cannot work (a missing certificate file, a malformed
    profile): nothing was tried."""


class MetricsUnavailable(RuntimeError):
    """The worker's metrics endpoint cannot be served (port taken, bad address)."""


class CodecKeyError(InvalidInput):
    """Malformed key configuration. Messages name entries by position, never key material."""


class PayloadDecryptionError(ValueError):
    """An encrypted payload that cannot be read: unknown key id, or tampered/corrupt data."""


# The book (system of record).
class BookUnavailable(RuntimeError):
    """The book's database cannot be reached or answered with an error."""


class BookOutdated(RuntimeError):
    """The book's schema is older (or newer) than this code: the message says what to run."""


# Workflows.
class TransitionRefused(RuntimeError):
    """A status change outside a state machine's table (workflows/states.py). Not a Temporal
    failure type on purpose: it fails the workflow task (retried, visible), never the
    workflow (which would end it)."""

    def __init__(self, machine: str, current: str, new: str, allowed: frozenset[str]) -> None:
        super().__init__(
            f"a {machine} cannot go from {current} to {new} "
            f"(from {current} it can go to: {', '.join(sorted(allowed)) or 'nothing'})"
        )
        self.machine = machine
        self.current = current
        self.new = new


# Providers: what adapters raise, what activities turn into the types above.
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


class StatementError(ProviderRejected):
    """A statement that cannot be trusted or read: malformed, a hash that does not match,
    or one for another merchant or app id. The message says which; the book is unchanged."""


class UnknownProvider(LookupError):
    """No adapter by that name in this process."""


class SignatureError(Exception):
    """A signature that is missing, malformed, wrong or stale. The message says which check
    failed and never holds a secret. Every provider's signature module raises this one."""


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


# Merchant events.
class InvalidSecret(ValueError):
    """The secret is not `whsec_` followed by a base64 key of at least 24 bytes."""


class WebhookVerificationError(Exception):
    """A delivery did not verify; the message says which check failed."""

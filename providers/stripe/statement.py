"""Stripe's day, read as tempay's statement lines: the Checkout Sessions and tempay's own
PaymentIntents paid that day, and the refunds made that day (UTC, Stripe's own day), listed
through Stripe's API.

Why these lists, not balance transactions. The balance transactions list is Stripe's
ledger, but its lines name a Charge (`ch_...`) and amounts in the account's settlement
currency (converted, for a charge in another currency). tempay knows a payment by its
Checkout Session (`cs_...`) or its PaymentIntent (`pi_...`, channel stripe_payment_intent):
the provider_trade_no the book holds, in the order's own currency, and both carry the order
id (client_reference_id, metadata[order_id]). From a balance transaction, the session is one
more call per line (the sessions list by payment_intent). The sessions, PaymentIntents and
refunds lists give both directly:

- Checkout payments: `GET /v1/checkout/sessions?status=complete&created[gte]=..`
  `&created[lt]=..&expand[]=data.payment_intent.latest_charge`. A session is listed by when
  it was created, but a payment belongs to the day its charge was made: a session created
  at 23:50 may be paid after midnight. Sessions live at most 24 hours (tempay's fewer,
  MAX_ORDER_LIFETIME), so the list starts a day early and keeps the sessions whose
  PaymentIntent succeeded with a charge made in the day. The amount is the PaymentIntent's
  amount_received, in its currency.
- PaymentIntent payments: `GET /v1/payment_intents?created[gte]=..&created[lt]=..`
  `&expand[]=data.latest_charge`, from a day early for the same reason (tempay cancels its
  PaymentIntents at the order's expiry, within MAX_ORDER_LIFETIME of their creation), the
  succeeded ones with a charge made in the day. Only tempay's own are kept
  (metadata[tempay_channel]): every Checkout Session's PaymentIntent is in this list too,
  and is already its session's line; PaymentIntents made outside tempay and Checkout are
  not tempay's statement (as before channels). The line names the PaymentIntent (`pi_...`).
- Refunds: `GET /v1/refunds?created[gte]=..&created[lt]=..&expand[]=data.payment_intent`,
  the succeeded ones (a pending refund has not given money back yet; a failed or canceled
  one never will). The refund's metadata names tempay's refund_id and order_id; a refund
  made in the Dashboard has neither, and its order id comes from its PaymentIntent's
  metadata. A refund names its PaymentIntent, not the session, so its provider_trade_no
  is None; its provider_refund_no is the refund's id (`re_...`), as tempay holds it.

The lists are paginated (limit 100, starting_after, has_more) and read a page at a time.
Sessions and refunds that are not tempay's (no order id) are lines with order_id None: the
money moved all the same. A payment by a delayed method (a bank debit) belongs to the day
its charge was made, which is before it succeeded.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from providers.stripe.amounts import from_minor_units
from tempay.errors import NotificationError, StatementError
from tempay.statements import StatementLine, StatementLineKind

# How long before the day a session or a tempay PaymentIntent paid in the day may have been
# created: Stripe's longest Checkout Session lifetime (a PaymentIntent lives until tempay
# cancels it, at the order's expiry: sooner).
SESSION_LIFETIME = timedelta(hours=24)
PAGE_SIZE = 100


def day_bounds(day: date) -> tuple[int, int]:
    """The UTC day as unix seconds [start, end)."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return int(start.timestamp()), int((start + timedelta(days=1)).timestamp())


def _object(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _metadata(obj: Mapping[str, Any] | None, key: str) -> str | None:
    metadata = _object(obj.get("metadata")) if obj is not None else None
    value = metadata.get(key) if metadata is not None else None
    return str(value) if value else None


def _seconds(obj: Mapping[str, Any], what: str) -> int:
    value = obj.get("created")
    if not isinstance(value, int) or isinstance(value, bool):
        raise StatementError(f"stripe {what} {obj.get('id')} has no created time")
    return value


def session_line(
    session: Mapping[str, Any], start: int, end: int, order_id: str | None
) -> StatementLine | None:
    """A Checkout Session (its PaymentIntent and charge expanded) as a payment line, when
    it was paid with a charge made in [start, end); else None. `order_id` is the
    adapter's reading of the session (client_reference_id / metadata[order_id])."""
    if session.get("status") != "complete" or session.get("payment_status") != "paid":
        return None
    intent = _object(session.get("payment_intent"))
    if intent is None:
        raise StatementError(f"stripe Checkout Session {session.get('id')}: paid, no PaymentIntent")
    if intent.get("status") != "succeeded":
        return None
    charge = _object(intent.get("latest_charge"))
    if charge is None:
        raise StatementError(
            f"stripe Checkout Session {session.get('id')}: paid, but its PaymentIntent "
            f"{intent.get('id')} has no charge"
        )
    what = f"stripe Checkout Session {session.get('id')}"
    return _paid_line(what, intent, charge, start, end, order_id, str(session.get("id")))


def intent_line(
    intent: Mapping[str, Any], start: int, end: int, order_id: str | None
) -> StatementLine | None:
    """A PaymentIntent (its latest charge expanded) as a payment line, when it succeeded
    with a charge made in [start, end); else None."""
    if intent.get("status") != "succeeded":
        return None
    charge = _object(intent.get("latest_charge"))
    if charge is None:
        raise StatementError(f"stripe PaymentIntent {intent.get('id')}: succeeded, no charge")
    what = f"stripe PaymentIntent {intent.get('id')}"
    return _paid_line(what, intent, charge, start, end, order_id, str(intent.get("id")))


def _paid_line(
    what: str,
    intent: Mapping[str, Any],
    charge: Mapping[str, Any],
    start: int,
    end: int,
    order_id: str | None,
    trade_no: str,
) -> StatementLine | None:
    """The payment line of a succeeded PaymentIntent whose charge was made in [start, end)
    (named `trade_no`: its Checkout Session's id, or its own); else None."""
    paid_at = _seconds(charge, "charge")
    if not start <= paid_at < end:
        return None
    try:
        amount, currency = from_minor_units(intent.get("amount_received"), intent.get("currency"))
    except NotificationError as exc:
        raise StatementError(f"{what}: {exc}") from None
    return StatementLine(
        kind=StatementLineKind.PAYMENT,
        order_id=order_id,
        provider_trade_no=trade_no,
        amount=amount,
        currency=currency,
        at=datetime.fromtimestamp(paid_at, UTC),
    )


def refund_line(refund: Mapping[str, Any]) -> StatementLine | None:
    """A refund (its PaymentIntent expanded) as a refund line when it succeeded."""
    if refund.get("status") != "succeeded":
        return None
    intent = _object(refund.get("payment_intent"))
    try:
        amount, currency = from_minor_units(refund.get("amount"), refund.get("currency"))
    except NotificationError as exc:
        raise StatementError(f"stripe refund {refund.get('id')}: {exc}") from None
    return StatementLine(
        kind=StatementLineKind.REFUND,
        order_id=_metadata(refund, "order_id") or _metadata(intent, "order_id"),
        provider_trade_no=None,
        refund_id=_metadata(refund, "refund_id"),
        provider_refund_no=str(refund.get("id")),
        amount=amount,
        currency=currency,
        at=datetime.fromtimestamp(_seconds(refund, "refund"), UTC),
    )

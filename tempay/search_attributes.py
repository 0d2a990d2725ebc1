"""Custom search attributes (all Keyword). They hold no secrets."""

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

PAYMENT_STATUS = SearchAttributeKey.for_keyword("PaymentStatus")
ORDER_ID = SearchAttributeKey.for_keyword("OrderId")
PROVIDER = SearchAttributeKey.for_keyword("Provider")
TRANSACTION_KIND = SearchAttributeKey.for_keyword("TransactionKind")

ALL = (PAYMENT_STATUS, ORDER_ID, PROVIDER, TRANSACTION_KIND)


def at_start(order_id: str, provider: str, kind: str, status: str) -> TypedSearchAttributes:
    """All four, for a workflow's start: visible (and listable) from the start, with no
    update of the visibility record."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(ORDER_ID, order_id),
            SearchAttributePair(PROVIDER, provider),
            SearchAttributePair(TRANSACTION_KIND, kind),
            SearchAttributePair(PAYMENT_STATUS, status),
        ]
    )

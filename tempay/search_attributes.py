"""Custom search attributes (all Keyword). They hold no secrets."""

from temporalio.common import SearchAttributeKey

PAYMENT_STATUS = SearchAttributeKey.for_keyword("PaymentStatus")
ORDER_ID = SearchAttributeKey.for_keyword("OrderId")
PROVIDER = SearchAttributeKey.for_keyword("Provider")
TRANSACTION_KIND = SearchAttributeKey.for_keyword("TransactionKind")

ALL = (PAYMENT_STATUS, ORDER_ID, PROVIDER, TRANSACTION_KIND)

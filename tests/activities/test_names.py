"""Activity names are recorded in every workflow history: the workflows pass the activity
methods as functions, and a running workflow replays only while each keeps its name."""

from __future__ import annotations

from temporalio import activity

from activities.book import BookActivities
from activities.merchant import MerchantActivities
from activities.payments import PaymentActivities
from activities.reconciliation import ReconciliationActivities
from activities.refunds import RefundActivities
from activities.transfers import TransferActivities

# The names in recorded histories (tests/workflows/histories) and in every open workflow.
NAMES = {
    PaymentActivities: ["close_payment", "create_payment", "poll_payment", "query_payment"],
    RefundActivities: ["create_refund", "query_refund"],
    TransferActivities: ["create_transfer", "query_transfer"],
    MerchantActivities: ["notify_merchant"],
    BookActivities: ["record_then_notify_merchant", "record_transaction"],
    ReconciliationActivities: [
        "announce_discrepancies",
        "ask_provider",
        "compare_statement",
        "days_to_reconcile",
        "finish_reconciliation",
    ],
}


def test_activity_names_never_change_and_match_their_methods() -> None:
    for cls, names in NAMES.items():
        found = {}
        for attr, value in vars(cls).items():
            definition = activity._Definition.from_callable(value) if callable(value) else None
            if definition is not None:
                found[attr] = definition.name
        # workflows/local_first.py names a failed activity by its method's name.
        assert found == {name: name for name in names}, cls.__name__

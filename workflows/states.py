"""Which status may follow which: the transaction state machines, written once as data.

`next_status` is asked before every status change, in the one function that makes one
(SettlesByProvider._set_status, workflows/settling.py), and refuses any move not in the
table. A refusal is a programming error, never a provider's or a person's: raised in
workflow code it fails the workflow task, so Temporal keeps retrying it and the transaction
stays visibly stuck, at its last allowed status, for an operator, instead of settling money
twice or moving a terminal state back.

Duplicate and out-of-order news never reach this table: the workflows ignore them first.
docs/architecture.md draws these tables; tests/workflows/test_states.py keeps both in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from tempay.domain import TransactionKind, TransactionStatus
    from tempay.errors import TransitionRefused as TransitionRefused

CREATED = TransactionStatus.CREATED
PENDING = TransactionStatus.PENDING
SUCCEEDED = TransactionStatus.SUCCEEDED
FAILED = TransactionStatus.FAILED
EXPIRED = TransactionStatus.EXPIRED
NEEDS_REVIEW = TransactionStatus.NEEDS_REVIEW
PARTIALLY_REFUNDED = TransactionStatus.PARTIALLY_REFUNDED
REFUNDED = TransactionStatus.REFUNDED


@dataclass(frozen=True)
class StateMachine:
    name: str
    initial: TransactionStatus
    transitions: Mapping[TransactionStatus, frozenset[TransactionStatus]]

    def next_status(self, current: TransactionStatus, new: TransactionStatus) -> TransactionStatus:
        """`new`, when it may follow `current`; otherwise TransitionRefused."""
        allowed = self.transitions.get(current, frozenset())
        if new not in allowed:
            raise TransitionRefused(self.name, current, new, allowed)
        return new

    def edges(self) -> set[tuple[TransactionStatus, TransactionStatus]]:
        return {(a, b) for a, nexts in self.transitions.items() for b in nexts}


PAYMENT = StateMachine(
    name="payment",  # and a recharge, the same workflow
    initial=CREATED,
    transitions={
        # The provider took the order: the payer has a payment_url. The other four: the
        # create was refused (FAILED), or news drained after a failed create settled it.
        CREATED: frozenset({PENDING, SUCCEEDED, FAILED, EXPIRED, NEEDS_REVIEW}),
        # Paid, declined, closed unpaid (at expiry, by the provider or an operator's
        # cancel); paid a different amount, or the order could not be closed: a person looks.
        PENDING: frozenset({SUCCEEDED, FAILED, EXPIRED, NEEDS_REVIEW}),
        # Money arrived after the order was declined or closed: reviewed, never lost.
        FAILED: frozenset({NEEDS_REVIEW}),
        EXPIRED: frozenset({NEEDS_REVIEW}),
        # An operator accepts the money, fails the payment, or refunds what was paid.
        NEEDS_REVIEW: frozenset({SUCCEEDED, FAILED, REFUNDED}),
        # Refunds succeed (the refund ledger: refunded amounts only grow).
        SUCCEEDED: frozenset({PARTIALLY_REFUNDED, REFUNDED}),
        PARTIALLY_REFUNDED: frozenset({REFUNDED}),
        REFUNDED: frozenset(),
    },
)

PAYOUT = StateMachine(
    name="refund or withdrawal",  # money going back to a payer, or out to a payee
    initial=PENDING,
    transitions={
        # The provider reports the money moved (as ordered, or not: a person looks), that it
        # failed, or has no record of what it accepted.
        PENDING: frozenset({SUCCEEDED, FAILED, NEEDS_REVIEW}),
        # An operator accepts what the provider reported, or fails it.
        NEEDS_REVIEW: frozenset({SUCCEEDED, FAILED}),
        SUCCEEDED: frozenset(),
        FAILED: frozenset(),
    },
)

MACHINES: Mapping[TransactionKind, StateMachine] = {
    TransactionKind.PAYMENT: PAYMENT,
    TransactionKind.RECHARGE: PAYMENT,
    TransactionKind.REFUND: PAYOUT,
    TransactionKind.WITHDRAWAL: PAYOUT,
}


def next_status(
    kind: TransactionKind, current: TransactionStatus, new: TransactionStatus
) -> TransactionStatus:
    """`new`, when a `kind` may go from `current` to it; otherwise TransitionRefused."""
    return MACHINES[kind].next_status(current, new)

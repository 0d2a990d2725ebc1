"""The transaction state machines (workflows/states.py): plain tests, no Temporal."""

from __future__ import annotations

import re
from itertools import product
from pathlib import Path

import pytest

from tempay.domain import TransactionKind, TransactionStatus
from tempay.errors import TransitionRefused
from workflows.states import MACHINES, PAYMENT, PAYOUT, StateMachine, next_status

S = TransactionStatus
ARCHITECTURE = Path(__file__).parents[2] / "docs" / "architecture.md"

# The table, spelled out edge by edge as derived from the workflows' code: a change to the
# state machine has to change this list too.
PAYMENT_EDGES = {
    (S.CREATED, S.PENDING),
    (S.CREATED, S.SUCCEEDED),
    (S.CREATED, S.FAILED),
    (S.CREATED, S.EXPIRED),
    (S.CREATED, S.NEEDS_REVIEW),
    (S.PENDING, S.SUCCEEDED),
    (S.PENDING, S.FAILED),
    (S.PENDING, S.EXPIRED),
    (S.PENDING, S.NEEDS_REVIEW),
    (S.FAILED, S.NEEDS_REVIEW),
    (S.EXPIRED, S.NEEDS_REVIEW),
    (S.NEEDS_REVIEW, S.SUCCEEDED),
    (S.NEEDS_REVIEW, S.FAILED),
    (S.NEEDS_REVIEW, S.REFUNDED),
    (S.SUCCEEDED, S.PARTIALLY_REFUNDED),
    (S.SUCCEEDED, S.REFUNDED),
    (S.PARTIALLY_REFUNDED, S.REFUNDED),
}
PAYOUT_EDGES = {
    (S.PENDING, S.SUCCEEDED),
    (S.PENDING, S.FAILED),
    (S.PENDING, S.NEEDS_REVIEW),
    (S.NEEDS_REVIEW, S.SUCCEEDED),
    (S.NEEDS_REVIEW, S.FAILED),
}
KINDS = {
    TransactionKind.PAYMENT: PAYMENT_EDGES,
    TransactionKind.RECHARGE: PAYMENT_EDGES,
    TransactionKind.REFUND: PAYOUT_EDGES,
    TransactionKind.WITHDRAWAL: PAYOUT_EDGES,
}


def test_a_refunded_payment_never_goes_back_to_succeeded() -> None:
    assert S.SUCCEEDED not in PAYMENT.transitions[S.REFUNDED]


def test_the_tables_are_the_ones_derived_from_the_code() -> None:
    assert PAYMENT.edges() == PAYMENT_EDGES
    assert PAYOUT.edges() == PAYOUT_EDGES
    assert set(MACHINES) == set(TransactionKind)
    assert (PAYMENT.initial, PAYOUT.initial) == (S.CREATED, S.PENDING)


@pytest.mark.parametrize(
    ("kind", "current", "new"),
    [(kind, a, b) for kind, edges in KINDS.items() for a, b in sorted(edges)],
)
def test_every_allowed_transition_passes(kind: TransactionKind, current: S, new: S) -> None:
    assert next_status(kind, current, new) is new


@pytest.mark.parametrize(
    ("kind", "current", "new"),
    [
        (kind, a, b)
        for kind, edges in KINDS.items()
        for a, b in product(S, S)
        if (a, b) not in edges
    ],
)
def test_every_other_transition_is_refused(kind: TransactionKind, current: S, new: S) -> None:
    with pytest.raises(TransitionRefused) as refused:
        next_status(kind, current, new)
    assert (refused.value.current, refused.value.new) == (current, new)
    assert f"from {current} to {new}" in str(refused.value)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (S.REFUNDED, S.SUCCEEDED),
        (S.REFUNDED, S.PARTIALLY_REFUNDED),
        (S.PARTIALLY_REFUNDED, S.SUCCEEDED),
        (S.SUCCEEDED, S.PENDING),
        (S.SUCCEEDED, S.FAILED),
        (S.SUCCEEDED, S.NEEDS_REVIEW),
        (S.FAILED, S.SUCCEEDED),
        (S.EXPIRED, S.SUCCEEDED),
        (S.FAILED, S.PENDING),
        (S.NEEDS_REVIEW, S.PENDING),
    ],
)
def test_terminal_payment_states_never_move_back(current: S, new: S) -> None:
    with pytest.raises(TransitionRefused):
        next_status(TransactionKind.PAYMENT, current, new)


def test_a_settled_refund_or_withdrawal_never_moves() -> None:
    for kind in (TransactionKind.REFUND, TransactionKind.WITHDRAWAL):
        for current, new in product((S.SUCCEEDED, S.FAILED), S):
            with pytest.raises(TransitionRefused):
                next_status(kind, current, new)


def test_only_late_money_and_an_operator_move_a_terminal_payment() -> None:
    """Out of CREATED and PENDING, a payment moves on only to review late money, by an
    operator's decision, or by its refunds."""
    moves = {(a, b) for a, b in PAYMENT.edges() if a.is_terminal}
    assert moves == {
        (S.FAILED, S.NEEDS_REVIEW),
        (S.EXPIRED, S.NEEDS_REVIEW),
        (S.NEEDS_REVIEW, S.SUCCEEDED),
        (S.NEEDS_REVIEW, S.FAILED),
        (S.NEEDS_REVIEW, S.REFUNDED),
        (S.SUCCEEDED, S.PARTIALLY_REFUNDED),
        (S.SUCCEEDED, S.REFUNDED),
        (S.PARTIALLY_REFUNDED, S.REFUNDED),
    }
    # Nothing goes back to waiting for the payer.
    assert {(a, b) for a, b in PAYMENT.edges() if not b.is_terminal} == {(S.CREATED, S.PENDING)}


def test_no_state_follows_itself() -> None:
    for machine in (PAYMENT, PAYOUT):
        assert all(a is not b for a, b in machine.edges())


def test_the_refusal_names_both_states_and_what_is_allowed() -> None:
    with pytest.raises(TransitionRefused) as refused:
        next_status(TransactionKind.PAYMENT, S.PARTIALLY_REFUNDED, S.SUCCEEDED)
    assert str(refused.value) == (
        "a payment cannot go from PARTIALLY_REFUNDED to SUCCEEDED "
        "(from PARTIALLY_REFUNDED it can go to: REFUNDED)"
    )
    with pytest.raises(TransitionRefused, match=r"from SUCCEEDED it can go to: nothing"):
        next_status(TransactionKind.REFUND, S.SUCCEEDED, S.FAILED)


def _diagram(title: str) -> tuple[set[tuple[S, S]], set[S]]:
    """The edges and start states of the Mermaid stateDiagram under `title` in the docs."""
    text = ARCHITECTURE.read_text()
    block = re.search(rf"### {re.escape(title)}\n.*?```mermaid\n(.*?)```", text, re.S)
    assert block is not None, f"no diagram under '### {title}' in {ARCHITECTURE}"
    edges: set[tuple[S, S]] = set()
    starts: set[S] = set()
    for line in block.group(1).splitlines():
        found = re.fullmatch(r"\s*(\[\*\]|\w+)\s*-->\s*(\w+)\s*(:.*)?", line)
        if found is None:
            continue
        a, b = found.group(1), found.group(2)
        if a == "[*]":
            starts.add(S(b))
        else:
            edges.add((S(a), S(b)))
    return edges, starts


@pytest.mark.parametrize(("title", "machine"), [("Payment", PAYMENT), ("Refund", PAYOUT)])
def test_the_architecture_diagram_draws_exactly_the_table(
    title: str, machine: StateMachine
) -> None:
    edges, starts = _diagram(title)
    assert edges == machine.edges()
    assert starts == {machine.initial}

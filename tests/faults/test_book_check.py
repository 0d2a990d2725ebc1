"""The fault harness's book check (issue 20) on a real SQLite book: a book written as the
workflows write it (one write per status change, each with the journal so far) passes, and
each kind of damage a crash or a double write could leave is reported as a FAIL: a journal
entry written twice, a gap, a row missing or stuck behind its workflow, a status, amount or
provider id that disagrees with the sandbox, a row at an older write, a stranger's row."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from book import Book
from book.migrate import upgrade
from proof.book_check import check_book, journal_problems
from proof.faults import (
    Intent,
    Problem,
    ScenarioResult,
    Verdict,
    book_expectations,
    check,
    details,
    table,
)
from tempay.domain import (
    BookEntry,
    PaymentView,
    RefundView,
    StatusChange,
    TransactionKind,
    TransactionStatus,
    WithdrawalView,
)
from tempay.settings import Settings
from tests.support.faults_world import LIMIT, START, World, consistent_world

S = TransactionStatus
View = PaymentView | RefundView | WithdrawalView


@pytest.fixture
def book(tmp_path: Path) -> Iterator[Book]:
    book = Book.from_settings(Settings(data_dir=tmp_path))
    upgrade(book)
    yield book
    book.close()


def path_to(view: View) -> list[tuple[S, str]]:
    """The statuses a transaction went through to reach its view's, and what moved each."""
    if isinstance(view, PaymentView):
        path = [(S.CREATED, "create"), (S.PENDING, "create")]
        if view.status in (S.SUCCEEDED, S.PARTIALLY_REFUNDED, S.REFUNDED):
            path.append((S.SUCCEEDED, "notification"))
            if view.status is not S.SUCCEEDED:
                refunded = view.refunded_amount or Decimal(0)
                if view.status is S.REFUNDED and refunded > Decimal("4.00"):
                    path.append((S.PARTIALLY_REFUNDED, "refund"))  # 4.00, then 6.00
                path.append((view.status, "refund"))
        else:
            path.append((view.status, "notification"))
        return path
    return [(S.PENDING, "create"), (view.status, "notification")]


def journal(path: list[tuple[S, str]]) -> list[StatusChange]:
    changes, before = [], None
    for seq, (status, by) in enumerate(path, start=1):
        changes.append(
            StatusChange(
                seq=seq,
                from_status=before,
                to_status=status,
                at=START + timedelta(seconds=seq),
                by=by,
            )
        )
        before = status
    return changes


def write(book: Book, view: View, changes: list[StatusChange], version: int) -> None:
    """One book write as the workflow's writer makes it: the row as of the newest change."""
    book.record(
        BookEntry(
            version=version,
            at=START + timedelta(seconds=version),
            created_at=START,
            view=view,
            changes=changes,
        )
    )


def write_history(book: Book, view: View, path: list[tuple[S, str]] | None = None) -> int:
    """Every status change written as its own write (view as of that change, journal so far);
    returns the number of writes, the version the workflow last asked for."""
    changes = journal(path or path_to(view))
    for n in range(1, len(changes) + 1):
        status = changes[n - 1].to_status
        step = view if n == len(changes) else view.model_copy(update={"status": status})
        write(book, step, changes[:n], n)
    return len(changes)


def views(world: World) -> Iterator[View]:
    for group in (world.observed.payments, world.observed.refunds, world.observed.withdrawals):
        for view in group.values():
            if view is not None:
                yield view


def with_provider_ids(world: World) -> World:
    """The test checker's world, with what the sandbox records beside it: each trade's,
    refund's and transfer's provider number, in the views too, and the money each moved."""
    for order_id, trade in world.truth.trades.items():
        assert trade is not None
        trade["trade_no"] = f"SBX{order_id}"
        view = world.observed.payments[order_id]
        assert view is not None
        view.provider_trade_no = trade["trade_no"]
        view.settled_by = "notification"
    for refund in world.truth.refunds:
        refund["refund_no"] = f"SBR{refund['out_request_no']}"
        rview = world.observed.refunds[refund["out_request_no"]]
        assert rview is not None
        rview.provider_refund_no = refund["refund_no"]
        rview.refunded_amount = Decimal(refund["refund_amount"])
    for transfer in world.truth.transfers:
        transfer["transfer_no"] = f"SBT{transfer['out_biz_no']}"
        wview = world.observed.withdrawals[transfer["out_biz_no"]]
        assert wview is not None
        wview.provider_transfer_no = transfer["transfer_no"]
        if transfer["status"] == "TRANSFER_SUCCESS":
            wview.paid_amount = Decimal(transfer["amount"])
    return world


@dataclass
class Booked:
    world: World
    book: Book
    asked: dict[str, int]

    def verdict(self) -> Verdict:
        w = self.world
        return check(w.plan, w.observed, w.truth, w.deliveries, LIMIT, True, self.book, self.asked)

    def problems(self) -> list[str]:
        return self.verdict().problems.get(Problem.BOOK, [])

    def one(self, match: str) -> str:
        """The book problems, which must be exactly one (containing `match`)."""
        problems = self.problems()
        assert len(problems) == 1 and match in problems[0], problems
        return problems[0]


def booked(book: Book, skip: str | None = None) -> Booked:
    """A consistent world and its book, every transaction written (but `skip`, by id)."""
    world = with_provider_ids(consistent_world())
    asked = {}
    for view in views(world):
        if view.workflow_id != skip:
            asked[view.workflow_id] = write_history(book, view)
    return Booked(world, book, asked)


def paid(world: World) -> PaymentView:
    payment = next(p for p in world.plan.payments if p.intent is Intent.PAY and not p.refunds)
    view = world.observed.payments[payment.order_id]
    assert view is not None
    return view


def test_a_whole_book_passes(book: Book) -> None:
    state = booked(book)
    verdict = state.verdict()
    assert verdict.passed, verdict.problems
    assert verdict.count(Problem.BOOK) == 0
    # Every transaction was looked at: each has its row, and all of them are the world's.
    assert len(book.rows()) == state.world.plan.size
    expected, _ = book_expectations(
        state.world.plan, state.world.observed, state.world.truth, state.asked
    )
    assert len(expected) == state.world.plan.size
    found = check_book(book, expected)
    assert found.problems == [] and found.differences == []


def test_a_journal_entry_written_twice_is_reported(book: Book) -> None:
    """The settlement's entry written again under the next seq, as a write that did not know
    the first had landed would."""
    state = booked(book)
    view = paid(state.world)
    changes = journal(path_to(view))
    again = changes[-1].model_copy(update={"seq": len(changes) + 1})
    write(book, view, [*changes, again], len(changes) + 1)
    state.asked[view.workflow_id] = len(changes) + 1
    problems = state.problems()
    assert not state.verdict().passed
    assert any("PENDING -> SUCCEEDED 2 times" in p for p in problems), problems
    assert any("seq 4 leaves PENDING, but seq 3 arrived at SUCCEEDED" in p for p in problems)
    assert all(view.order_id in p for p in problems)


def test_a_gap_in_the_journal_is_reported(book: Book) -> None:
    state = booked(book, skip=paid(booked_world_probe()).workflow_id)
    view = paid(state.world)
    changes = journal(path_to(view))
    gapped = [changes[0], changes[2].model_copy(update={"seq": 4})]  # seq 2 and 3 never written
    write(book, view, gapped, 3)
    state.asked[view.workflow_id] = 3
    problems = state.problems()
    assert any("no seq [2, 3] (of 1..4)" in p for p in problems), problems
    assert any("leaves PENDING, but seq 1 arrived at CREATED" in p for p in problems)
    assert not state.verdict().passed


def booked_world_probe() -> World:
    """The world `booked` builds (same plan ids), to name a transaction before writing it."""
    return with_provider_ids(consistent_world())


def test_a_missing_row_is_reported(book: Book) -> None:
    world = booked_world_probe()
    withdrawal = world.plan.withdrawals[0]
    state = booked(book, skip=withdrawal.workflow_id)
    state.one(f"withdrawal {withdrawal.withdrawal_id}: book: no row for {withdrawal.workflow_id}")
    assert not state.verdict().passed


def test_a_row_stuck_before_its_settlement_is_reported(book: Book) -> None:
    """The settlement's write never landed: the row is PENDING, one write behind."""
    view = paid(booked_world_probe())
    state = booked(book, skip=view.workflow_id)
    path = path_to(view)
    changes = journal(path)
    write(book, view.model_copy(update={"status": S.CREATED}), changes[:1], 1)
    write(book, view.model_copy(update={"status": S.PENDING}), changes[:2], 2)
    state.asked[view.workflow_id] = 3
    problems = state.problems()
    assert f"payment {view.order_id}: book: status PENDING, the workflow ended SUCCEEDED" in (
        problems
    )
    assert f"payment {view.order_id}: book: status PENDING, the provider says SUCCEEDED" in (
        problems
    )
    assert any("holds write 2, the workflow's newest is 3" in p for p in problems), problems


def test_a_journal_that_ends_elsewhere_than_its_row_is_reported(book: Book) -> None:
    view = paid(booked_world_probe())
    state = booked(book, skip=view.workflow_id)
    write(book, view, journal(path_to(view))[:2], 3)  # a SUCCEEDED row, its journal at PENDING
    state.asked[view.workflow_id] = 3
    state.one("journal ends at PENDING, the row says SUCCEEDED")


def test_a_journal_that_does_not_start_at_create_is_reported(book: Book) -> None:
    view = paid(booked_world_probe())
    state = booked(book, skip=view.workflow_id)
    path = [(S.PENDING, "create"), (S.SUCCEEDED, "notification")]
    state.asked[view.workflow_id] = write_history(book, view, path)
    state.one("journal starts None -> PENDING by create, not CREATED by create")


def test_a_status_the_sandbox_disagrees_with_is_reported(book: Book) -> None:
    """The workflow and its book agree, the provider does not: the book is wrong too."""
    state = booked(book)
    withdrawal = state.world.plan.withdrawals[0]  # to a real payee: TRANSFER_SUCCESS
    transfers = state.world.truth.transfers
    transfer = next(t for t in transfers if t["out_biz_no"] == withdrawal.withdrawal_id)
    transfer["status"] = "TRANSFER_FAILED"
    problems = state.problems()
    assert (
        f"withdrawal {withdrawal.withdrawal_id}: book: status SUCCEEDED, the provider says FAILED"
        in problems
    ), problems
    # Nothing left the provider's account: the book's paid amount disagrees as well.
    assert any("settled amount 25.00, the provider moved None" in p for p in problems)


def test_a_paid_payment_the_book_calls_expired_is_reported(book: Book) -> None:
    """Paid at the sandbox, EXPIRED in the book (and nothing paid): both are reported."""
    view = paid(booked_world_probe())
    state = booked(book, skip=view.workflow_id)
    expired = view.model_copy(update={"status": S.EXPIRED, "paid_amount": None})
    path = [(S.CREATED, "create"), (S.PENDING, "create"), (S.EXPIRED, "close")]
    state.asked[view.workflow_id] = write_history(book, expired, path)
    problems = state.problems()
    assert f"payment {view.order_id}: book: status EXPIRED, the provider says SUCCEEDED" in (
        problems
    )
    assert f"payment {view.order_id}: book: status EXPIRED, the workflow ended SUCCEEDED" in (
        problems
    )
    assert any("settled amount None, the provider moved 10.00" in p for p in problems)


def test_an_amount_off_by_a_cent_is_reported(book: Book) -> None:
    view = paid(booked_world_probe())
    state = booked(book, skip=view.workflow_id)
    state.asked[view.workflow_id] = write_history(
        book, view.model_copy(update={"paid_amount": Decimal("9.99")})
    )
    state.one("settled amount 9.99, the provider moved 10.00")


def test_another_provider_trade_number_is_reported(book: Book) -> None:
    view = paid(booked_world_probe())
    state = booked(book, skip=view.workflow_id)
    state.asked[view.workflow_id] = write_history(
        book, view.model_copy(update={"provider_trade_no": "SBX-someone-else"})
    )
    state.one(f"provider id SBX-someone-else, the provider's is SBX{view.order_id}")


def test_a_settlement_the_book_took_from_a_lost_workflow_task_is_noted(book: Book) -> None:
    """A worker killed after its task wrote the settlement: the task's re-run settles again
    later, at the same version, and the book keeps the first write's time. Status, money and
    journal agree, so it passes, with a note naming it."""
    view = paid(booked_world_probe())
    state = booked(book, skip=view.workflow_id)
    assert view.settled_at is not None
    first = view.model_copy(update={"settled_at": view.settled_at - timedelta(seconds=10)})
    state.asked[view.workflow_id] = write_history(book, first)
    write_history(book, view)  # the re-run: same versions, changes nothing
    verdict = state.verdict()
    assert verdict.passed, verdict.problems
    assert any(
        n.startswith("book: 1 settlements as a workflow task lost to the fault wrote them")
        and f"payment {view.order_id}: settled_at 10.0 s before the workflow's" in n
        for n in verdict.notes
    ), verdict.notes


def test_a_refund_total_the_provider_disagrees_with_is_reported(book: Book) -> None:
    """The payment's row says less was refunded than the provider gave back."""
    world = booked_world_probe()
    order_id = world.plan.refunds[0].order_id
    view = world.observed.payments[order_id]
    assert view is not None and view.refunded_amount
    state = booked(book, skip=view.workflow_id)
    short = view.refunded_amount - Decimal("0.01")
    state.asked[view.workflow_id] = write_history(
        book, view.model_copy(update={"refunded_amount": short})
    )
    state.one(f"refunded {short}, the provider {view.refunded_amount}")


def test_a_row_at_an_older_write_than_asked_is_reported(book: Book) -> None:
    """The workflow asked for a fourth write (refund totals, say) that the book never took."""
    state = booked(book)
    view = paid(state.world)
    state.asked[view.workflow_id] += 1
    state.one("holds write 3, the workflow's newest is 4 (a write missing, or the row went back)")


def test_a_row_nobody_made_is_reported(book: Book) -> None:
    state = booked(book)
    stranger = paid(state.world).model_copy(
        update={"workflow_id": "payment-stranger", "order_id": "stranger"}
    )
    write_history(book, stranger)
    state.one("book: a row for payment-stranger, which the scenario never made")


def test_a_refused_refund_needs_no_row() -> None:
    """A refund the engine refused was never made: no row expected, none reported."""
    world = booked_world_probe()
    refund = world.plan.refunds[0]
    refund.refused = "payment is FAILED: not refunded"
    expected, known = book_expectations(world.plan, world.observed, world.truth, {})
    assert f"refund-{refund.refund_id}" in known
    assert all(e.workflow_id != f"refund-{refund.refund_id}" for e in expected)


def test_a_journal_seq_written_twice_is_reported() -> None:
    """The book's key forbids it; the check does not rely on that."""
    changes = journal([(S.CREATED, "create"), (S.PENDING, "create")])
    twice = [*changes, changes[1]]
    problems = journal_problems("payment x", TransactionKind.PAYMENT, "PENDING", twice)
    assert "payment x: book: journal seq [2] written more than once" in problems


def test_an_impossible_transition_is_reported() -> None:
    changes = journal([(S.PENDING, "create"), (S.SUCCEEDED, "notification"), (S.FAILED, "x")])
    problems = journal_problems("refund r", TransactionKind.REFUND, "FAILED", changes)
    assert problems == [
        "refund r: book: journal seq 3 SUCCEEDED -> FAILED is not a refund or withdrawal transition"
    ]


def test_the_table_counts_book_problems(book: Book) -> None:
    state = booked(book)
    state.asked[paid(state.world).workflow_id] += 1
    result = ScenarioResult("kill-worker", state.verdict(), "4x SIGKILL worker", 1.0)
    rows = table([result]).splitlines()
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    values = [c.strip() for c in rows[2].strip("|").split("|")]
    assert dict(zip(header, values, strict=True))["book"] == "1"
    assert values[-1] == "FAIL"
    assert any(": book: " in line for line in details(result))

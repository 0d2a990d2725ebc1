"""`tempay faults` itself, proven at a tiny size: the provider-faults scenario (notifications
dropped, duplicated and reordered, status queries failing) on a private embedded stack, with
every transaction checked against the sandbox's ground truth, the merchant's deliveries and the
book (its row and journal, and the newest write its workflow asked for)."""

from __future__ import annotations

import pytest

from proof.faults import SCENARIOS, Problem, run_scenario, table

pytestmark = pytest.mark.e2e


async def test_provider_faults_at_ten_payments_pass() -> None:
    result = await run_scenario(
        SCENARIOS["provider-faults"], payments=10, concurrency=10, quiet=True
    )
    verdict = result.verdict
    print("\n" + table([result]))
    assert verdict.passed, verdict.problems
    # 10 payments, 2 withdrawals, the refund of the one refunded payment: all of them checked.
    assert verdict.transactions == 13
    assert all(verdict.count(p) == 0 for p in Problem)
    assert 0 < verdict.max_settle_seconds <= verdict.limit_seconds
    # The book was checked too, each row against the newest write its workflow asked for.
    assert (
        "book: 13 transactions checked, row and journal; 13 of them against the newest write "
        "their workflow asked for"
    ) in verdict.notes

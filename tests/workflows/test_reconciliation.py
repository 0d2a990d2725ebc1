"""ReconciliationWorkflow on the time-skipping server, its activities faked behind their real
names: a comparison that fails (a worker lost mid-run) is retried and the run goes on; a
statement refused fails the run with its reason before anything else happens; a merchant
that is down delays the announcement, never drops it; a scheduled run reconciles each
missed day once, as its own child."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tempay.errors import STATEMENT_REFUSED
from tempay.statements import (
    AskProvider,
    Comparison,
    DayRequest,
    ReconcileRequest,
    ReconciliationCounts,
)
from workflows.reconciliation import ReconciliationWorkflow, reconciliation_id

DAY = date(2026, 12, 5)


@dataclass
class FakeReconciling:
    compare_failures: int = 0
    announce_failures: int = 0
    refuse_statement: bool = False
    days: list[date] = field(default_factory=lambda: [DAY])
    calls: list[str] = field(default_factory=list)

    @activity.defn(name="days_to_reconcile")
    async def days_to_reconcile(self, provider: str) -> list[date]:
        return self.days

    @activity.defn(name="compare_statement")
    async def compare_statement(self, request: DayRequest) -> Comparison:
        self.calls.append(f"compare {request.day}")
        if self.refuse_statement:
            raise ApplicationError(
                "sandbox statement for 2026-12-05: "
                "the bill names account 2088999 (expected 2088000)",
                type=STATEMENT_REFUSED,
                non_retryable=True,
            )
        if self.compare_failures:
            self.compare_failures -= 1
            raise RuntimeError("worker lost")
        return Comparison(
            statement_lines=4,
            counts=ReconciliationCounts(matched=2, status_mismatch=1, amount_mismatch=1),
            to_query=["payment-dropped"],
            to_review=1,
        )

    @activity.defn(name="ask_provider")
    async def ask_provider(self, request: AskProvider) -> str:
        self.calls.append(f"ask {request.workflow_id}")
        return "status query asked: now SUCCEEDED"

    @activity.defn(name="announce_discrepancies")
    async def announce_discrepancies(self, request: DayRequest) -> int:
        self.calls.append("announce")
        if self.announce_failures:
            self.announce_failures -= 1
            raise RuntimeError("merchant webhook answered HTTP 500")
        return 1

    @activity.defn(name="finish_reconciliation")
    async def finish_reconciliation(self, request: DayRequest) -> None:
        self.calls.append(f"finish {request.day}")


async def run(
    env: WorkflowEnvironment, fake: FakeReconciling, request: ReconcileRequest, workflow_id: str
) -> list[Comparison]:
    client: Client = env.client
    queue = f"tq-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[ReconciliationWorkflow],
        activities=[
            fake.days_to_reconcile,
            fake.compare_statement,
            fake.ask_provider,
            fake.announce_discrepancies,
            fake.finish_reconciliation,
        ],
    ):
        return await client.execute_workflow(
            ReconciliationWorkflow.run, request, id=workflow_id, task_queue=queue
        )


async def test_a_lost_comparison_is_retried_and_the_run_goes_on(
    time_env: WorkflowEnvironment,
) -> None:
    fake = FakeReconciling(compare_failures=2, announce_failures=3)
    [result] = await run(
        time_env,
        fake,
        ReconcileRequest(provider="sandbox", day=DAY),
        f"{reconciliation_id('sandbox', DAY)}-{uuid.uuid4().hex[:4]}",
    )
    assert result.counts.status_mismatch == 1
    assert fake.calls == [
        "compare 2026-12-05",
        "compare 2026-12-05",
        "compare 2026-12-05",
        "ask payment-dropped",
        *["announce"] * 4,  # the merchant down three times: delayed, not dropped
        "finish 2026-12-05",
    ]


async def test_a_refused_statement_fails_the_run_with_its_reason_and_nothing_else(
    time_env: WorkflowEnvironment,
) -> None:
    fake = FakeReconciling(refuse_statement=True)
    with pytest.raises(WorkflowFailureError) as failure:
        await run(
            time_env,
            fake,
            ReconcileRequest(provider="sandbox", day=DAY),
            f"reconcile-refused-{uuid.uuid4().hex[:4]}",
        )
    assert "names account 2088999" in str(getattr(failure.value.cause, "cause", None))
    assert fake.calls == ["compare 2026-12-05"]  # not retried, nothing asked, not closed


async def test_a_scheduled_run_reconciles_each_missed_day_as_its_own_child(
    time_env: WorkflowEnvironment,
) -> None:
    earlier = date(2026, 12, 3)
    fake = FakeReconciling(days=[earlier, DAY])
    results = await run(
        time_env,
        fake,
        ReconcileRequest(provider=f"p{uuid.uuid4().hex[:6]}"),
        f"reconcile-scheduled-{uuid.uuid4().hex[:4]}",
    )
    assert len(results) == 2
    assert [c for c in fake.calls if c.startswith("finish")] == [
        "finish 2026-12-03",
        "finish 2026-12-05",
    ]

"""Manual actions by operators: recorded in the view (and, as update arguments, in history)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from tempay.domain import (
        OperatorAction,
        OperatorActionRecord,
        ReviewDecision,
        ReviewResolution,
        TransactionStatus,
    )


class HasActions(Protocol):
    workflow_id: str
    operator_actions: list[OperatorActionRecord]


def record(view: HasActions, action: str, by: OperatorAction) -> None:
    view.operator_actions.append(
        OperatorActionRecord(
            action=action, operator=by.operator, reason=by.reason, at=workflow.now()
        )
    )
    workflow.logger.info("%s: %s by %s (%s)", view.workflow_id, action, by.operator, by.reason)


def operator_lines(records: list[OperatorActionRecord]) -> list[str]:
    return [
        f"- operator {r.operator}: {r.action} at {r.at:%Y-%m-%d %H:%M:%S} UTC ({r.reason})"
        for r in records
    ]


def query_problem(what: str, status: TransactionStatus) -> None:
    """Raise (refusing the update) unless a status query can still change `what`."""
    if status.is_terminal:
        raise ValueError(f"{what} is {status}: status queries are for a pending transaction")


def review_problem(what: str, status: TransactionStatus, resolution: ReviewResolution) -> None:
    """Raise (refusing the update) unless `what` is in review and the decision applies."""
    if status is not TransactionStatus.NEEDS_REVIEW:
        raise ValueError(f"{what} is {status}: only a NEEDS_REVIEW transaction can be resolved")
    if resolution.decision is ReviewDecision.REFUND:
        raise ValueError(f"{what}: 'refund' resolves payments only; accept or fail it")


async def await_decision(status: Callable[[], TransactionStatus], window: timedelta) -> None:
    """In NEEDS_REVIEW, wait (up to `window`) for an operator's decision."""
    if status() is TransactionStatus.NEEDS_REVIEW and window > timedelta(0):
        try:
            await workflow.wait_condition(
                lambda: status() is not TransactionStatus.NEEDS_REVIEW,
                timeout=window,
                timeout_summary="waiting for an operator's decision",
            )
        except TimeoutError:
            workflow.logger.error("still NEEDS_REVIEW after %s: ending undecided", window)

"""Acting on transactions: an operator's manual action, as a validated workflow update
recorded with the operator and the reason."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from tempay.domain import (
    OperatorAction,
    PaymentView,
    RefundView,
    ReviewResolution,
    TransactionKind,
    WithdrawalView,
    parse_order_id,
    payment_workflow_id,
    refund_workflow_id,
    withdrawal_workflow_id,
)
from tempay.errors import ActionRefused, InvalidInput, TransactionNotFound, update_refusal

ACTIONS = {"status_query": "force_status_query", "cancel": "cancel", "resolve": "resolve_review"}
VIEWS: dict[TransactionKind, tuple[Any, type[Any]]] = {
    TransactionKind.PAYMENT: (payment_workflow_id, PaymentView),
    TransactionKind.REFUND: (refund_workflow_id, RefundView),
    TransactionKind.WITHDRAWAL: (withdrawal_workflow_id, WithdrawalView),
}


async def operator_action(
    client: Client,
    kind: TransactionKind,
    transaction_id: str,
    action: str,
    by: OperatorAction | ReviewResolution,
) -> PaymentView | RefundView | WithdrawalView:
    """Run a manual action (a validated update, recorded with operator and reason) on a
    payment (by order id), refund (by refund id) or withdrawal (by withdrawal id)."""
    if action == "cancel" and kind is not TransactionKind.PAYMENT:
        raise InvalidInput("only a payment can be cancelled")
    workflow_id_of, view_type = VIEWS[kind]
    workflow_id = workflow_id_of(parse_order_id(transaction_id))
    handle = client.get_workflow_handle(workflow_id, result_type=view_type)
    try:
        result: PaymentView | RefundView | WithdrawalView = await handle.execute_update(
            ACTIONS[action], by, result_type=view_type
        )
    except WorkflowUpdateFailedError as exc:
        raise ActionRefused(update_refusal(exc)) from None
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            try:
                await handle.describe()
            except RPCError:
                raise TransactionNotFound(f"no {kind} {transaction_id!r}") from None
            raise ActionRefused(
                f"{kind} {transaction_id} has ended ({workflow_id} is closed): nothing to act on"
            ) from None
        raise
    return result

"""Starting and reading transactions from outside Temporal: the CLI, demo and benchmark."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from tempay import search_attributes as sa
from tempay.domain import (
    PAYMENT_REVISION,
    CheckoutInfo,
    InvalidInput,
    OperatorAction,
    PaymentOrder,
    PaymentView,
    RefundAccepted,
    RefundRequest,
    RefundView,
    ReviewResolution,
    SettlementTiming,
    TransactionKind,
    TransactionStatus,
    WithdrawalOrder,
    WithdrawalSubmitted,
    WithdrawalView,
    parse_amount,
    parse_currency,
    parse_order_id,
    payment_workflow_id,
    refund_workflow_id,
    withdrawal_workflow_id,
)
from tempay.settings import Settings
from workflows.payment import REFUNDABLE, PaymentWorkflow
from workflows.refund import RefundWorkflow
from workflows.withdrawal import WithdrawalWorkflow

V = TypeVar("V")


def _reason(exc: WorkflowUpdateFailedError) -> str:
    """Why the workflow refused an update, as its validator or handler said it."""
    cause = exc.cause
    return cause.message if isinstance(cause, ApplicationError) else str(cause or exc)


class TransactionNotFound(LookupError):
    pass


class WorkerUnavailable(RuntimeError):
    pass


class OrderConflict(ValueError):
    """The order id exists with other terms: order ids are idempotency keys."""


def settlement_timing(settings: Settings) -> SettlementTiming:
    return SettlementTiming(
        first_status_query_delay=settings.first_status_query_delay,
        status_query_backoff_cap=settings.status_query_backoff_cap,
        expires_after=settings.payment_expiry,
        late_payment_window=settings.late_payment_window,
        refund_window=settings.refund_window,
        review_window=settings.review_window,
        status_query_task_queue=settings.status_query_task_queue,
    )


def chosen_provider(settings: Settings, provider: str | None) -> str:
    """The provider named, else the deployment's default; never a silent guess: outside
    `tempay dev` (where the sandbox is the default) a provider must be named or configured."""
    chosen = provider or settings.provider_default
    if not chosen:
        raise InvalidInput(
            'name the provider (--provider, or "provider" in /api): this deployment has no '
            "default (TEMPAY_DEFAULT_PROVIDER; the sandbox is the default only under `tempay dev`)"
        )
    return parse_provider(chosen)


def build_order(
    settings: Settings,
    *,
    order_id: str,
    amount: str | Decimal,
    currency: str,
    provider: str | None = None,
    channel: str = "alipay_wap",
    subject: str = "",
    return_url: str = "",
    kind: TransactionKind = TransactionKind.PAYMENT,
    account_id: str | None = None,
    timing: SettlementTiming | None = None,
) -> PaymentOrder:
    """Validate a merchant's order; raises InvalidInput with a message a user can act on."""
    currency = parse_currency(currency)
    order_id, amount = parse_order_id(order_id), parse_amount(amount, currency)
    provider = chosen_provider(settings, provider)  # after the terms: their errors come first
    return PaymentOrder(
        order_id=order_id,
        amount=amount,
        currency=currency,
        kind=kind,
        provider=provider,
        channel=channel,
        subject=subject,
        notify_url=f"{settings.webhook_url.rstrip('/')}/notify/{provider}",
        return_url=return_url,
        account_id=account_id,
        timing=timing or settlement_timing(settings),
        revision=PAYMENT_REVISION,
    )


async def start_payment(client: Client, settings: Settings, order: PaymentOrder) -> CheckoutInfo:
    """Start (or find) the order's workflow and return once the payer has a payment_url."""
    start = WithStartWorkflowOperation(
        PaymentWorkflow.run,
        order,
        id=order.workflow_id,
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        # A finished order is never started again: its id stays its idempotency key.
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        static_summary=(
            f"{order.kind} {order.order_id}: {order.amount} {order.currency} via {order.provider}"
        ),
        search_attributes=sa.at_start(
            order.order_id, order.provider, str(order.kind), str(TransactionStatus.CREATED)
        ),
    )
    try:
        return await client.execute_update_with_start_workflow(
            PaymentWorkflow.checkout, order, start_workflow_operation=start
        )
    except WorkflowUpdateFailedError as exc:
        raise OrderConflict(_reason(exc)) from None
    except WorkflowAlreadyStartedError:
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await start.workflow_handle()  # the operation holds the same error: consume it
        view = await payment_view(client, order.order_id)
        terms = (view.amount, view.currency, view.kind, view.provider, view.account_id)
        if terms != (order.amount, order.currency, order.kind, order.provider, order.account_id):
            raise OrderConflict(
                f"order {order.order_id} already exists with different terms: "
                f"{view.kind} of {view.amount} {view.currency}"
            ) from None
        return CheckoutInfo.of(view)


async def _view(client: Client, workflow_id: str, result_type: type[V], query: Any, what: str) -> V:
    """A transaction's view: its result once completed, else its workflow's `details`."""
    handle = client.get_workflow_handle(workflow_id, result_type=result_type)
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise TransactionNotFound(f"no {what}") from None
        raise
    if description.status is WorkflowExecutionStatus.COMPLETED:
        return await handle.result()
    try:
        return await handle.query(query)
    except RPCError as exc:
        # A query runs on a worker; without one, the server can only say which status.
        status = description.typed_search_attributes.get(sa.PAYMENT_STATUS)
        raise WorkerUnavailable(
            f"{what} is {status or 'running'}, but no worker answered "
            f"for its details ({exc.message}): is `tempay dev` or `tempay worker` running?"
        ) from None


async def payment_view(client: Client, order_id: str) -> PaymentView:
    return await _view(
        client,
        payment_workflow_id(order_id),
        PaymentView,
        PaymentWorkflow.details,
        f"transaction for order {order_id!r}",
    )


def build_withdrawal(
    settings: Settings,
    *,
    withdrawal_id: str,
    amount: str | Decimal,
    currency: str,
    payee_account: str,
    payee_name: str = "",
    provider: str | None = None,
    timing: SettlementTiming | None = None,
) -> WithdrawalOrder:
    """Validate a withdrawal; raises InvalidInput with a message a user can act on."""
    try:
        withdrawal_id = parse_order_id(withdrawal_id)
    except InvalidInput:
        raise InvalidInput(
            f"withdrawal id {withdrawal_id!r} must be 1-64 characters of letters, digits, "
            "'_', '-' or '.'"
        ) from None
    currency = parse_currency(currency)
    payee_account = payee_account.strip()
    if not payee_account or len(payee_account) > 128:
        raise InvalidInput("--payee-account must name the payee's account (1-128 characters)")
    if len(payee_name) > 128:
        raise InvalidInput("--payee-name must be at most 128 characters")
    amount = parse_amount(amount, currency)
    provider = chosen_provider(settings, provider)
    return WithdrawalOrder(
        withdrawal_id=withdrawal_id,
        amount=amount,
        currency=currency,
        payee_account=payee_account,
        payee_name=payee_name,
        provider=provider,
        notify_url=f"{settings.webhook_url.rstrip('/')}/notify/{provider}",
        timing=timing or settlement_timing(settings),
    )


async def start_withdrawal(
    client: Client, settings: Settings, order: WithdrawalOrder
) -> WithdrawalSubmitted:
    """Start (or find) the withdrawal's workflow; returns once the provider holds the transfer."""
    start = WithStartWorkflowOperation(
        WithdrawalWorkflow.run,
        order,
        id=order.workflow_id,
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        static_summary=(
            f"withdrawal {order.withdrawal_id}: {order.amount} {order.currency} "
            f"to {order.payee_account} via {order.provider}"
        ),
    )
    try:
        return await client.execute_update_with_start_workflow(
            WithdrawalWorkflow.submitted, order, start_workflow_operation=start
        )
    except WorkflowUpdateFailedError as exc:
        raise OrderConflict(_reason(exc)) from None
    except WorkflowAlreadyStartedError:
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await start.workflow_handle()
        view = await withdrawal_view(client, order.withdrawal_id)
        terms = (view.amount, view.currency, view.payee_account, view.payee_name, view.provider)
        if terms != (
            order.amount,
            order.currency,
            order.payee_account,
            order.payee_name,
            order.provider,
        ):
            raise OrderConflict(
                f"withdrawal {order.withdrawal_id} already exists with different terms: "
                f"{view.amount} {view.currency} to {view.payee_account}"
            ) from None
        return WithdrawalSubmitted(
            workflow_id=view.workflow_id,
            withdrawal_id=view.withdrawal_id,
            status=view.status,
            provider_transfer_no=view.provider_transfer_no,
            fail_reason=view.review_reason,
        )


async def withdrawal_view(client: Client, withdrawal_id: str) -> WithdrawalView:
    return await _view(
        client,
        withdrawal_workflow_id(withdrawal_id),
        WithdrawalView,
        WithdrawalWorkflow.details,
        f"withdrawal {withdrawal_id!r}",
    )


async def refund_view(client: Client, refund_id: str) -> RefundView:
    return await _view(
        client,
        refund_workflow_id(refund_id),
        RefundView,
        RefundWorkflow.details,
        f"refund {refund_id!r}",
    )


class ActionRefused(ValueError):
    """An operator action the transaction refused (cancel a settled payment, resolve what is
    not in review, ...): nothing changed."""


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
        raise ActionRefused(_reason(exc)) from None
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


class RefundRefused(ValueError):
    """The refund cannot be made (over-refund, unpaid payment, wrong currency, ...)."""


async def start_refund(
    client: Client,
    settings: Settings,
    *,
    order_id: str,
    refund_id: str,
    amount: str | Decimal,
    currency: str | None = None,
    reason: str = "",
) -> RefundAccepted:
    """Refund (part of) a paid payment; returns once the provider has the refund. The refund
    id is the idempotency key: the same id and amount again returns the same refund."""
    order_id = parse_order_id(order_id)
    try:
        refund_id = parse_order_id(refund_id)
    except InvalidInput:
        raise InvalidInput(
            f"refund id {refund_id!r} must be 1-64 characters of letters, digits, '_', '-' or '.'"
        ) from None
    if len(reason) > 256:
        raise InvalidInput("--reason must be at most 256 characters")
    payment = await payment_view(client, order_id)
    # The currency defaults to the payment's; the amount is checked against its minor units.
    currency = parse_currency(currency) if currency else payment.currency
    if currency != payment.currency:
        raise RefundRefused(
            f"refund currency {currency} differs from order {order_id}'s {payment.currency}"
        )
    request = RefundRequest(
        order_id=order_id,
        refund_id=refund_id,
        amount=parse_amount(amount, currency),
        currency=currency,
        reason=reason,
        notify_url=f"{settings.webhook_url.rstrip('/')}/notify/{payment.provider}",
    )
    handle = client.get_workflow_handle_for(PaymentWorkflow.run, payment.workflow_id)
    try:
        return await handle.execute_update(PaymentWorkflow.refund, request)
    except WorkflowUpdateFailedError as exc:
        raise RefundRefused(_reason(exc)) from None
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            if payment.status not in REFUNDABLE:
                raise RefundRefused(
                    f"order {order_id} is {payment.status}: only a paid payment "
                    "(SUCCEEDED or PARTIALLY_REFUNDED) can be refunded"
                ) from None
            raise RefundRefused(
                f"order {order_id} no longer takes refunds: its refund window has ended"
            ) from None
        raise


@dataclass(frozen=True)
class TransactionRow:
    order_id: str
    status: str
    kind: str
    provider: str
    workflow_id: str


# A provider filter goes into the visibility query: only names of this form reach it.
PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def parse_provider(name: str) -> str:
    if not PROVIDER_NAME.fullmatch(name):
        raise InvalidInput(
            f"provider {name!r} must be 1-64 characters of letters, digits, '_', '-' or '.'"
        )
    return name


def _one_of(value: str, valid: list[str], what: str) -> str:
    for candidate in valid:
        if value.strip().lower() == candidate.lower():
            return candidate
    raise InvalidInput(f"unknown {what} {value!r}: one of {', '.join(valid)}")


def transactions_query(
    status: str | None = None, kind: str | None = None, provider: str | None = None
) -> str:
    """The visibility query for tempay's transactions, filtered; raises InvalidInput on a
    status, kind or provider that is not one. Every value in it is one of a known set or
    matches PROVIDER_NAME, so nothing a user types can change the query's meaning."""
    clauses = [f"{sa.TRANSACTION_KIND.name} IS NOT NULL"]
    if status is not None:
        status = _one_of(status, list(TransactionStatus.__members__), "status")
        clauses.append(f"{sa.PAYMENT_STATUS.name} = '{status}'")
    if kind is not None:
        kind = _one_of(kind, [str(k) for k in TransactionKind], "kind")
        clauses.append(f"{sa.TRANSACTION_KIND.name} = '{kind}'")
    if provider is not None:
        clauses.append(f"{sa.PROVIDER.name} = '{parse_provider(provider)}'")
    return " AND ".join(clauses)


async def list_transactions(
    client: Client,
    status: str | None = None,
    limit: int | None = None,
    *,
    kind: str | None = None,
    provider: str | None = None,
) -> AsyncIterator[TransactionRow]:
    query = transactions_query(status, kind, provider)
    async for execution in client.list_workflows(query, limit=limit):
        attrs = execution.typed_search_attributes
        yield TransactionRow(
            order_id=attrs.get(sa.ORDER_ID) or execution.id,
            status=attrs.get(sa.PAYMENT_STATUS) or "?",
            kind=attrs.get(sa.TRANSACTION_KIND) or "?",
            provider=attrs.get(sa.PROVIDER) or "?",
            workflow_id=execution.id,
        )


@dataclass(frozen=True)
class TransactionCounts:
    by_status: dict[str, int]  # in TransactionStatus order, zeros included
    total: int


async def count_transactions(
    client: Client,
    status: str | None = None,
    *,
    kind: str | None = None,
    provider: str | None = None,
) -> TransactionCounts:
    """How many transactions are in each status (only `status`, if given).

    One CountWorkflowExecutions per status, all at once: Temporal's `GROUP BY` works only on
    ExecutionStatus (the dev server and server 1.32 answer "'GROUP BY' clause is not
    supported for search attribute PaymentStatus"). Counts are the visibility store's, which
    trails the workflows by a moment."""
    transactions_query(status, kind, provider)  # refuse bad filters before any query
    statuses = (
        [_one_of(status, list(TransactionStatus.__members__), "status")]
        if status is not None
        else list(TransactionStatus.__members__)
    )
    counted = await asyncio.gather(
        *(client.count_workflows(transactions_query(s, kind, provider)) for s in statuses)
    )
    by_status = {s: c.count for s, c in zip(statuses, counted, strict=True)}
    return TransactionCounts(by_status=by_status, total=sum(by_status.values()))

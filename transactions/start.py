"""Starting transactions: validate a merchant's terms, then start (or find) the workflow.

Order, refund and withdrawal ids are idempotency keys: the same id with the same terms
returns the same transaction; with other terms, OrderConflict (or RefundRefused).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from book import Book
from providers.registry import checked_channel
from tempay import search_attributes as sa
from tempay.channels import PayerDetails, parse_client_ip, parse_openid
from tempay.domain import (
    PAYMENT_REVISION,
    WITHDRAWAL_REVISION,
    CheckoutInfo,
    PaymentOrder,
    PaymentView,
    RefundAccepted,
    RefundRequest,
    RefundView,
    SettlementTiming,
    TransactionKind,
    TransactionStatus,
    WithdrawalOrder,
    WithdrawalSubmitted,
    WithdrawalView,
    format_amount,
    parse_amount,
    parse_currency,
    parse_order_id,
    refund_workflow_id,
)
from tempay.errors import InvalidInput, OrderConflict, RefundRefused, update_refusal
from tempay.settings import Settings
from transactions.read import M, parse_provider, payment_view, recorded, withdrawal_view
from workflows.payment import REFUNDABLE, PaymentWorkflow
from workflows.withdrawal import WithdrawalWorkflow

R = TypeVar("R")


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
    channel: str | None = None,
    subject: str = "",
    return_url: str = "",
    kind: TransactionKind = TransactionKind.PAYMENT,
    account_id: str | None = None,
    timing: SettlementTiming | None = None,
    payer_openid: str | None = None,
    payer_client_ip: str | None = None,
) -> PaymentOrder:
    """Validate a merchant's order; raises InvalidInput with a message a user can act on.
    No channel: the provider's default (its ProviderSpec's), written into the order. The
    payer details the channel needs must be there; those it does not use are not kept."""
    currency = parse_currency(currency)
    order_id, amount = parse_order_id(order_id), parse_amount(amount, currency)
    provider = chosen_provider(settings, provider)  # after the terms: their errors come first
    payer = None
    if payer_openid is not None or payer_client_ip is not None:
        payer = PayerDetails(
            openid=None if payer_openid is None else parse_openid(payer_openid),
            client_ip=None if payer_client_ip is None else parse_client_ip(payer_client_ip),
        )
    channel, payer = checked_channel(provider, channel, payer)
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
        payer=payer,
        timing=timing or settlement_timing(settings),
        revision=PAYMENT_REVISION,
    )


async def in_temporal(client: Client, workflow_id: str) -> bool:
    """Whether Temporal still holds the workflow (open, or closed within its retention)."""
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def closed_in_book(
    client: Client, book: Book | None, workflow_id: str, result_type: type[M]
) -> M | None:
    """The book's record of a transaction that Temporal no longer holds: its id is still
    taken (ids are idempotency keys for good), and the record is the answer. None when the
    book has no record, or Temporal still holds the workflow (then Temporal answers)."""
    found = await recorded(book, workflow_id, result_type)
    if found is None or await in_temporal(client, workflow_id):
        return None
    return found


async def _start_or_find(
    client: Client,
    book: Book | None,
    workflow_id: str,
    start: WithStartWorkflowOperation[Any, Any],
    update: Any,
    arg: Any,
    recorded_as: type[M],
    found: Callable[[], Awaitable[M]],
    answer: Callable[[M], R],
) -> R:
    """Update-with-start of a transaction whose id is its idempotency key. The workflow's
    answer; or, when the id is taken already, `answer` of the transaction that holds it
    (which checks the terms: OrderConflict when they differ): from the book when only the
    book still has it, so no workflow starts and no provider is called; else from Temporal
    (`found`)."""
    old = await closed_in_book(client, book, workflow_id, recorded_as)
    if old is not None:
        return answer(old)
    try:
        result: R = await client.execute_update_with_start_workflow(
            update, arg, start_workflow_operation=start
        )
        return result
    except WorkflowUpdateFailedError as exc:
        raise OrderConflict(update_refusal(exc)) from None
    except WorkflowAlreadyStartedError:
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await start.workflow_handle()  # the operation holds the same error: consume it
        return answer(await found())


def _payment_terms(view: PaymentView, order: PaymentOrder) -> PaymentView:
    terms = (view.amount, view.currency, view.kind, view.provider, view.account_id)
    if terms != (order.amount, order.currency, order.kind, order.provider, order.account_id):
        raise OrderConflict(
            f"order {order.order_id} already exists with different terms: "
            f"{view.kind} of {view.amount} {view.currency}"
        )
    return view


async def start_payment(
    client: Client, settings: Settings, order: PaymentOrder, book: Book | None = None
) -> CheckoutInfo:
    """Start (or find) the order's workflow and return once the payer has a payment_url.
    An order the book holds and Temporal no longer does is answered from the book: no
    workflow starts, no provider is called."""
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
            + (f" ({order.channel})" if order.channel else "")
        ),
        search_attributes=sa.at_start(
            order.order_id, order.provider, str(order.kind), str(TransactionStatus.CREATED)
        ),
    )
    return await _start_or_find(
        client,
        book,
        order.workflow_id,
        start,
        PaymentWorkflow.checkout,
        order,
        PaymentView,
        lambda: payment_view(client, order.order_id, book),
        lambda view: CheckoutInfo.of(_payment_terms(view, order)),
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
        revision=WITHDRAWAL_REVISION,
    )


def _submitted(view: WithdrawalView, order: WithdrawalOrder) -> WithdrawalSubmitted:
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
        )
    return WithdrawalSubmitted(
        workflow_id=view.workflow_id,
        withdrawal_id=view.withdrawal_id,
        status=view.status,
        provider_transfer_no=view.provider_transfer_no,
        fail_reason=view.review_reason,
    )


async def start_withdrawal(
    client: Client, settings: Settings, order: WithdrawalOrder, book: Book | None = None
) -> WithdrawalSubmitted:
    """Start (or find) the withdrawal's workflow; returns once the provider holds the
    transfer. One the book holds and Temporal no longer does is answered from the book:
    no second transfer request ever reaches the provider."""
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
    return await _start_or_find(
        client,
        book,
        order.workflow_id,
        start,
        WithdrawalWorkflow.submitted,
        order,
        WithdrawalView,
        lambda: withdrawal_view(client, order.withdrawal_id, book),
        lambda view: _submitted(view, order),
    )


def _accepted(old: RefundView, request: RefundRequest, payment: PaymentView) -> RefundAccepted:
    """A recorded refund asked for again: the same refund, or a refusal as the payment's
    ledger words it."""
    if old.order_id != request.order_id:
        raise RefundRefused(
            f"refund id {old.refund_id} is already used by another refund "
            f"({old.workflow_id}): refund ids are unique"
        )
    if (old.amount, old.currency) != (request.amount, request.currency):
        raise RefundRefused(
            f"refund {old.refund_id} already exists for "
            f"{format_amount(old.amount, old.currency)} {old.currency}: "
            "a refund id always means the same refund"
        )
    return RefundAccepted(
        workflow_id=old.workflow_id,
        refund_id=old.refund_id,
        order_id=old.order_id,
        status=old.status,
        amount=old.amount,
        currency=old.currency,
        fail_reason=old.review_reason if old.status.is_terminal else None,
        payment_status=payment.status,
        refundable_amount=payment.refundable_amount or Decimal(0),
    )


async def start_refund(
    client: Client,
    settings: Settings,
    *,
    order_id: str,
    refund_id: str,
    amount: str | Decimal,
    currency: str | None = None,
    reason: str = "",
    book: Book | None = None,
) -> RefundAccepted:
    """Refund (part of) a paid payment; returns once the provider has the refund. The refund
    id is the idempotency key, for good: the same id and amount again returns the same
    refund, from the book once Temporal no longer holds it."""
    order_id = parse_order_id(order_id)
    try:
        refund_id = parse_order_id(refund_id)
    except InvalidInput:
        raise InvalidInput(
            f"refund id {refund_id!r} must be 1-64 characters of letters, digits, '_', '-' or '.'"
        ) from None
    if len(reason) > 256:
        raise InvalidInput("--reason must be at most 256 characters")
    old = await closed_in_book(client, book, refund_workflow_id(refund_id), RefundView)
    payment = await payment_view(client, order_id, book)
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
    if old is not None:
        return _accepted(old, request, payment)
    handle = client.get_workflow_handle(payment.workflow_id, result_type=PaymentView)
    try:
        return await handle.execute_update(PaymentWorkflow.refund, request)
    except WorkflowUpdateFailedError as exc:
        raise RefundRefused(update_refusal(exc)) from None
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

"""The `tempay` command. Every failure is one clear line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

import httpx
from pydantic import ValidationError
from temporalio.client import Client
from temporalio.service import RPCError

from book import Book
from book.migrate import reading_book
from commands.db import cmd_db_backfill, cmd_db_upgrade, cmd_export
from providers.registry import PROVIDERS
from tempay import __version__
from tempay.domain import (
    OperatorAction,
    PaymentOrder,
    ReviewResolution,
    TransactionKind,
    TransactionStatus,
)
from tempay.errors import (
    ActionRefused,
    BookOutdated,
    BookUnavailable,
    InvalidInput,
    MetricsUnavailable,
    OrderConflict,
    PayloadDecryptionError,
    RefundRefused,
    TemporalUnavailable,
    ToolMissing,
    TransactionNotFound,
    WorkerUnavailable,
)
from tempay.logs import configure_logging
from tempay.settings import Settings, get_settings
from tempay.temporal import connect
from tempay.tracing import start_tracing, stop_tracing_at_exit
from transactions import (
    build_order,
    build_withdrawal,
    count_transactions,
    list_transactions,
    operator_action,
    payment_view,
    refund_view,
    start_payment,
    start_refund,
    start_withdrawal,
    transactions_query,
    withdrawal_view,
)
from transactions.read import from_temporal_instead
from transactions.reconcile import ReconciliationFailed, parse_day, reconcile
from transactions.reconcile import report as reconciliation_report

START_TIMEOUT_SECONDS = 30.0
USER_ERRORS = (
    ActionRefused,
    BookOutdated,  # the book's schema is not this code's: the message says what to run
    BookUnavailable,
    InvalidInput,
    TemporalUnavailable,
    MetricsUnavailable,
    TransactionNotFound,
    OrderConflict,
    RefundRefused,
    WorkerUnavailable,
    PayloadDecryptionError,  # history written with a key this shell does not have
    ToolMissing,  # `tempay dev` without the dev extra
)


class CommandError(Exception):
    pass


def _warn(message: str) -> None:
    print(f"tempay: warning: {message}", file=sys.stderr)


def _book(settings: Settings) -> Book | None:
    return reading_book(settings, _warn)


def _print_json(model: Any) -> None:
    print(json.dumps(model.model_dump(mode="json"), indent=2))


def _order(
    args: argparse.Namespace, settings: Settings, kind: TransactionKind, **extra: Any
) -> PaymentOrder:
    return build_order(
        settings,
        order_id=args.order_id,
        amount=args.amount,
        currency=args.currency,
        provider=args.provider,
        channel=args.channel,
        subject=args.subject,
        return_url=args.return_url,
        kind=kind,
        payer_openid=args.payer_openid,
        payer_client_ip=args.payer_client_ip,
        **extra,
    )


async def cmd_pay(args: argparse.Namespace, settings: Settings) -> int:
    settings = settings.beside_tempay_dev()
    await _start_and_print(_order(args, settings, TransactionKind.PAYMENT), settings)
    return 0


async def cmd_recharge(args: argparse.Namespace, settings: Settings) -> int:
    account_id = args.account_id.strip()
    if not account_id:
        raise InvalidInput("--account-id must name the account to top up")
    args.subject = args.subject or f"Top up {account_id}"
    settings = settings.beside_tempay_dev()
    order = _order(args, settings, TransactionKind.RECHARGE, account_id=account_id)
    await _start_and_print(order, settings)
    return 0


async def _start_and_print(order: PaymentOrder, settings: Settings) -> None:
    client = await connect(settings)
    try:
        checkout = await asyncio.wait_for(
            start_payment(client, settings, order, _book(settings)), START_TIMEOUT_SECONDS
        )
    except TimeoutError:
        raise CommandError(
            f"no worker answered within {START_TIMEOUT_SECONDS:.0f} s; the payment is recorded "
            "and continues once `tempay dev` (or `tempay worker`) runs"
        ) from None
    _print_json(checkout)


async def cmd_withdraw(args: argparse.Namespace, settings: Settings) -> int:
    settings = settings.beside_tempay_dev()
    order = build_withdrawal(
        settings,
        withdrawal_id=args.withdrawal_id,
        amount=args.amount,
        currency=args.currency,
        payee_account=args.payee_account,
        payee_name=args.payee_name,
        provider=args.provider,
    )
    client = await connect(settings)
    try:
        submitted = await asyncio.wait_for(
            start_withdrawal(client, settings, order, _book(settings)), START_TIMEOUT_SECONDS
        )
    except TimeoutError:
        raise CommandError(
            f"no worker answered within {START_TIMEOUT_SECONDS:.0f} s; the withdrawal is "
            "recorded and continues once `tempay dev` (or `tempay worker`) runs"
        ) from None
    _print_json(submitted)
    return 0


async def cmd_refund(args: argparse.Namespace, settings: Settings) -> int:
    client = await connect(settings)
    try:
        accepted = await asyncio.wait_for(
            start_refund(
                client,
                settings,
                order_id=args.order_id,
                refund_id=args.refund_id,
                amount=args.amount,
                currency=args.currency,
                reason=args.reason,
                book=_book(settings),
            ),
            START_TIMEOUT_SECONDS,
        )
    except TimeoutError:
        raise CommandError(
            f"the provider did not take the refund within {START_TIMEOUT_SECONDS:.0f} s; it "
            f"is recorded and retried: see `tempay status --refund {args.refund_id}`"
        ) from None
    _print_json(accepted)
    if accepted.status is TransactionStatus.FAILED:
        raise CommandError(f"refund {accepted.refund_id} failed: {accepted.fail_reason}")
    return 0


def _target(args: argparse.Namespace) -> tuple[TransactionKind, str]:
    named = [
        (kind, value)
        for kind, value in (
            (TransactionKind.PAYMENT, args.order_id),
            (TransactionKind.REFUND, getattr(args, "refund", None)),
            (TransactionKind.WITHDRAWAL, getattr(args, "withdrawal", None)),
        )
        if value is not None
    ]
    if len(named) != 1:
        raise InvalidInput(
            "name one transaction: ORDER_ID, --refund REFUND_ID or --withdrawal WITHDRAWAL_ID"
        )
    return named[0]


def _operator(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    operator = (args.operator or getpass.getuser() or "").strip()
    reason = args.reason.strip()
    if not operator or len(operator) > 64:
        raise InvalidInput("--operator must name who acts (1-64 characters)")
    if not reason or len(reason) > 500:
        raise InvalidInput("--reason must say why (1-500 characters): it is kept in history")
    return {"operator": operator, "reason": reason, **extra}


async def _act(args: argparse.Namespace, settings: Settings, action: str, by: Any) -> int:
    kind, transaction_id = _target(args)
    client = await connect(settings)
    try:
        view = await asyncio.wait_for(
            operator_action(client, kind, transaction_id, action, by), START_TIMEOUT_SECONDS
        )
    except TimeoutError:
        raise CommandError(
            f"no answer within {START_TIMEOUT_SECONDS:.0f} s; the action is recorded and runs "
            "once a worker (and the provider) answers"
        ) from None
    _print_json(view)
    return 0


async def cmd_force_query(args: argparse.Namespace, settings: Settings) -> int:
    return await _act(args, settings, "status_query", OperatorAction(**_operator(args)))


async def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    return await _act(args, settings, "cancel", OperatorAction(**_operator(args)))


async def cmd_resolve(args: argparse.Namespace, settings: Settings) -> int:
    return await _act(
        args, settings, "resolve", ReviewResolution(**_operator(args, decision=args.decision))
    )


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    named = [v for v in (args.order_id, args.withdrawal, args.refund) if v is not None]
    if len(named) != 1:
        raise InvalidInput(
            "name one transaction: ORDER_ID, --refund REFUND_ID or --withdrawal WITHDRAWAL_ID"
        )
    client = await connect(settings)
    book = _book(settings)
    if args.withdrawal is not None:
        _print_json(await withdrawal_view(client, args.withdrawal, book))
    elif args.refund is not None:
        _print_json(await refund_view(client, args.refund, book))
    else:
        _print_json(await payment_view(client, args.order_id, book))
    return 0


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    filters = {"status": args.status, "kind": args.kind, "provider": args.provider}
    transactions_query(**filters)  # bad filters are refused before connecting
    if args.limit is not None and args.limit < 1:
        raise InvalidInput("--limit must be positive")
    # Settled transactions from the book, those in flight from Temporal (transactions/read.py);
    # either alone, with a warning, when the other cannot be reached.
    book = _book(settings)
    client: Client | None = None
    try:
        client = await connect(settings)
    except TemporalUnavailable as exc:
        if book is None:
            raise
        _warn(f"{exc}; transactions in flight (CREATED, PENDING) from the book instead")
    try:
        await _print_list(args, filters, client, book)
    except BookUnavailable as exc:
        _warn(from_temporal_instead(exc, "listing"))
        await _print_list(args, filters, await connect(settings), None)
    return 0


async def _print_list(
    args: argparse.Namespace, filters: dict[str, Any], client: Client | None, book: Book | None
) -> None:
    if args.count:
        counts = await count_transactions(client, **filters, book=book, warn=_warn)
        for status, n in counts.by_status.items():
            print(f"{status}\t{n}")
        print(f"TOTAL\t{counts.total}")
        return
    rows = list_transactions(client, limit=args.limit, **filters, book=book, warn=_warn)
    async for row in rows:
        print(f"{row.order_id}\t{row.status}\t{row.kind}\t{row.provider}\t{row.workflow_id}")


async def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    day = parse_day(args.date)
    book = _book(settings)
    if book is None:
        raise InvalidInput("no book to reconcile against: run `tempay db upgrade` first")
    if args.report:
        _print_json(await reconciliation_report(book, args.provider, day))
        return 0
    client = await connect(settings)
    try:
        _print_json(await reconcile(client, settings, book, args.provider, day))
    except ReconciliationFailed as exc:
        print(f"tempay: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_channels(_: argparse.Namespace, __: Settings) -> int:
    """Every provider's channels: the payer action each answers and the payer details it
    needs. What tempay ships; a deployment offers the providers it has set up."""
    print(f"{'PROVIDER':<10} {'CHANNEL':<22} {'PAYER_ACTION':<14} {'NEEDS':<16} DESCRIPTION")
    for spec in PROVIDERS:
        for channel in spec.channels:
            needs = ",".join(sorted(channel.needs)) or "-"
            default = " (default)" if channel.name == spec.default_channel else ""
            print(
                f"{spec.name:<10} {channel.name:<22} {channel.action:<14} {needs:<16} "
                f"{channel.description}{default}"
            )
    return 0


async def cmd_demo(_: argparse.Namespace, settings: Settings) -> int:
    from commands.demo import run_demo

    return 0 if await run_demo(settings) else 1


async def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from commands.dev import run_dev

    return await run_dev(settings, demo=args.demo)


async def cmd_worker(_: argparse.Namespace, settings: Settings) -> int:
    from commands.worker import run_worker

    await run_worker(settings)
    return 0


def _proof(module: str, command: str) -> Any:
    """A module of proof/ (the benchmarks and the fault harness), which only a source checkout
    holds, beside this package: the wheel, and so the image, leaves it out."""
    checkout = str(Path(__file__).resolve().parents[1])
    if Path(checkout, "proof", "__init__.py").is_file() and checkout not in sys.path:
        sys.path.append(checkout)  # an editable install maps only the packages it ships
    try:
        return importlib.import_module(f"proof.{module}")
    except ModuleNotFoundError as exc:
        if exc.name != "proof":
            raise
        raise CommandError(
            f"`tempay {command}` needs a source checkout of tempay (its proof/ package is not "
            "installed): run it from a clone with scripts/setup"
        ) from None


PAYMENTS, CONCURRENCY = 500, 50  # `tempay bench`'s defaults


async def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    if args.reconcile is not None:
        others = {
            "--payments": args.payments is not None,
            "--concurrency": args.concurrency is not None,
            "--breakdown": args.breakdown,
            "--webhook-rate": args.webhook_rate is not None,
            "--pending": args.pending is not None,
        }
        if given := [name for name, on in others.items() if on]:
            raise InvalidInput(
                f"--reconcile is a benchmark of its own: drop {', '.join(given)} (or --reconcile)"
            )
        reconcile = _proof("reconcile_bench", "bench")
        return await reconcile.run_reconcile_bench(args.reconcile)
    payments = PAYMENTS if args.payments is None else args.payments
    concurrency = CONCURRENCY if args.concurrency is None else args.concurrency
    bench = _proof("bench", "bench")
    if args.webhook_rate is not None and args.pending is not None:
        raise InvalidInput("--webhook-rate and --pending are separate benchmarks: choose one")
    if args.breakdown and (args.webhook_rate is not None or args.pending is not None):
        raise InvalidInput("--breakdown is for the end-to-end benchmark (--payments) only")
    if args.webhook_rate is not None:
        load = _proof("load", "bench")
        return await load.run_webhook_bench(args.webhook_rate, args.duration, args.pool)
    if args.pending is not None:
        load = _proof("load", "bench")
        return await load.run_pending_bench(
            args.pending, concurrency, args.status_cap, args.first_query, args.query_window
        )
    return await bench.run_bench(payments, concurrency, args.breakdown)


async def cmd_faults(args: argparse.Namespace, _: Settings) -> int:
    faults = _proof("faults", "faults")
    return await faults.run_faults(args.payments, args.scenario, args.concurrency)


def cmd_webhook(_: argparse.Namespace, __: Settings) -> int:
    from webhook.app import main as webhook_main

    webhook_main()
    return 0


def cmd_sandbox(_: argparse.Namespace, __: Settings) -> int:
    from providers.sandbox.app import main as sandbox_main

    sandbox_main()
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="tempay", description="Durable payment settlement on Temporal."
    )
    root.add_argument("--version", action="version", version=f"tempay {__version__}")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser("dev", help="run the whole stack on the embedded Temporal")
    dev.add_argument("--demo", action="store_true", help="run the demo once the stack is up")
    dev.set_defaults(run=cmd_dev)

    pay = commands.add_parser("pay", help="start a payment (idempotent by order id)")
    _order_arguments(pay)
    pay.set_defaults(run=cmd_pay)

    recharge = commands.add_parser("recharge", help="top up an account (idempotent by order id)")
    _order_arguments(recharge)
    recharge.add_argument("--account-id", required=True, help="the account to top up")
    recharge.set_defaults(run=cmd_recharge)

    withdraw = commands.add_parser(
        "withdraw", help="pay out to a payee (idempotent by withdrawal id)"
    )
    withdraw.add_argument("--withdrawal-id", required=True, help="the merchant's withdrawal id")
    withdraw.add_argument("--amount", required=True, help='decimal string, e.g. "10.00"')
    withdraw.add_argument("--currency", required=True, help="ISO 4217 code, e.g. CNY")
    withdraw.add_argument("--payee-account", required=True, help="the payee's account")
    withdraw.add_argument("--payee-name", default="", help="the payee's name")
    withdraw.add_argument("--provider", help=PROVIDER_HELP)
    withdraw.set_defaults(run=cmd_withdraw)

    refund = commands.add_parser(
        "refund", help="refund (part of) a paid payment (idempotent by refund id)"
    )
    refund.add_argument("order_id", metavar="ORDER_ID", help="the paid payment's order id")
    refund.add_argument("--refund-id", required=True, help="the merchant's refund id")
    refund.add_argument("--amount", required=True, help='decimal string, e.g. "3.00"')
    refund.add_argument("--currency", default=None, help="ISO 4217 code; the payment's if unset")
    refund.add_argument("--reason", default="", help="why, as the payer will see it")
    refund.set_defaults(run=cmd_refund)

    status = commands.add_parser("status", help="show a transaction as JSON")
    status.add_argument("order_id", metavar="ORDER_ID", nargs="?", help="a payment's order id")
    status.add_argument("--refund", metavar="REFUND_ID", help="show a refund instead")
    status.add_argument("--withdrawal", metavar="WITHDRAWAL_ID", help="show a withdrawal instead")
    status.set_defaults(run=cmd_status)

    force_query = commands.add_parser(
        "force-query", help="operator: ask the provider for a pending transaction's status now"
    )
    _operator_arguments(force_query, refund_or_withdrawal=True)
    force_query.set_defaults(run=cmd_force_query)

    cancel = commands.add_parser(
        "cancel", help="operator: close an unpaid payment at the provider (EXPIRED)"
    )
    _operator_arguments(cancel, refund_or_withdrawal=False)
    cancel.set_defaults(run=cmd_cancel)

    resolve = commands.add_parser("resolve", help="operator: decide a NEEDS_REVIEW transaction")
    _operator_arguments(resolve, refund_or_withdrawal=True)
    resolve.add_argument(
        "--decision",
        required=True,
        choices=["accept", "fail", "refund"],
        help="accept the money, fail it, or (payments) refund what was paid",
    )
    resolve.set_defaults(run=cmd_resolve)

    listing = commands.add_parser(
        "list",
        help="one line per transaction, or --count by status",
        description="Transactions from the book (tempay's system of record, which keeps "
        "them after Temporal's retention; Temporal's visibility store when there is no "
        "book): one line each, newest first (order id, status, kind, provider, workflow "
        "id), or with --count one line per status and a TOTAL line. Filters combine.",
    )
    listing.add_argument("--status", help="only this status, e.g. PENDING")
    listing.add_argument(
        "--kind", help="only this kind: " + ", ".join(str(k) for k in TransactionKind)
    )
    listing.add_argument("--provider", help="only this provider, e.g. sandbox")
    listing.add_argument("--limit", type=int, default=None, help="at most this many lines")
    listing.add_argument(
        "--count", action="store_true", help="count by status instead (STATUS<TAB>N, TOTAL<TAB>N)"
    )
    listing.set_defaults(run=cmd_list)

    db = commands.add_parser("db", help="the book's schema: upgrade, backfill")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    db_commands.add_parser(
        "upgrade", help="create the book, or bring its schema to this tempay's (idempotent)"
    ).set_defaults(run=cmd_db_upgrade)
    db_commands.add_parser(
        "backfill", help="give every open transaction without a row in the book one, now"
    ).set_defaults(run=cmd_db_backfill)

    export = commands.add_parser(
        "export",
        help="the book's transactions created in a date range, for finance",
        description="Streams every transaction created from --from to --to (whole UTC "
        "days, both included) as CSV with a header, or as JSON lines. Amounts are strings.",
    )
    export.add_argument("--from", dest="start", required=True, metavar="YYYY-MM-DD")
    export.add_argument("--to", dest="end", required=True, metavar="YYYY-MM-DD")
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    export.set_defaults(run=cmd_export)

    reconciling = commands.add_parser(
        "reconcile",
        help="compare a provider's statement for a day with the book; print the report",
        description="Runs ReconciliationWorkflow reconcile-PROVIDER-DATE (the provider's own "
        "day) and prints its report as JSON: counts by type and each discrepancy with both "
        "sides and the action taken. Running a day again changes nothing that has not "
        "changed. --report prints the stored report without running.",
    )
    reconciling.add_argument("--provider", required=True)
    reconciling.add_argument("--date", required=True, metavar="YYYY-MM-DD")
    reconciling.add_argument("--report", action="store_true", help="only print the stored report")
    reconciling.set_defaults(run=cmd_reconcile)

    commands.add_parser(
        "channels", help="every provider's channels, payer actions and payer details"
    ).set_defaults(run=cmd_channels)
    commands.add_parser("demo", help="drive every path against a running stack").set_defaults(
        run=cmd_demo
    )
    commands.add_parser("worker", help="run the worker").set_defaults(run=cmd_worker)
    commands.add_parser("webhook", help="run the webhook service").set_defaults(run=cmd_webhook)
    commands.add_parser("sandbox", help="run the sandbox provider").set_defaults(run=cmd_sandbox)

    bench = commands.add_parser("bench", help="payments/s versus bare Temporal, same run")
    # None when not given: --reconcile refuses them.
    bench.add_argument("--payments", type=int, help=f"default {PAYMENTS}")
    bench.add_argument("--concurrency", type=int, help=f"default {CONCURRENCY}")
    bench.add_argument(
        "--breakdown",
        action="store_true",
        help="also run the baseline with each thing a payment asks of Temporal beyond it",
    )
    webhook = bench.add_argument_group("webhook load (instead of --payments)")
    webhook.add_argument(
        "--webhook-rate", type=float, metavar="R", help="signed notifications per second"
    )
    webhook.add_argument("--duration", type=float, default=60.0, metavar="S", help="seconds")
    webhook.add_argument(
        "--pool", type=int, default=100, help="pending payments (and bare workflows) signalled"
    )
    pending = bench.add_argument_group("waiting at scale (instead of --payments)")
    pending.add_argument(
        "--pending", metavar="N[,N...]", help="payments waiting at once, e.g. 1000,5000,10000"
    )
    pending.add_argument(
        "--status-cap", type=float, help="TEMPAY_STATUS_QUERY_RATE_CAP for the run (per second)"
    )
    pending.add_argument(
        "--first-query", type=float, default=60.0, help="first status query after S seconds"
    )
    pending.add_argument(
        "--query-window",
        type=float,
        help="longest wait for every payment's first status query before paying (seconds)",
    )
    at_scale = bench.add_argument_group("reconciliation at scale (instead of --payments)")
    at_scale.add_argument(
        "--reconcile",
        type=int,
        metavar="N",
        help="an N-line statement against a book of N settled payments (SQLite, no Temporal, "
        "discrepancies planted and checked): time and peak RSS",
    )
    bench.set_defaults(run=cmd_bench)

    faults = commands.add_parser("faults", help="fault scenarios checked against the sandbox")
    faults.add_argument("--payments", type=int, default=200)
    faults.add_argument(
        "--scenario",
        default="all",
        help="kill-worker, kill-webhook, restart-temporal, provider-faults, or all",
    )
    faults.add_argument("--concurrency", type=int, default=20)
    faults.set_defaults(run=cmd_faults)
    return root


def _operator_arguments(command: argparse.ArgumentParser, refund_or_withdrawal: bool) -> None:
    command.add_argument("order_id", metavar="ORDER_ID", nargs="?", help="a payment's order id")
    if refund_or_withdrawal:
        command.add_argument("--refund", metavar="REFUND_ID", help="act on a refund instead")
        command.add_argument(
            "--withdrawal", metavar="WITHDRAWAL_ID", help="act on a withdrawal instead"
        )
    command.add_argument("--reason", required=True, help="why: kept in the workflow's history")
    command.add_argument("--operator", default=None, help="who acts (default: your user name)")


PROVIDER_HELP = "the provider; default TEMPAY_DEFAULT_PROVIDER, or sandbox under `tempay dev`"
CHANNEL_HELP = (
    "the provider's payment product; default the provider's own: "
    + ", ".join(f"{spec.name} {spec.default_channel}" for spec in PROVIDERS if spec.default_channel)
    + " (all of them: tempay channels)"
)


def _order_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--order-id", required=True, help="the merchant's order number")
    command.add_argument("--amount", required=True, help='decimal string, e.g. "10.00"')
    command.add_argument("--currency", required=True, help="ISO 4217 code, e.g. CNY")
    command.add_argument("--channel", help=CHANNEL_HELP)
    command.add_argument("--subject", default="")
    command.add_argument("--provider", help=PROVIDER_HELP)
    command.add_argument("--return-url", default="")
    command.add_argument(
        "--payer-openid", help="the payer's openid (wechat_jsapi, wechat_miniprogram)"
    )
    command.add_argument(
        "--payer-client-ip", help="the IP the payer's browser connects from (wechat_h5)"
    )


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        _fail(f"bad setting {'.'.join(map(str, first['loc']))}: {first['msg']}")
    if args.command in ("worker", "webhook", "sandbox", "dev"):
        configure_logging(settings)
    else:
        settings = settings.talking_to_tempay_dev()
    if args.command in ("worker", "webhook"):
        try:
            start_tracing(args.command)
        except InvalidInput as exc:
            _fail(str(exc))
    run: Callable[[argparse.Namespace, Settings], Awaitable[int] | int] = args.run
    try:
        result = run(args, settings)
        code: int = asyncio.run(result) if asyncio.iscoroutine(result) else int(result)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # The reader went away (`tempay status X | head`): stop quietly, as Unix tools do.
        # stdout goes to devnull so the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141
    except (*USER_ERRORS, CommandError) as exc:
        _fail(str(exc))
    except RPCError as exc:
        _fail(f"Temporal refused the request: {exc.message}")
    except httpx.HTTPError as exc:
        _fail(f"HTTP error: {describe_http_error(exc)}")
    _exit(code)


def describe_http_error(exc: httpx.HTTPError) -> str:
    """What failed and where: httpx's timeouts and disconnects often carry no message."""
    what = str(exc) or type(exc).__name__
    try:
        request = exc.request
    except RuntimeError:  # an error raised before any request was built
        return what
    where = f"{request.method} {request.url}"
    return what if str(request.url) in what else f"{what} ({where})"


def _fail(message: str) -> NoReturn:
    print(f"tempay: error: {message}", file=sys.stderr)
    _exit(1)


def _exit(code: int) -> NoReturn:
    # The Temporal client's native threads can crash CPython's finalisation of a short-lived
    # process (temporalio/sdk-python#300): flush and leave without it (and so without
    # atexit: the spans still buffered are exported here).
    stop_tracing_at_exit()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

"""The sandbox's durable state: trades, refunds, transfers and notification deliveries in
SQLite (WAL).

One connection guarded by a lock: every call is short, so it can run on the event loop
or in a worker thread alike. A restart keeps every trade, refund and transfer, and resumes
pending processing and deliveries.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Literal

WAIT_BUYER_PAY = "WAIT_BUYER_PAY"
TRADE_SUCCESS = "TRADE_SUCCESS"
TRADE_FAILED = "TRADE_FAILED"
TRADE_CLOSED = "TRADE_CLOSED"

REFUND_PROCESSING = "REFUND_PROCESSING"
REFUND_SUCCESS = "REFUND_SUCCESS"
REFUND_FAILED = "REFUND_FAILED"
# Refunds that hold part of the paid amount: the rest is what can still be refunded.
REFUNDS_HOLDING_MONEY = (REFUND_PROCESSING, REFUND_SUCCESS)

TRANSFER_PROCESSING = "TRANSFER_PROCESSING"
TRANSFER_SUCCESS = "TRANSFER_SUCCESS"
TRANSFER_FAILED = "TRANSFER_FAILED"

# What a notification is about; its `out_no` is that thing's merchant-side number.
DeliveryKind = Literal["trade", "refund", "transfer"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS trades (
    trade_no      TEXT PRIMARY KEY,
    out_trade_no  TEXT NOT NULL UNIQUE,
    amount        TEXT NOT NULL,
    currency      TEXT NOT NULL,
    subject       TEXT NOT NULL,
    body          TEXT NOT NULL,
    channel       TEXT NOT NULL,
    return_url    TEXT NOT NULL,
    notify_url    TEXT NOT NULL,
    status        TEXT NOT NULL,
    paid_amount   TEXT,
    paid_currency TEXT,
    paid_at       TEXT,
    closed_at     TEXT,
    created_at    TEXT NOT NULL,
    -- What the channel needs of the payer (personal data: only for the channels that do).
    payer_openid    TEXT,
    payer_client_ip TEXT,
    -- What the payer's wallet presents, by the channel's kind of payer action.
    prepay_id     TEXT,
    qr_code       TEXT,
    client_secret TEXT
);
CREATE TABLE IF NOT EXISTS refunds (
    refund_no      TEXT PRIMARY KEY,
    -- The merchant's refund id: unique across trades, like tempay's refund ids.
    out_request_no TEXT NOT NULL UNIQUE,
    out_trade_no   TEXT NOT NULL REFERENCES trades (out_trade_no),
    trade_no       TEXT NOT NULL,
    amount         TEXT NOT NULL,
    currency       TEXT NOT NULL,
    reason         TEXT NOT NULL,
    notify_url     TEXT NOT NULL,
    status         TEXT NOT NULL,
    fail_reason    TEXT,
    -- Unix time processing ends; NULL once it has.
    complete_at    REAL,
    finished_at    TEXT,
    created_at     TEXT NOT NULL,
    -- Ground truth for tests: every POST naming this out_request_no.
    requests       INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS refunds_trade ON refunds (out_trade_no);
CREATE INDEX IF NOT EXISTS refunds_due ON refunds (complete_at) WHERE complete_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS transfers (
    transfer_no   TEXT PRIMARY KEY,
    out_biz_no    TEXT NOT NULL UNIQUE,
    amount        TEXT NOT NULL,
    currency      TEXT NOT NULL,
    payee_account TEXT NOT NULL,
    payee_name    TEXT NOT NULL,
    remark        TEXT NOT NULL,
    notify_url    TEXT NOT NULL,
    status        TEXT NOT NULL,
    fail_reason   TEXT,
    complete_at   REAL,
    finished_at   TEXT,
    created_at    TEXT NOT NULL,
    -- Ground truth for tests: every POST naming this out_biz_no, and how often money left.
    requests      INTEGER NOT NULL DEFAULT 1,
    paid_out      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS transfers_due ON transfers (complete_at)
    WHERE complete_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS deliveries (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    notify_id            TEXT NOT NULL,
    kind                 TEXT NOT NULL,
    -- out_trade_no, out_request_no or out_biz_no, by kind
    out_no               TEXT NOT NULL,
    -- the status notified: trade_status, refund_status or transfer_status
    status               TEXT NOT NULL,
    attempts             INTEGER NOT NULL DEFAULT 0,
    delivered            INTEGER NOT NULL DEFAULT 0,
    given_up             INTEGER NOT NULL DEFAULT 0,
    dropped              INTEGER NOT NULL DEFAULT 0,
    next_attempt_at      REAL,
    last_response_status INTEGER,
    last_error           TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_out_no ON deliveries (kind, out_no);
-- The wallet page finds a trade by its prepay_id, the scan page by its QR code.
CREATE UNIQUE INDEX IF NOT EXISTS trades_prepay_id ON trades (prepay_id)
    WHERE prepay_id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS trades_qr_code ON trades (qr_code) WHERE qr_code IS NOT NULL;
-- The statements: what was paid, and what was refunded, in a period.
CREATE INDEX IF NOT EXISTS trades_paid ON trades (paid_at) WHERE paid_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS refunds_finished ON refunds (finished_at)
    WHERE finished_at IS NOT NULL;
"""

# Databases from before refunds and transfers held trade deliveries only: rebuilt in place.
MIGRATE_TRADE_DELIVERIES = """
DROP INDEX IF EXISTS deliveries_due;
DROP INDEX IF EXISTS deliveries_trade;
ALTER TABLE deliveries RENAME TO deliveries_trades_only;
"""
COPY_TRADE_DELIVERIES = """
INSERT INTO deliveries (id, notify_id, kind, out_no, status, attempts, delivered, given_up,
    dropped, next_attempt_at, last_response_status, last_error)
SELECT id, notify_id, 'trade', out_trade_no, trade_status, attempts, delivered, given_up,
    dropped, next_attempt_at, last_response_status, last_error
FROM deliveries_trades_only;
DROP TABLE deliveries_trades_only;
"""
# Columns trades gained with channels; a database from before gets them, NULL for old trades.
CHANNEL_COLUMNS = ("payer_openid", "payer_client_ip", "prepay_id", "qr_code", "client_secret")


@dataclass(frozen=True)
class Trade:
    trade_no: str
    out_trade_no: str
    amount: str
    currency: str
    subject: str
    body: str
    channel: str
    return_url: str
    notify_url: str
    status: str
    paid_amount: str | None
    paid_currency: str | None
    paid_at: str | None
    closed_at: str | None
    created_at: str
    # Personal data, only where the channel needs it; never in a repr.
    payer_openid: str | None = field(default=None, repr=False)
    payer_client_ip: str | None = field(default=None, repr=False)
    # JSAPI and APP channels: the id the payer's parameter set names.
    prepay_id: str | None = None
    # QR channels: the code in the QR content's URL.
    qr_code: str | None = None
    # stripe_payment_intent: the payer's credential; never in a repr.
    client_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Refund:
    refund_no: str
    out_request_no: str
    out_trade_no: str
    trade_no: str
    amount: str
    currency: str
    reason: str
    notify_url: str
    status: str
    fail_reason: str | None
    complete_at: float | None
    finished_at: str | None
    created_at: str
    requests: int = 1

    def same_terms(self, other: Refund) -> bool:
        # Money terms only: a retry from a merchant whose notify_url moved is the same refund.
        return (self.out_trade_no, self.amount, self.currency) == (
            other.out_trade_no,
            other.amount,
            other.currency,
        )


@dataclass(frozen=True)
class Transfer:
    transfer_no: str
    out_biz_no: str
    amount: str
    currency: str
    payee_account: str
    payee_name: str
    remark: str
    notify_url: str
    status: str
    fail_reason: str | None
    complete_at: float | None
    finished_at: str | None
    created_at: str
    requests: int = 1
    paid_out: int = 0

    def same_terms(self, other: Transfer) -> bool:
        # Money terms only, as for refunds.
        return (self.amount, self.currency, self.payee_account, self.payee_name) == (
            other.amount,
            other.currency,
            other.payee_account,
            other.payee_name,
        )


RefundOutcome = Literal[
    "created",  # a new refund
    "existing",  # the same refund again (same out_request_no, same terms)
    "conflict",  # the out_request_no is taken by different terms
    "trade_not_found",
    "trade_not_paid",
    "currency_mismatch",
    "amount_exceeded",
]


@dataclass(frozen=True)
class RefundDecision:
    """What became of a refund request, decided in one transaction."""

    outcome: RefundOutcome
    # The stored refund for created, existing and conflict.
    refund: Refund | None = None
    trade: Trade | None = None
    # What can still be refunded, for amount_exceeded.
    refundable: Decimal | None = None


TransferOutcome = Literal["created", "existing", "conflict"]


@dataclass(frozen=True)
class Delivery:
    """One notification to send; a duplicated notification is two deliveries, same notify_id."""

    id: int
    notify_id: str
    kind: DeliveryKind
    out_no: str
    status: str
    attempts: int
    delivered: bool
    given_up: bool
    dropped: bool
    # Unix time of the next attempt; None once delivered, given up or dropped.
    next_attempt_at: float | None
    last_response_status: int | None
    last_error: str | None


@dataclass(frozen=True)
class PlannedDelivery:
    notify_id: str
    next_attempt_at: float | None
    dropped: bool = False


@dataclass(frozen=True)
class Transition:
    """The outcome of a status change: the trade as it is now, and whether it moved."""

    trade: Trade
    changed: bool


@dataclass(frozen=True)
class RefundTransition:
    refund: Refund
    changed: bool


@dataclass(frozen=True)
class TransferTransition:
    transfer: Transfer
    changed: bool


class SandboxStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE) where they matter.
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL survives a process crash; only an OS crash may lose the last commits.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._migrate()
            self._conn.executescript(SCHEMA)

    def _migrate(self) -> None:
        trade_columns = {row["name"] for row in self._conn.execute("PRAGMA table_info(trades)")}
        if trade_columns:
            for column in CHANNEL_COLUMNS:
                if column not in trade_columns:
                    self._conn.execute(f"ALTER TABLE trades ADD COLUMN {column} TEXT")
        columns = {row["name"] for row in self._conn.execute("PRAGMA table_info(deliveries)")}
        if columns and "kind" not in columns:
            # One transaction: a crash half way leaves the old table as it was.
            self._conn.executescript(
                "BEGIN IMMEDIATE;"
                + MIGRATE_TRADE_DELIVERIES
                + SCHEMA
                + COPY_TRADE_DELIVERIES
                + "COMMIT;"
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # Trades

    def create_trade(self, trade: Trade) -> tuple[Trade, bool]:
        """Insert the trade unless its out_trade_no exists; return the stored one and
        whether it is new, so the caller can compare terms."""
        with self._transaction() as conn:
            existing = _trade_row(conn, "out_trade_no", trade.out_trade_no)
            if existing is not None:
                return existing, False
            columns = list(Trade.__dataclass_fields__)
            conn.execute(
                f"INSERT INTO trades ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' for _ in columns)})",
                [getattr(trade, name) for name in columns],
            )
            return trade, True

    def paid_between(self, start: str, end: str) -> list[Trade]:
        """Trades paid in [start, end) (utc_iso times, which sort as text), oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM trades WHERE status = ? AND paid_at >= ? AND paid_at < ? "
                "ORDER BY paid_at, rowid",
                (TRADE_SUCCESS, start, end),
            ).fetchall()
        return [Trade(**dict(row)) for row in rows]

    def get_trade(self, out_trade_no: str) -> Trade | None:
        with self._lock:
            return _trade_row(self._conn, "out_trade_no", out_trade_no)

    def get_trade_by_trade_no(self, trade_no: str) -> Trade | None:
        with self._lock:
            return _trade_row(self._conn, "trade_no", trade_no)

    def get_trade_by_prepay_id(self, prepay_id: str) -> Trade | None:
        with self._lock:
            return _trade_row(self._conn, "prepay_id", prepay_id)

    def get_trade_by_qr_code(self, qr_code: str) -> Trade | None:
        with self._lock:
            return _trade_row(self._conn, "qr_code", qr_code)

    def transition(
        self,
        out_trade_no: str,
        *,
        allowed_from: Collection[str],
        status: str,
        changes: dict[str, str | None] | None = None,
        deliveries: Sequence[PlannedDelivery] = (),
    ) -> Transition | None:
        """Move the trade to `status` if it is in `allowed_from`, and enqueue its
        notifications in the same transaction. None when the trade does not exist."""
        changes = {**(changes or {}), "status": status}
        unknown = set(changes) - set(Trade.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown trade fields {sorted(unknown)}")
        with self._transaction() as conn:
            trade = _trade_row(conn, "out_trade_no", out_trade_no)
            if trade is None:
                return None
            if trade.status not in allowed_from:
                return Transition(trade, changed=False)
            assignments = ", ".join(f"{name} = ?" for name in changes)
            conn.execute(
                f"UPDATE trades SET {assignments} WHERE out_trade_no = ?",
                [*changes.values(), out_trade_no],
            )
            _insert_deliveries(conn, "trade", out_trade_no, status, deliveries)
            updated = _trade_row(conn, "out_trade_no", out_trade_no)
            assert updated is not None
            return Transition(updated, changed=True)

    # Refunds

    def request_refund(self, candidate: Refund) -> RefundDecision:
        """Record the refund unless its id exists, checking in the same transaction that the
        trade is paid and that refunds never add up to more than was paid."""
        with self._transaction() as conn:
            existing = _refund_row(conn, "out_request_no", candidate.out_request_no)
            if existing is not None:
                conn.execute(
                    "UPDATE refunds SET requests = requests + 1 WHERE out_request_no = ?",
                    (existing.out_request_no,),
                )
                existing = replace(existing, requests=existing.requests + 1)
                same = existing.same_terms(candidate)
                return RefundDecision("existing" if same else "conflict", existing)
            trade = _trade_row(conn, "out_trade_no", candidate.out_trade_no)
            if trade is None:
                return RefundDecision("trade_not_found")
            if trade.status != TRADE_SUCCESS or trade.paid_amount is None:
                return RefundDecision("trade_not_paid", trade=trade)
            if candidate.currency != trade.paid_currency:
                return RefundDecision("currency_mismatch", trade=trade)
            held = conn.execute(
                "SELECT amount FROM refunds WHERE out_trade_no = ? AND status IN (?, ?)",
                (trade.out_trade_no, *REFUNDS_HOLDING_MONEY),
            ).fetchall()
            refundable = Decimal(trade.paid_amount) - sum(
                (Decimal(row["amount"]) for row in held), Decimal(0)
            )
            if Decimal(candidate.amount) > refundable:
                return RefundDecision("amount_exceeded", trade=trade, refundable=refundable)
            refund = replace(candidate, trade_no=trade.trade_no, requests=1)
            _insert(conn, "refunds", refund)
            return RefundDecision("created", refund, trade)

    def get_refund(self, out_request_no: str) -> Refund | None:
        with self._lock:
            return _refund_row(self._conn, "out_request_no", out_request_no)

    def refunds(self, out_trade_no: str | None = None) -> list[Refund]:
        """Refunds of one trade, or all, oldest first."""
        where, values = ("WHERE out_trade_no = ?", [out_trade_no]) if out_trade_no else ("", [])
        with self._lock:
            rows = self._conn.execute(
                f"SELECT * FROM refunds {where} ORDER BY created_at, rowid", values
            ).fetchall()
        return [Refund(**dict(row)) for row in rows]

    def refunded_between(self, start: str, end: str) -> list[Refund]:
        """Refunds that succeeded in [start, end) (utc_iso times), oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM refunds WHERE status = ? AND finished_at >= ? AND finished_at < ? "
                "ORDER BY finished_at, rowid",
                (REFUND_SUCCESS, start, end),
            ).fetchall()
        return [Refund(**dict(row)) for row in rows]

    def due_refunds(self, now: float, limit: int = 100) -> list[Refund]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM refunds WHERE complete_at <= ? ORDER BY complete_at LIMIT ?",
                (now, limit),
            ).fetchall()
        return [Refund(**dict(row)) for row in rows]

    def finish_refund(
        self,
        out_request_no: str,
        *,
        status: str,
        finished_at: str,
        fail_reason: str | None = None,
        deliveries: Sequence[PlannedDelivery] = (),
    ) -> RefundTransition | None:
        """End a processing refund and enqueue its notifications in the same transaction.
        None when the refund does not exist; unchanged when it was no longer processing."""
        with self._transaction() as conn:
            refund = _refund_row(conn, "out_request_no", out_request_no)
            if refund is None:
                return None
            if refund.status != REFUND_PROCESSING:
                return RefundTransition(refund, changed=False)
            conn.execute(
                "UPDATE refunds SET status = ?, fail_reason = ?, finished_at = ?, "
                "complete_at = NULL WHERE out_request_no = ?",
                (status, fail_reason, finished_at, out_request_no),
            )
            _insert_deliveries(conn, "refund", out_request_no, status, deliveries)
            updated = _refund_row(conn, "out_request_no", out_request_no)
            assert updated is not None
            return RefundTransition(updated, changed=True)

    # Transfers

    def request_transfer(self, candidate: Transfer) -> tuple[Transfer, TransferOutcome]:
        """Record the transfer unless its out_biz_no exists; every call is counted."""
        with self._transaction() as conn:
            existing = _transfer_row(conn, candidate.out_biz_no)
            if existing is None:
                transfer = replace(candidate, requests=1, paid_out=0)
                _insert(conn, "transfers", transfer)
                return transfer, "created"
            conn.execute(
                "UPDATE transfers SET requests = requests + 1 WHERE out_biz_no = ?",
                (existing.out_biz_no,),
            )
            existing = replace(existing, requests=existing.requests + 1)
            return existing, "existing" if existing.same_terms(candidate) else "conflict"

    def get_transfer(self, out_biz_no: str) -> Transfer | None:
        with self._lock:
            return _transfer_row(self._conn, out_biz_no)

    def transfers(self, out_biz_no: str | None = None) -> list[Transfer]:
        where, values = ("WHERE out_biz_no = ?", [out_biz_no]) if out_biz_no else ("", [])
        with self._lock:
            rows = self._conn.execute(
                f"SELECT * FROM transfers {where} ORDER BY created_at, rowid", values
            ).fetchall()
        return [Transfer(**dict(row)) for row in rows]

    def due_transfers(self, now: float, limit: int = 100) -> list[Transfer]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM transfers WHERE complete_at <= ? ORDER BY complete_at LIMIT ?",
                (now, limit),
            ).fetchall()
        return [Transfer(**dict(row)) for row in rows]

    def finish_transfer(
        self,
        out_biz_no: str,
        *,
        status: str,
        finished_at: str,
        fail_reason: str | None = None,
        deliveries: Sequence[PlannedDelivery] = (),
    ) -> TransferTransition | None:
        """End a processing transfer: on success the money leaves (paid_out), once."""
        with self._transaction() as conn:
            transfer = _transfer_row(conn, out_biz_no)
            if transfer is None:
                return None
            if transfer.status != TRANSFER_PROCESSING:
                return TransferTransition(transfer, changed=False)
            conn.execute(
                "UPDATE transfers SET status = ?, fail_reason = ?, finished_at = ?, "
                "complete_at = NULL, paid_out = paid_out + ? WHERE out_biz_no = ?",
                (status, fail_reason, finished_at, int(status == TRANSFER_SUCCESS), out_biz_no),
            )
            _insert_deliveries(conn, "transfer", out_biz_no, status, deliveries)
            updated = _transfer_row(conn, out_biz_no)
            assert updated is not None
            return TransferTransition(updated, changed=True)

    def next_completion_at(self) -> float | None:
        """When the next refund or transfer finishes processing."""
        with self._lock:
            row = self._conn.execute(
                "SELECT MIN(at) FROM (SELECT MIN(complete_at) AS at FROM refunds "
                "UNION ALL SELECT MIN(complete_at) FROM transfers)"
            ).fetchone()
        return row[0]

    # Deliveries

    def deliveries_for(self, out_no: str, kind: DeliveryKind = "trade") -> list[Delivery]:
        """The notifications about one trade (by out_trade_no), refund (out_request_no) or
        transfer (out_biz_no)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM deliveries WHERE kind = ? AND out_no = ? ORDER BY id",
                (kind, out_no),
            ).fetchall()
        return [_delivery(row) for row in rows]

    def due_deliveries(self, now: float, *, exclude: Collection[int], limit: int) -> list[Delivery]:
        """Deliveries whose next attempt is due, oldest first, skipping those in flight."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM deliveries WHERE next_attempt_at <= ? "
                f"AND id NOT IN ({', '.join('?' for _ in exclude)}) "
                "ORDER BY next_attempt_at LIMIT ?",
                [now, *exclude, limit],
            ).fetchall()
        return [_delivery(row) for row in rows]

    def next_attempt_at(self, *, exclude: Collection[int]) -> float | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT MIN(next_attempt_at) FROM deliveries WHERE next_attempt_at IS NOT NULL "
                f"AND id NOT IN ({', '.join('?' for _ in exclude)})",
                list(exclude),
            ).fetchone()
        return row[0]

    def record_attempt(
        self,
        delivery_id: int,
        *,
        delivered: bool,
        response_status: int | None,
        error: str | None,
        next_attempt_at: float | None,
    ) -> None:
        """Count one attempt. Not delivered and no next attempt means the sandbox gave up."""
        given_up = not delivered and next_attempt_at is None
        with self._lock:
            self._conn.execute(
                "UPDATE deliveries SET attempts = attempts + 1, delivered = ?, given_up = ?, "
                "next_attempt_at = ?, last_response_status = ?, last_error = ? WHERE id = ?",
                [
                    int(delivered),
                    int(given_up),
                    next_attempt_at,
                    response_status,
                    error,
                    delivery_id,
                ],
            )


def _insert(conn: sqlite3.Connection, table: str, record: Refund | Transfer) -> None:
    columns = list(type(record).__dataclass_fields__)
    conn.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
        [getattr(record, name) for name in columns],
    )


def _insert_deliveries(
    conn: sqlite3.Connection,
    kind: DeliveryKind,
    out_no: str,
    status: str,
    deliveries: Sequence[PlannedDelivery],
) -> None:
    conn.executemany(
        "INSERT INTO deliveries (notify_id, kind, out_no, status, dropped, next_attempt_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            (d.notify_id, kind, out_no, status, int(d.dropped), d.next_attempt_at)
            for d in deliveries
        ],
    )


def _refund_row(conn: sqlite3.Connection, column: str, value: str) -> Refund | None:
    row = conn.execute(f"SELECT * FROM refunds WHERE {column} = ?", (value,)).fetchone()
    return None if row is None else Refund(**dict(row))


def _transfer_row(conn: sqlite3.Connection, out_biz_no: str) -> Transfer | None:
    row = conn.execute("SELECT * FROM transfers WHERE out_biz_no = ?", (out_biz_no,)).fetchone()
    return None if row is None else Transfer(**dict(row))


def _trade_row(conn: sqlite3.Connection, column: str, value: str) -> Trade | None:
    row = conn.execute(f"SELECT * FROM trades WHERE {column} = ?", (value,)).fetchone()
    return None if row is None else Trade(**dict(row))


def _delivery(row: sqlite3.Row) -> Delivery:
    values = dict(row)
    for flag in ("delivered", "given_up", "dropped"):
        values[flag] = bool(values[flag])
    return Delivery(**values)

"""The sandbox's durable state: trades and notification deliveries in SQLite (WAL).

One connection guarded by a lock: every call is short, so it can run on the event loop
or in a worker thread alike. A restart keeps every trade and resumes pending deliveries.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

WAIT_BUYER_PAY = "WAIT_BUYER_PAY"
TRADE_SUCCESS = "TRADE_SUCCESS"
TRADE_FAILED = "TRADE_FAILED"
TRADE_CLOSED = "TRADE_CLOSED"

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
    created_at    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    notify_id            TEXT NOT NULL,
    out_trade_no         TEXT NOT NULL REFERENCES trades (out_trade_no),
    trade_status         TEXT NOT NULL,
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
CREATE INDEX IF NOT EXISTS deliveries_trade ON deliveries (out_trade_no);
"""


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


@dataclass(frozen=True)
class Delivery:
    """One notification to send; a duplicated notification is two deliveries, same notify_id."""

    id: int
    notify_id: str
    out_trade_no: str
    trade_status: str
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
            self._conn.executescript(SCHEMA)

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

    def get_trade(self, out_trade_no: str) -> Trade | None:
        with self._lock:
            return _trade_row(self._conn, "out_trade_no", out_trade_no)

    def get_trade_by_trade_no(self, trade_no: str) -> Trade | None:
        with self._lock:
            return _trade_row(self._conn, "trade_no", trade_no)

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
            conn.executemany(
                "INSERT INTO deliveries (notify_id, out_trade_no, trade_status, dropped, "
                "next_attempt_at) VALUES (?, ?, ?, ?, ?)",
                [
                    (d.notify_id, out_trade_no, status, int(d.dropped), d.next_attempt_at)
                    for d in deliveries
                ],
            )
            updated = _trade_row(conn, "out_trade_no", out_trade_no)
            assert updated is not None
            return Transition(updated, changed=True)

    # Deliveries

    def deliveries_for(self, out_trade_no: str) -> list[Delivery]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM deliveries WHERE out_trade_no = ? ORDER BY id", (out_trade_no,)
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


def _trade_row(conn: sqlite3.Connection, column: str, value: str) -> Trade | None:
    row = conn.execute(f"SELECT * FROM trades WHERE {column} = ?", (value,)).fetchone()
    return None if row is None else Trade(**dict(row))


def _delivery(row: sqlite3.Row) -> Delivery:
    values = dict(row)
    for flag in ("delivered", "given_up", "dropped"):
        values[flag] = bool(values[flag])
    return Delivery(**values)

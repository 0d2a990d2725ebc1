"""The book's reads at scale: fill a fresh book with N synthetic transactions (and their
journals), then time `tempay list --count`, a filtered `tempay list` and `tempay export`
as a user runs them (the CLI in a process of its own, on the book alone: Temporal is not
running, so the CLI's reads of open transactions are not part of the figure).

    .venv/bin/python -m proof.book_scale --rows 100000 [--database-url postgresql://...]

Prints one line per command: rows, wall seconds (best of --repeat) and the output's size.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import insert

from book import Book
from book.migrate import upgrade
from book.schema import journal, transactions
from tempay.settings import Settings

STATUSES = ["SUCCEEDED"] * 70 + ["FAILED"] * 10 + ["EXPIRED"] * 10 + ["PENDING"] * 5
STATUSES += ["REFUNDED", "PARTIALLY_REFUNDED", "NEEDS_REVIEW", "PENDING", "FAILED"]
KINDS = ["payment"] * 80 + ["recharge"] * 8 + ["refund"] * 8 + ["withdrawal"] * 4
PROVIDERS = ["alipay", "wechatpay", "stripe", "sandbox"]


def fill(book: Book, rows: int, batch: int = 5000) -> None:
    rng = random.Random(7)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for first in range(0, rows, batch):
        records, entries = [], []
        for n in range(first, min(first + batch, rows)):
            kind, status = rng.choice(KINDS), rng.choice(STATUSES)
            prefix = {"refund": "refund", "withdrawal": "withdrawal"}.get(kind, "payment")
            created = start + timedelta(seconds=n * 300)
            amount = Decimal(rng.randint(1, 100_000)) / 100
            records.append(
                {
                    "workflow_id": f"{prefix}-S{n:08d}",
                    "kind": kind,
                    "transaction_id": f"S{n:08d}",
                    "order_id": f"S{n:08d}" if kind != "withdrawal" else None,
                    "provider": rng.choice(PROVIDERS),
                    "provider_ref": f"T{n:012d}",
                    "status": status,
                    "currency": "CNY",
                    "amount": amount,
                    "settled_amount": amount if status != "PENDING" else None,
                    "created_at": created,
                    "updated_at": created + timedelta(seconds=30),
                    "version": 2,
                    "view": {"workflow_id": f"{prefix}-S{n:08d}", "status": status},
                }
            )
            entries += [
                {
                    "workflow_id": f"{prefix}-S{n:08d}",
                    "seq": seq,
                    "from_status": before,
                    "to_status": after,
                    "at": created + timedelta(seconds=seq),
                    "by": "create" if seq < 3 else "notification",
                }
                for seq, (before, after) in enumerate(
                    [(None, "CREATED"), ("CREATED", "PENDING"), ("PENDING", status)], start=1
                )
            ]
        with book.engine.begin() as conn:
            conn.execute(insert(transactions), records)
            conn.execute(insert(journal), entries)


def timed(argv: list[str], env: dict[str, str], repeat: int) -> tuple[float, int]:
    best, size = float("inf"), 0
    for _ in range(repeat):
        began = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, check=True)
        best = min(best, time.perf_counter() - began)
        size = len(done.stdout)
    return best, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", help="a fresh PostgreSQL database; default SQLite")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="tempay-book-scale-"))
    settings = Settings(data_dir=data_dir, database_url=args.database_url)
    book = Book.from_settings(settings)
    upgrade(book)
    began = time.perf_counter()
    fill(book, args.rows)
    print(
        f"filled {args.rows} rows (+{3 * args.rows} journal entries) in "
        f"{time.perf_counter() - began:.1f} s on {book.dialect}"
    )
    book.close()
    env = {**os.environ, "TEMPAY_DATA_DIR": str(data_dir), "TEMPORAL_ADDRESS": "127.0.0.1:1"}
    if args.database_url:
        env["TEMPAY_DATABASE_URL"] = args.database_url
    tempay = [sys.executable, "-m", "tempay"]
    commands = {
        "tempay list --count": [*tempay, "list", "--count"],
        "tempay list --count --status FAILED --kind payment": [
            *tempay,
            "list",
            "--count",
            "--status",
            "FAILED",
            "--kind",
            "payment",
        ],
        "tempay list --status NEEDS_REVIEW": [*tempay, "list", "--status", "NEEDS_REVIEW"],
        "tempay list --status FAILED --provider alipay --limit 50": [
            *tempay,
            "list",
            "--status",
            "FAILED",
            "--provider",
            "alipay",
            "--limit",
            "50",
        ],
        "tempay export (the whole year, csv)": [
            *tempay,
            "export",
            "--from",
            "2026-01-01",
            "--to",
            "2026-12-31",
        ],
        "tempay --help (the interpreter and imports alone)": [*tempay, "--help"],
    }
    print(f"| command ({args.rows} rows) | seconds (best of {args.repeat}) | output bytes |")
    print("| --- | --- | --- |")
    for name, argv in commands.items():
        seconds, size = timed(argv, env, args.repeat)
        print(f"| `{name}` | {seconds:.2f} | {size} |")


if __name__ == "__main__":
    main()

"""The book's commands as a user runs them: `tempay db upgrade` creates the book and is
idempotent, a worker refuses a book without this tempay's schema in one line, and
`tempay export` refuses bad dates in one line and streams what the book holds."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

from book import Book
from book.migrate import head
from tempay.settings import Settings
from tests.support.cli import assert_one_line_error, tempay

ROOT = Path(__file__).resolve().parents[2]


def test_db_upgrade_creates_the_book_once(env: dict[str, str]) -> None:
    first = tempay("db", "upgrade", env=env)
    assert first.returncode == 0, first.stderr
    assert f"upgraded from schema none to {head()}" in first.stdout
    again = tempay("db", "upgrade", env=env)
    assert again.returncode == 0 and f"is at schema {head()}: nothing to do" in again.stdout
    assert (Path(env["TEMPAY_DATA_DIR"]) / "tempay.db").is_file()


def test_a_worker_refuses_a_book_without_its_schema(env: dict[str, str]) -> None:
    result = tempay("worker", env=env, timeout=60)
    assert_one_line_error(result, "has no schema yet: run `tempay db upgrade`")
    assert not (Path(env["TEMPAY_DATA_DIR"]) / "tempay.db").exists()  # it created nothing


def test_a_worker_refuses_a_newer_schema(env: dict[str, str]) -> None:
    assert tempay("db", "upgrade", env=env).returncode == 0
    book = Book.from_settings(Settings(data_dir=Path(env["TEMPAY_DATA_DIR"])))
    with book.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    book.close()
    assert_one_line_error(tempay("worker", env=env), "newer than this tempay knows")


def test_export_refuses_bad_dates_and_streams_csv(env: dict[str, str]) -> None:
    assert_one_line_error(
        tempay("export", "--from", "2026-12-01", "--to", "2026-12-31", env=env),
        "has no schema yet",
    )
    assert tempay("db", "upgrade", env=env).returncode == 0
    assert_one_line_error(
        tempay("export", "--from", "12/01/2026", "--to", "2026-12-31", env=env),
        "--from must be a date as YYYY-MM-DD",
    )
    assert_one_line_error(
        tempay("export", "--from", "2026-12-31", "--to", "2026-12-01", env=env),
        "--to must not be before --from",
    )
    result = tempay("export", "--from", "2026-12-01", "--to", "2026-12-31", env=env)
    assert result.returncode == 0, result.stderr
    assert next(csv.reader(io.StringIO(result.stdout)))[:3] == [
        "workflow_id",
        "kind",
        "transaction_id",
    ]
    assert "exported 0 transaction(s)" in result.stderr


def test_python_worker_py_is_tempay_worker(env: dict[str, str]) -> None:
    """The design card's `python worker.py`: the same command, the same one-line refusal."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "worker.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_one_line_error(result, "has no schema yet: run `tempay db upgrade`")

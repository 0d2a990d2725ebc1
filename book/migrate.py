"""Schema versions: `tempay db upgrade` brings the book to this code's schema; every process
that writes or reads it first checks that it is there (BookOutdated says what to run)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from book.store import Book
from tempay.errors import BookOutdated, BookUnavailable
from tempay.settings import Settings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The schema version this code needs."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None, "the book has no migrations"
    return revision


def current(book: Book) -> str | None:
    """The schema version the database holds (None: never upgraded)."""

    def read() -> str | None:
        with book.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    return book._run("read its schema version", read)


def upgrade(book: Book) -> tuple[str | None, str]:
    """Migrate to head; returns (from, to). Safe to run again, and concurrently on
    PostgreSQL (the migration's DDL runs in one transaction)."""
    if book.file is not None:
        book.file.parent.mkdir(parents=True, exist_ok=True)
    before = current(book) if book.exists() else None

    def run() -> None:
        with book.engine.begin() as conn:
            command.upgrade(_config(conn), "head")

    book._run("be upgraded", run)
    return before, head()


def require_current(book: Book) -> None:
    """Refuse to run on a schema other than this code's, in one line saying what to do."""
    have, need = (current(book) if book.exists() else None), head()
    if have == need:
        return
    if have is None:
        raise BookOutdated(f"the book ({book.name}) has no schema yet: run `tempay db upgrade`")
    known = {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}
    if have in known:
        raise BookOutdated(
            f"the book ({book.name}) is at schema {have}, this tempay needs {need}: "
            "run `tempay db upgrade`"
        )
    raise BookOutdated(
        f"the book ({book.name}) is at schema {have}, newer than this tempay knows "
        f"(its newest is {need}): run the tempay version that upgraded it"
    )


def open_book(settings: Settings) -> Book:
    """The book, checked to be at this code's schema (BookOutdated says what to run)."""
    book = Book.from_settings(settings)
    try:
        require_current(book)
    except BaseException:
        book.close()
        raise
    return book


def reading_book(settings: Settings, warn: Callable[[str], None]) -> Book | None:
    """The book for reads, when there is one at this code's schema; else None after a
    warning (reads then answer from Temporal alone). A SQLite book that was never created
    is no book yet, silently: `tempay dev` and `tempay db upgrade` create it."""
    book = Book.from_settings(settings)
    if not book.exists():
        book.close()
        return None
    try:
        require_current(book)
    except (BookOutdated, BookUnavailable) as exc:
        book.close()
        warn(f"{exc}; answering from Temporal alone")
        return None
    return book


def prepare(settings: Settings) -> str:
    """For `tempay dev`: create the book where none exists yet (a fresh data dir), else
    insist on this code's schema (an older one is the operator's `tempay db upgrade`: a
    migration is a decision, never a side effect of starting). Returns what it did."""
    book = Book.from_settings(settings)
    try:
        if not book.exists() or current(book) is None:
            upgrade(book)
            return f"created the book ({book.name})"
        require_current(book)
        return f"the book ({book.name}) is at schema {head()}"
    finally:
        book.close()

"""`python -m proof.worker`: the tempay worker plus the benchmarks' baseline workflows
(proof/baseline_workflows.py), on the same task queue and in the same process as the payments
they are compared with. Only the benchmarks' private stacks run it (`Stack(worker=ARGV,
sandbox_env=ENV)`); `tempay worker` never registers the baselines. The baseline's book
write (`BareFeatures.book_write`) goes to the same book as the payments' (the stack's
`{data_dir}/tempay.db`), opened as `tempay worker` opens it (`open_book`).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from book import Book
from book.migrate import open_book
from commands.worker import run_worker
from proof.baseline_workflows import (
    BareBookActivities,
    BareListenerWorkflow,
    BareSettlementWorkflow,
    bare_activity,
)
from tempay.logs import configure_logging
from tempay.settings import get_settings
from tempay.tracing import start_tracing, stop_tracing_at_exit

WORKFLOWS = (BareSettlementWorkflow, BareListenerWorkflow)
ACTIVITIES = (bare_activity,)  # those needing no book
ARGV = (sys.executable, "-m", "proof.worker")
# An editable install maps only the packages the wheel ships, so a child process finds
# `proof` through its checkout on PYTHONPATH, from whatever directory it was started in.
CHECKOUT = str(Path(__file__).resolve().parents[1])
ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [CHECKOUT, os.environ.get("PYTHONPATH")]))}


def activities(book: Book) -> tuple[Callable[..., Any], ...]:
    """Every baseline activity, the book write's bound to `book`."""
    return (*ACTIVITIES, BareBookActivities(book).record_then_activity)


def main() -> None:
    settings = get_settings()
    configure_logging(settings)
    start_tracing("worker")  # as `tempay worker`: on when the OTEL variables say so
    # A book of the baselines' own, on the same database: run_worker keeps its own to itself.
    book = open_book(settings)
    try:
        asyncio.run(run_worker(settings, WORKFLOWS, activities(book)))
    finally:
        book.close()
    # As `tempay worker` leaves (tempay/cli.py's _exit): the Temporal client's native threads
    # can crash CPython's finalisation (temporalio/sdk-python#300).
    stop_tracing_at_exit()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()

"""How tempay's servers log: TEMPAY_LOG_LEVEL, and TEMPAY_LOG_FORMAT `text` (one line for a
person) or `json` (one object per line, for a log pipeline).

Every line logged while a transaction's workflow or activity runs carries its ids
(`workflow_id`, `order_id` where the workflow is a payment's, the activity and attempt), and
its trace and span when tracing is on, whichever logger wrote it: `TransactionContext` reads
them from Temporal's context. Code that logs about a transaction elsewhere (the webhook) passes
them as `extra`. Nothing here adds a body, a header or a setting's value to a line.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from temporalio import activity, workflow

from tempay.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# The ids a line may carry, in the order the text format appends them.
IDS = (
    "workflow_id",
    "order_id",
    "refund_id",
    "withdrawal_id",
    "provider",
    "activity",
    "attempt",
    "trace_id",
    "span_id",
)
# What the access log adds (webhook/server.py AccessLog).
ACCESS = ("listener", "method", "path", "status", "duration_ms")
# Which workflow id prefix names which id (tempay/domain.py's *_workflow_id).
PREFIXES = {"payment-": "order_id", "refund-": "refund_id", "withdrawal-": "withdrawal_id"}


def _ids_of_workflow(workflow_id: str) -> dict[str, str]:
    for prefix, name in PREFIXES.items():
        if workflow_id.startswith(prefix):
            return {name: workflow_id[len(prefix) :]}
    return {}


def _trace_ids() -> dict[str, str]:
    """The current span's ids when OpenTelemetry is installed and a span is recording."""
    otel = sys.modules.get("opentelemetry.trace")
    if otel is None:
        return {}
    context = otel.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


class TransactionContext(logging.Filter):
    """Adds the running workflow's or activity's ids to each record (never replacing ids a
    caller passed)."""

    def filter(self, record: logging.LogRecord) -> bool:
        found: dict[str, Any] = {}
        if activity.in_activity():
            info = activity.info()
            found = {
                "workflow_id": info.workflow_id,
                "activity": info.activity_type,
                "attempt": info.attempt,
            }
        elif workflow.in_workflow():
            found = {"workflow_id": workflow.info().workflow_id}
        else:
            details = getattr(record, "temporal_activity", None) or getattr(
                record, "temporal_workflow", None
            )
            if isinstance(details, dict) and details.get("workflow_id"):
                found = {"workflow_id": details["workflow_id"]}
        workflow_id = getattr(record, "workflow_id", None) or found.get("workflow_id")
        if isinstance(workflow_id, str):
            found |= _ids_of_workflow(workflow_id)
        found |= _trace_ids()
        for name, value in found.items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


def _fields(record: logging.LogRecord, names: tuple[str, ...]) -> dict[str, Any]:
    return {n: v for n in names if (v := getattr(record, n, None)) is not None}


class TextFormatter(logging.Formatter):
    """The usual line, then the transaction's ids: `... [workflow_id=payment-A1 order_id=A1]`."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = _fields(record, IDS)
        if not ids:
            return line
        head, newline, rest = line.partition("\n")  # a traceback stays below the line
        tail = " ".join(f"{k}={v}" for k, v in ids.items())
        return f"{head} [{tail}]{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, the ids and access
    fields present, and the exception's traceback as one string."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out |= _fields(record, IDS) | _fields(record, ACCESS)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(settings: Settings) -> None:
    """The root logger for a server process (worker, webhook, sandbox, dev), once."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    handler.addFilter(TransactionContext())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # The ids travel as fields: Temporal's loggers need not repeat them in the message.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False
    # Their own chatter stays at WARNING unless the level asks for DEBUG.
    chatter = root.level if root.level == logging.DEBUG else max(root.level, logging.WARNING)
    for name in ("httpx", "httpcore", "alembic", "uvicorn.error"):
        logging.getLogger(name).setLevel(chatter)

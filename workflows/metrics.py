"""Metrics emitted from workflow code, exported by the worker's Prometheus endpoint
(TEMPAY_WORKER_METRICS_PORT). The workflow metric meter records nothing while a workflow
replays, so each settlement counts once however often its history is replayed."""

from __future__ import annotations

from temporalio import workflow

SETTLEMENTS = "tempay_settlements"


def count_settlement(kind: str, status: str) -> None:
    """One transaction settled: `kind` payment/recharge/refund/withdrawal, `status` the
    terminal status it settled in (a later move to NEEDS_REVIEW counts again)."""
    workflow.metric_meter().create_counter(
        SETTLEMENTS, "Transactions settled, by kind and terminal status"
    ).add(1, {"kind": str(kind), "status": str(status)})

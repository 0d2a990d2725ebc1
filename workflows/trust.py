"""The trust boundary inside a transaction: which observations may change it.

A notification's signature proves which provider sent it, not which transaction it is
about: the sandbox signs whatever anyone asks it to, and a provider signs every merchant's
trades with one platform key. So a transaction takes an observation (a notification, a
status answer, a create answer) only from its own provider and, once the provider's own
id for it (trade, refund or transfer number) is known, only when the observation names
that id or none. Anything else changes nothing, not even the duplicate filter: it is
counted (metric and view) and logged for an operator.
"""

from __future__ import annotations

from typing import Protocol

from temporalio import workflow

REFUSED_OBSERVATIONS = "tempay_refused_observations"
# Histories recorded before the boundary may hold an observation it refuses (an attack that
# landed): replaying them takes it as they did, so they replay; every run since refuses.
# The marker is recorded only by a run that refuses something.
TRUST_PATCH = "trust-boundary"


class HasRefusals(Protocol):
    workflow_id: str
    refused_observations: int
    last_refused: str | None


def untrusted(
    provider: str,
    known_id: str | None,
    reported_by: str | None,
    reported_id: str | None,
) -> tuple[str, str] | None:
    """(reason label, message) when an observation must not change a transaction made with
    `provider` whose provider-side id is `known_id`; None when it may. `reported_by` is None
    only in histories recorded before observations named their provider."""
    problem = None
    if reported_by is not None and reported_by != provider:
        problem = "other_provider", f"reported by {reported_by}; made with {provider}"
    elif known_id and reported_id and reported_id != known_id:
        problem = "other_provider_id", f"names {provider} id {reported_id}; this one is {known_id}"
    if problem is None or not workflow.patched(TRUST_PATCH):
        return None  # (not patched: replaying a history from before the boundary)
    return problem


def refuse(view: HasRefusals, kind: str, reason: str, message: str, source: str) -> None:
    """Record a refused observation: it changes nothing else."""
    view.refused_observations += 1
    view.last_refused = f"{source}: {message}"
    workflow.logger.error("%s refused a %s: %s", view.workflow_id, source, message)
    workflow.metric_meter().create_counter(
        REFUSED_OBSERVATIONS,
        "Observations a transaction refused at the trust boundary, by kind and reason",
    ).add(1, {"kind": str(kind), "reason": reason})


def refusal_lines(view: HasRefusals) -> list[str]:
    if not view.refused_observations:
        return []
    return [f"- refused observations: {view.refused_observations} (last: {view.last_refused})"]

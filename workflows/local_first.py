"""A provider or merchant call tried once as a local activity before the regular activity.

A local activity runs in the worker inside the workflow task that asks for it: no activity
task to dispatch, and no second workflow task for its result. For the calls a payment
makes on its happy path (the provider create, the first merchant delivery) that halves the
work Temporal does for them. A local activity is a poor home for retries, though: while it
retries, the workflow task is held open and heartbeats add events to the history, and a
pending local activity does not show in the UI. So a call is tried once locally; if that
attempt fails (and may be retried), the caller hands over to the regular activity, whose
retries are visible as a pending activity with its last failure and cost no history.

Both run the same activity, which is idempotent (the provider by order number, the
merchant by event id), as a regular activity retried after a worker crash already is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, RetryState

A = TypeVar("A")
T = TypeVar("T")

ONE_ATTEMPT = RetryPolicy(maximum_attempts=1)


async def try_locally(
    activity: Callable[[Any, A], Awaitable[T]],
    arg: A,
    *,
    start_to_close_timeout: timedelta,
    summary: str,
    non_retryable_error_types: Sequence[str] | None = None,
) -> T | None:
    """The result of `activity` (a method of an activity class in activities/, passed as a
    function), or None when its one local attempt failed in a way the regular activity's
    retries may fix. A failure they would not retry (non-retryable, or of one of
    `non_retryable_error_types`) is raised as an ActivityError with the provider's error as
    its cause: the form a regular activity's failure takes."""
    try:
        result: T = await workflow.execute_local_activity_method(
            activity,
            arg,
            start_to_close_timeout=start_to_close_timeout,
            retry_policy=ONE_ATTEMPT,
            summary=summary,
        )
        return result
    except (ActivityError, ApplicationError) as exc:
        # A local activity's own error arrives unwrapped; a timeout wraps a TimeoutError.
        cause = exc.cause if isinstance(exc, ActivityError) else exc
        if isinstance(cause, CancelledError):
            raise
        if isinstance(cause, ApplicationError) and (
            cause.non_retryable or cause.type in (non_retryable_error_types or ())
        ):
            name = activity.__name__  # the activity's name: activities/ name each after its method
            raise ActivityError(
                f"{name} failed",
                scheduled_event_id=0,
                started_event_id=0,
                identity="",
                activity_type=name,
                activity_id="",
                retry_state=RetryState.NON_RETRYABLE_FAILURE,
            ) from cause
        workflow.logger.warning(
            "%s: the local attempt failed, the activity retries it: %s", summary, cause
        )
        return None

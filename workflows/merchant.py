"""Delivering a merchant event from a workflow: shared by every transaction kind."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from tempay.domain import (
        MerchantDelivery,
        MerchantDeliveryState,
        MerchantEvent,
        MerchantEventProgress,
    )

ATTEMPT_TIMEOUT = timedelta(seconds=30)
# Retried until the merchant answers 2xx: the first retry after the order's
# timing.merchant_retry_interval (5 s by default), doubling to an hour, for 3 days.
MERCHANT_MAX_RETRY_INTERVAL = timedelta(hours=1)
MERCHANT_DELIVERY_TIMEOUT = timedelta(days=3)


def merchant_retry(initial: timedelta) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=initial,
        backoff_coefficient=2.0,
        maximum_interval=max(initial, MERCHANT_MAX_RETRY_INTERVAL),
        maximum_attempts=0,  # unlimited: MERCHANT_DELIVERY_TIMEOUT bounds it
    )


async def deliver_merchant_event(
    event: MerchantEvent,
    progress: MerchantEventProgress,
    retry_interval: timedelta,
    publish: Callable[[], None],
) -> None:
    """Run the notify_merchant activity and record its outcome in `progress`."""
    try:
        delivery = await workflow.execute_activity(
            "notify_merchant",
            event,
            result_type=MerchantDelivery,
            start_to_close_timeout=ATTEMPT_TIMEOUT,
            schedule_to_close_timeout=MERCHANT_DELIVERY_TIMEOUT,
            retry_policy=merchant_retry(retry_interval),
            summary="notify merchant",
        )
    except ActivityError as exc:
        progress.state = MerchantDeliveryState.FAILED
        progress.error = str(exc.cause or exc)
        workflow.logger.error("merchant event %s never acknowledged: %s", event.id, progress.error)
    else:
        progress.state = delivery.state
        progress.attempts = delivery.attempt
    progress.finished_at = workflow.now()
    publish()

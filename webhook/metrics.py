"""Prometheus metrics of the webhook service."""

from prometheus_client import Counter, Histogram

NOTIFICATIONS = Counter(
    "tempay_notifications_total",
    "Provider notifications received, by provider and outcome",
    ["provider", "outcome"],
)
ACK_LATENCY = Histogram(
    "tempay_notification_ack_seconds",
    "Time from receiving a notification to acknowledging it (signal accepted by Temporal)",
    ["provider"],
    buckets=(
        0.001,
        0.002,
        0.003,
        0.005,
        0.0075,
        0.01,
        0.015,
        0.02,
        0.03,
        0.05,
        0.075,
        0.1,
        0.15,
        0.2,
        0.3,
        0.5,
        0.75,
        1.0,
        2.0,
        5.0,
    ),
)
# The status classes HTTP_RESPONSES counts ("0xx": the client left before an answer).
STATUS_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")
HTTP_RESPONSES = Counter(
    "tempay_http_responses_total",
    "HTTP responses of the webhook service, by listener and status class (2xx ... 5xx; "
    "0xx: the client left before an answer)",
    ["listener", "status_class"],
)

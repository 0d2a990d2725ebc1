"""Slow senders on every route, against the webhook as `tempay webhook` serves it (public and
internal listeners, and the single listener of TEMPAY_INTERNAL_ON_WEBHOOK_PORT): a head
trickled past TEMPAY_HTTP_HEADER_TIMEOUT, a body that stalls past
TEMPAY_NOTIFICATION_READ_TIMEOUT, and a body trickled within it.

Every case runs at once, each on its own connection: the first two get 408 and are hung up on
within seconds; the third gets the route's usual answer. Meanwhile /healthz keeps answering,
no answer is a 5xx, and nothing changes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest

from tests.support.fuzz.harness import PROVIDERS, READ_TIMEOUT, FuzzStack, assert_nothing_changed
from tests.support.fuzz.tally import TALLY
from tests.support.listeners import RawRequest, head

HEADER_TIMEOUT = timedelta(seconds=1)
# Far above both timeouts: what "within seconds, not hung" means here.
PROMPT = 15.0
MODES = ("trickled head", "stalled body", "trickled body")


@dataclass(frozen=True)
class Route:
    listener: str  # "public" or "internal"
    method: str
    path: str
    body: bytes = b"{}"
    # Answers to the whole request, sent slowly but in time; None: any 4xx but 408.
    answers: frozenset[int] | None = None


OK = frozenset({200})
ROUTES = [
    *(Route("public", "POST", f"/notify/{provider}", b'{"id":"slow"}') for provider in PROVIDERS),
    Route("public", "GET", "/healthz", b"", OK),
    Route("internal", "GET", "/healthz", b"", OK),
    Route("internal", "GET", "/metrics", b"", OK),
    Route("internal", "POST", "/api/payments", b'{"order_id":"slow-1"}', frozenset({401})),
    Route("internal", "GET", "/api/payments/slow-1", b"", frozenset({401})),
    Route("internal", "POST", "/codec/encode", b'{"payloads":[]}', OK),
    Route("internal", "POST", "/codec/decode", b'{"payloads":[]}', OK),
]


@dataclass(frozen=True)
class Outcome:
    status: int
    closed: bool  # the server hung up within PROMPT after answering
    seconds: float


def send_slowly(url: str, route: Route, mode: str) -> Outcome:
    started = time.monotonic()
    fields = {"Content-Type": "application/json"}
    with RawRequest(url) as request:
        if mode == "trickled head":
            request.trickle(head(route.method, route.path, fields), every=0.05)
            status = request.status()
            return Outcome(status, request.closed_within(PROMPT), time.monotonic() - started)
        if mode == "stalled body":
            declared = {**fields, "Content-Length": "1000"}
            request.send(head(route.method, route.path, declared) + b'{"id":')
            status = request.status()
            return Outcome(status, request.closed_within(PROMPT), time.monotonic() - started)
        declared = {**fields, "Content-Length": str(len(route.body))}
        request.send(head(route.method, route.path, declared))
        every = READ_TIMEOUT.total_seconds() / (3 * max(1, len(route.body)))
        request.trickle(route.body, every=every)
        return Outcome(request.status(), False, time.monotonic() - started)


@pytest.fixture
def unchanged(fuzz: FuzzStack) -> Iterator[None]:
    before = fuzz.snapshot()
    yield
    assert_nothing_changed(before, fuzz.snapshot())


@pytest.mark.parametrize("one_port", [False, True], ids=["two listeners", "one listener"])
def test_slow_senders_on_every_route(fuzz: FuzzStack, unchanged: None, one_port: bool) -> None:
    with fuzz.listeners(
        http_header_timeout=HEADER_TIMEOUT, internal_on_webhook_port=one_port
    ) as urls:
        cases = [(route, mode) for route in ROUTES for mode in MODES]
        where = {route: urls["webhook"] if one_port else urls[route.listener] for route in ROUTES}
        with ThreadPoolExecutor(max_workers=len(cases)) as pool:
            futures = {
                (route, mode): pool.submit(send_slowly, where[route], route, mode)
                for route, mode in cases
            }
            # The slow senders hold nothing up: /healthz answers on each listener meanwhile.
            healthz = []
            for url in urls.values():
                for _ in range(5):
                    started = time.monotonic()
                    assert httpx.get(f"{url}/healthz", timeout=PROMPT).status_code == 200
                    healthz.append(time.monotonic() - started)
                    time.sleep(0.1)
            outcomes = {case: future.result(timeout=60) for case, future in futures.items()}
    print(f"healthz beside {len(cases)} slow senders: max {max(healthz) * 1000:.1f} ms")
    listeners = "one listener" if one_port else "two listeners"
    for (route, mode), outcome in outcomes.items():
        TALLY.add(f"{route.method} {route.path} ({mode}, {listeners})", outcome.status)
        case = (route.method, route.path, mode, outcome)
        assert outcome.status < 500, case
        assert outcome.seconds < PROMPT, case
        if mode == "trickled body":
            expected = route.answers or frozenset(range(400, 500)) - {408}
            assert outcome.status in expected, case
        else:
            assert (outcome.status, outcome.closed) == (408, True), case

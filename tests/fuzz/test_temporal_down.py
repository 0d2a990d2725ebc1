"""Temporal down on purpose: a webhook service pointed at an address where nothing listens.

A validly signed notification is the only request that may get a 5xx, and it gets exactly 503
(so the provider retries later). Bad input is still refused with its 4xx: the signature and the
body are checked before Temporal is asked anything."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.fuzz.bad_requests import arbitrary_request, assert_refused, mutated
from tests.support.fuzz.harness import (
    PROVIDERS,
    FuzzStack,
    Notification,
    assert_nothing_changed,
    increments,
    parse_counts,
)
from tests.support.fuzz.tally import TALLY
from tests.support.stack import bound_socket, url_of


@pytest.fixture(scope="module")
def cut_off(fuzz: FuzzStack) -> Iterator[httpx.Client]:
    """A client of a webhook whose Temporal address refuses every connection."""
    closed = bound_socket()  # bound, never listening
    try:
        with (
            fuzz.other_webhook(
                temporal_address=url_of(closed).removeprefix("http://"),
                signal_timeout=timedelta(seconds=1),
            ) as url,
            httpx.Client(base_url=url, timeout=30) as client,
        ):
            yield client
    finally:
        closed.close()


@pytest.fixture
def unchanged(fuzz: FuzzStack) -> Iterator[None]:
    before = fuzz.snapshot()
    yield
    assert_nothing_changed(before, fuzz.snapshot())


def post(client: httpx.Client, provider: str, body: bytes, headers: dict[str, Any]) -> int:
    response = client.post(f"/notify/{provider}", content=body, headers=headers)
    route = provider if provider in PROVIDERS else "(unknown)"
    TALLY.add(f"POST /notify/{route} (Temporal down)", response.status_code)
    return response.status_code


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_valid_notification_gets_503(
    fuzz: FuzzStack, cut_off: httpx.Client, unchanged: None, provider: str
) -> None:
    before = parse_counts(cut_off.get("/metrics").text)
    valid = fuzz.kits[provider].valid(fuzz.targets[provider].order_id)
    assert post(cut_off, provider, valid.body, valid.headers) == 503
    assert cut_off.get("/healthz").status_code == 200
    after = parse_counts(cut_off.get("/metrics").text)
    assert increments(before, after) == {(provider, "temporal_unavailable"): 1}


def test_bad_input_is_refused_before_temporal_is_asked(
    fuzz: FuzzStack, cut_off: httpx.Client, unchanged: None
) -> None:
    @given(st.one_of(arbitrary_request(fuzz), mutated(fuzz)))
    def check(case: Any) -> None:
        if isinstance(case[2], Notification):
            provider, _, notification, allowed = case
            status = post(cut_off, provider, notification.body, notification.headers)
        else:
            provider, body, headers, _ = case
            allowed = {400, 401} if provider in PROVIDERS else {404}
            status = post(cut_off, provider, body, headers)
        assert_refused(httpx.Response(status), allowed)

    check()

"""Fuzz suite fixtures and Hypothesis profiles.

Profile "ci" (the default) runs TEMPAY_FUZZ_EXAMPLES examples per property (200 unless set);
`TEMPAY_FUZZ_EXAMPLES=5000 pytest tests/fuzz` (or `scripts/fuzz 5000`) runs thousands. Every
case is tallied by route and answer, and the tally is printed at the end of the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from temporalio.testing import WorkflowEnvironment

from tests.support.fuzz.harness import FuzzStack, threaded_stack
from tests.support.fuzz.tally import TALLY

EXAMPLES = int(os.environ.get("TEMPAY_FUZZ_EXAMPLES", "200"))

settings.register_profile(
    "ci",
    max_examples=EXAMPLES,
    deadline=None,  # real HTTP and a real Temporal: timing is not the property
    database=None,  # failures print a reproduction blob instead
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("TEMPAY_FUZZ_PROFILE", "ci"))


@pytest.fixture(scope="session")
def fuzz(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzStack]:
    client = dev_env.client
    with threaded_stack(
        client.service_client.config.target_host,
        client.namespace,
        tmp_path_factory.mktemp("fuzz"),
    ) as stack:
        yield stack


@pytest.fixture(scope="session")
def webhook_schema(fuzz: FuzzStack) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzz.url}/openapi.json")


@pytest.fixture(scope="session")
def http(fuzz: FuzzStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz.url, timeout=30) as client:
        yield client


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TALLY:
        terminalreporter.write_sep("-", f"fuzz cases by route and answer ({EXAMPLES}/property)")
        for line in TALLY.report():
            terminalreporter.write_line(line)

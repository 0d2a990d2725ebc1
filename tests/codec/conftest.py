"""Fixtures for payload-encryption tests: keys, and a client on the dev server that encrypts;
and the CLI tests' `env` and `dev_factory` (tests.support.cli), for `tempay dev` with a key.

The shared fixtures (tests/conftest.py) stay unencrypted; these tests opt in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tempay.codec import new_key_entry
from tempay.settings import Settings
from tempay.temporal import connect
from tests.support.cli import dev_factory, env  # noqa: F401


@pytest.fixture
def old_entry() -> str:
    return new_key_entry("k-old")


@pytest.fixture
def new_entry() -> str:
    return new_key_entry("k-new")


def codec_settings(dev_env: WorkflowEnvironment, data_dir: Path, keys: str) -> Settings:
    return Settings(
        temporal_address=dev_env.client.service_client.config.target_host,
        temporal_namespace=dev_env.client.namespace,
        data_dir=data_dir,
        codec_keys=SecretStr(keys),
    )


@pytest.fixture(scope="module")
async def codec_client(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Client, str]]:
    """A client on the shared dev server built by tempay.temporal.connect with a key
    configured, and that key's `id:base64` entry."""
    entry = new_key_entry("k-e2e")
    settings = codec_settings(dev_env, tmp_path_factory.mktemp("codec"), entry)
    yield await connect(settings), entry

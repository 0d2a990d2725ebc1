"""`tempay bench`'s load modes refuse bad arguments in one line, before starting anything."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.cli import assert_one_line_error, tempay


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--webhook-rate", "5", "--pending", "10"], "separate benchmarks"),
        (["--webhook-rate", "5", "--breakdown"], "--breakdown is for the end-to-end"),
        (["--pending", "10", "--breakdown"], "--breakdown is for the end-to-end"),
        (["--webhook-rate", "0"], "must be positive"),
        (["--webhook-rate", "5", "--duration", "-1"], "must be positive"),
        (["--webhook-rate", "5", "--pool", "0"], "must be positive"),
        (["--pending", "ten"], "--pending takes sizes"),
        (["--pending", "100,-1"], "--pending takes positive sizes"),
        (["--pending", "10", "--status-cap", "0"], "--status-cap must be positive"),
        (["--pending", "10", "--first-query", "0"], "--first-query must be positive"),
    ],
)
def test_bad_load_arguments_are_refused(args: list[str], fragment: str, tmp_path: Path) -> None:
    env = {**os.environ, "TEMPAY_DATA_DIR": str(tmp_path / "data")}
    result = tempay("bench", *args, env=env)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "data").exists()

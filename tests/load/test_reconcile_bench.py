"""`tempay bench --reconcile N` at a small N: it finds exactly what it planted, says so, and
fails when the answer is not the planted one (issue 21)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from proof import reconcile_bench
from providers.bills import BillEntry
from tests.support.cli import assert_one_line_error, tempay


def test_the_cli_prints_the_planted_counts_and_the_figures(tmp_path: Path) -> None:
    env = {**os.environ, "TEMPAY_DATA_DIR": str(tmp_path / "data")}
    result = tempay("bench", "--reconcile", "2000", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "book: 2000 settled payments (+6000 journal entries) filled in " in out
    assert "statement: 2000 lines in the sandbox's layout" in out
    assert "comparison: 2000 lines against 2000 rows in " in out
    assert (
        "counts: matched 1980, missing_in_tempay 10, missing_at_provider 10, "
        "status_mismatch 0, amount_mismatch 10; to review 30, to query 0"
    ) in out
    assert "peak RSS: " in out and " MB (the process, ru_maxrss)" in out
    assert out.rstrip().endswith(
        "check: every planted discrepancy found, nothing else; the book kept the same"
    )
    assert not (tmp_path / "data").exists()  # its book is a temporary one


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--reconcile", "2000", "--payments", "50"], "--reconcile is a benchmark of its own"),
        (["--reconcile", "2000", "--pending", "10", "--breakdown"], "drop --breakdown, --pending"),
        (["--reconcile", "2000", "--webhook-rate", "5"], "drop --webhook-rate"),
        (["--reconcile", "99"], "--reconcile must be at least 100"),
    ],
)
def test_bad_arguments_are_refused(args: list[str], fragment: str, tmp_path: Path) -> None:
    env = {**os.environ, "TEMPAY_DATA_DIR": str(tmp_path / "data")}
    assert_one_line_error(tempay("bench", *args, env=env), fragment)


async def test_a_wrong_answer_fails_the_bench(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One more row without a line than planted: the check says what differs, exit 1."""
    write = reconcile_bench.statement_entries

    def one_short(plan: reconcile_bench.Plan) -> Iterator[BillEntry]:
        entries = list(write(plan))
        return iter(entries[:-1])

    monkeypatch.setattr(reconcile_bench, "statement_entries", one_short)
    assert await reconcile_bench.run_reconcile_bench(200) == 1
    err = capsys.readouterr().err
    assert "wrong answer: counts " in err and "'missing_at_provider': 11" in err

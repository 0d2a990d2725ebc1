"""`tempay bench` and `tempay faults` run from a source checkout only: where proof/ is not
installed (the wheel and the image leave it out), each says so in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import assert_one_line_error

# The CLI as an installed image runs it: no package named proof anywhere on the path.
WITHOUT_PROOF = """
import sys

class NoProof:
    def find_spec(self, name, path=None, target=None):
        if name == "proof" or name.startswith("proof."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoProof())
from commands.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("args", [["bench", "--payments", "50"], ["faults"]])
def test_without_proof_the_command_asks_for_a_checkout(
    args: list[str], env: dict[str, str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_PROOF, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_one_line_error(result, f"`tempay {args[0]}` needs a source checkout")


def test_from_a_checkout_the_console_script_finds_proof_anywhere(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """The editable install maps only the runtime's packages: the CLI finds proof/ beside
    them, whatever the working directory (the argument check runs after the import)."""
    tempay = f"{sys.prefix}/bin/tempay"
    result = subprocess.run(
        [tempay, "bench", "--payments", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_one_line_error(result, "--payments must be at least")

"""Who may import whom is written down as import-linter contracts in pyproject.toml, and
scripts/test runs `lint-imports` on them. These tests prove the contracts hold, that they
would catch a break (a contract that cannot fail guards nothing), and that proof/ (the
benchmarks, the baseline workflows and the fault harness) stays out of the wheel and the
image: `tempay bench` and `tempay faults` load it by name from a checkout (commands/cli.py)."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROOF = "proof"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def packages() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(config["tool"]["importlinter"]["root_packages"])


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # import-linter puts the working directory first on the path: it reads the tree at root.
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=60
    )


def test_the_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_contracts_catch_an_upward_import_and_a_provider_naming_another(
    tmp_path: Path,
) -> None:
    for name in packages():
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / "tempay" / "domain.py").open("a") as core:
        core.write("\nfrom workflows.payment import PaymentWorkflow as _upward\n")
    with (tmp_path / "providers" / "stripe" / "__init__.py").open("a") as stripe:
        stripe.write("\nimport providers.alipay as _sibling\n")
    with (tmp_path / "workflows" / "trust.py").open("a") as workflow:
        workflow.write("\nimport httpx as _io\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "tempay is not allowed to import workflows" in result.stdout
    assert "tempay.domain -> workflows.payment" in result.stdout
    assert "providers.stripe is not allowed to import providers.alipay" in result.stdout
    assert "workflows.trust -> httpx" in result.stdout


def test_neither_the_wheel_nor_the_image_carries_proof() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not [p for p in include if fnmatch.fnmatch(PROOF, p)], include
    assert [p for p in packages() if p != PROOF] == [
        p for p in packages() if any(fnmatch.fnmatch(p, i) for i in include)
    ], "every runtime package ships in the wheel"
    assert PROOF in (ROOT / ".dockerignore").read_text().splitlines()
    dockerfile = (ROOT / "Dockerfile").read_text().splitlines()
    missing = [p for p in packages() if p != PROOF and f"COPY {p} ./{p}" not in dockerfile]
    assert not missing, f"the image lacks {missing}"

"""The test suite's layout: what tests share lives in tests/support/, and no test module
(test_*.py, conftest.py) imports another, so a test module can be moved, renamed or deleted
without breaking the others."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent
SUPPORT = "tests.support"


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute name) of every import in the file at `path` below `root` (the folder
    that holds tests/), at any depth; `from x import y` counts as x.y, since y may be a
    module."""
    package = ".".join(path.relative_to(root).parent.parts)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the file's package
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def imports_outside_support(tests: Path) -> list[str]:
    """Every import, in a module under `tests`, of a module of tests/ outside tests/support/."""
    wrong = []
    for path in sorted(tests.rglob("*.py")):
        for line, name in imported_modules(path, tests.parent):
            inside_tests = name == "tests" or name.startswith("tests.")
            if inside_tests and not (name == SUPPORT or name.startswith(SUPPORT + ".")):
                wrong.append(f"{path.relative_to(tests.parent)}:{line} imports {name}")
    return wrong


def test_modules_under_tests_import_from_tests_only_tests_support() -> None:
    wrong = imports_outside_support(TESTS)
    assert not wrong, "move what they share to tests/support/:\n" + "\n".join(wrong)


def test_the_check_sees_test_modules_import_each_other(tmp_path: Path) -> None:
    """The check above can fail: absolute, relative and nested imports are all seen."""
    (tmp_path / "tests" / "workflows").mkdir(parents=True)
    (tmp_path / "tests" / "workflows" / "test_refund.py").write_text(
        "from tests.workflows.test_payment import start\n"
        "from .conftest import FakeRefundProvider\n"
        "from tests.support.stack import serve\n"
        "import tests.support.temporal\n"
        "def helper():\n"
        "    from .. import conftest\n"
    )
    assert imports_outside_support(tmp_path / "tests") == [
        "tests/workflows/test_refund.py:1 imports tests.workflows.test_payment.start",
        "tests/workflows/test_refund.py:2 imports tests.workflows.conftest.FakeRefundProvider",
        "tests/workflows/test_refund.py:6 imports tests.conftest",
    ]

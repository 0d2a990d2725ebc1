"""The runtime stands without its proof: no module of tempay, workflows, activities, webhook,
providers or worker.py imports proof/ (the benchmarks, the baseline workflows and the fault
harness), and neither the wheel nor the image carries it. `tempay bench` and `tempay faults`
load it by name from a source checkout only (tempay/cli.py)."""

from __future__ import annotations

import ast
import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ("tempay", "workflows", "activities", "webhook", "providers", "worker.py")
PROOF = "proof"


def proof_imports(root: Path, runtime: tuple[str, ...] = RUNTIME) -> list[str]:
    """`file:line imports name` for every import of proof, at any depth, in the runtime's
    modules below `root`."""
    files: list[Path] = []
    for name in runtime:
        path = root / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    wrong = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            wrong += [
                f"{path.relative_to(root)}:{node.lineno} imports {name}"
                for name in names
                if name == PROOF or name.startswith(PROOF + ".")
            ]
    return wrong


def test_no_runtime_module_imports_proof() -> None:
    wrong = proof_imports(ROOT)
    assert not wrong, "the runtime must not import proof/:\n" + "\n".join(wrong)


def test_the_check_sees_imports_of_proof(tmp_path: Path) -> None:
    (tmp_path / "tempay").mkdir()
    (tmp_path / "tempay" / "worker.py").write_text(
        "import proof.baseline_workflows\n"
        "from proof import bench\n"
        "from proofs import other\n"
        "def build():\n"
        "    from proof.worker import WORKFLOWS\n"
    )
    (tmp_path / "worker.py").write_text("import proof\n")
    assert proof_imports(tmp_path, ("tempay", "worker.py")) == [
        "tempay/worker.py:1 imports proof.baseline_workflows",
        "tempay/worker.py:2 imports proof",
        "tempay/worker.py:5 imports proof.worker",
        "worker.py:1 imports proof",
    ]


def test_neither_the_wheel_nor_the_image_carries_proof() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not [p for p in include if fnmatch.fnmatch(PROOF, p)], include
    assert PROOF in (ROOT / ".dockerignore").read_text().splitlines()

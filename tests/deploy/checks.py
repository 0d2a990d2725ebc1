"""Checks of docker-compose.yml, the Dockerfile and .env.example against the code.

Docker cannot run where the tests run, so the deployment files are read instead: every
checker takes the parsed files and returns a list of problems (empty when all is well), so
a test can feed it a broken copy and see the problem reported. What the code says (CLI
subcommands, setting names, default ports, search attributes) is derived from the code.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import pkgutil
import re
import shlex
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from providers.sandbox.settings import SandboxSettings
from tempay import search_attributes as sa
from tempay.cli import parser as cli_parser
from tempay.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

# The packages that hold settings classes (pydantic-settings BaseSettings subclasses).
SETTINGS_PACKAGES = ("tempay", "providers", "webhook")

SERVER_IMAGE = "temporalio/server"
UI_IMAGE = "temporalio/ui"
SETUP_SCRIPT = "setup-namespace.sh"
TEMPORAL_GRPC_DEFAULT = 7233  # temporalio/server's FRONTEND_GRPC_PORT default
UI_PORT_DEFAULT = 8080  # temporalio/ui's TEMPORAL_UI_PORT default
# The worker, webhook and sandbox processes: the `tempay` subcommands compose must run.
ROLES = ("worker", "webhook", "sandbox")


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise ValueError(f"{path} has no services")
    return data


# --- reading compose values ------------------------------------------------------------


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, from either compose form (mapping or KEY=VALUE)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {key: value for key, value in pairs}
    return {key: "" if value is None else str(value) for key, value in env.items()}


def argv_of(service: dict[str, Any]) -> list[str]:
    """entrypoint + command, as compose runs them (strings are split like a shell)."""
    argv: list[str] = []
    for key in ("entrypoint", "command"):
        value = service.get(key)
        if value is None:
            continue
        argv += shlex.split(value) if isinstance(value, str) else [str(v) for v in value]
    return argv


@dataclass(frozen=True)
class Port:
    host: int | None  # None: not published on the host
    container: int


def ports_of(service: dict[str, Any]) -> list[Port]:
    ports = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            published = entry.get("published")
            ports.append(Port(int(published) if published else None, int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        container = int(parts[-1])
        host = int(parts[-2]) if len(parts) >= 2 and parts[-2] else None
        ports.append(Port(host, container))
    return ports


def host_port(service: dict[str, Any], container: int) -> int | None:
    for port in ports_of(service):
        if port.container == container:
            return port.host
    return None


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, PurePosixPath]]:
    """(source as written, container target) of every bind mount (sources with a path)."""
    mounts = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            if entry.get("type") == "bind":
                mounts.append((str(entry["source"]), PurePosixPath(entry["target"])))
            continue
        source, target, *_ = str(entry).split(":") + [""]
        if source.startswith((".", "/")) and target:
            mounts.append((source, PurePosixPath(target)))
    return mounts


def host_path(service: dict[str, Any], container_path: str) -> Path | None:
    """The repository file a container path of a bind mount comes from, if any."""
    path = PurePosixPath(container_path)
    for source, target in bind_mounts(service):
        if path == target or target in path.parents:
            return ROOT / source / path.relative_to(target)
    return None


def image_name(service: dict[str, Any]) -> str:
    image = str(service.get("image", ""))
    reference = image.split("@")[0]
    last = reference.rsplit("/", 1)[-1]
    return reference[: len(reference) - len(last)] + last.split(":")[0]


def built(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from this repository's Dockerfile."""
    return {name: s for name, s in compose["services"].items() if "build" in s}


def by_image(compose: dict[str, Any], image: str) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if image_name(s) == image}


def running(compose: dict[str, Any], subcommand: str) -> dict[str, dict[str, Any]]:
    """Built services whose command is `tempay SUBCOMMAND ...`."""
    return {name: s for name, s in built(compose).items() if argv_of(s)[1:2] == [subcommand]}


def one(services: dict[str, dict[str, Any]], what: str) -> tuple[str, dict[str, Any]]:
    if len(services) != 1:
        raise LookupError(f"expected exactly one {what} service, found {sorted(services)}")
    return next(iter(services.items()))


# --- what the code says ------------------------------------------------------------------


def console_scripts() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(project.get("scripts", {}))


def subcommands(parser: argparse.ArgumentParser | None = None) -> set[str]:
    parser = parser or cli_parser()
    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found |= set(action.choices)
    return found


def settings_classes() -> list[type[BaseSettings]]:
    """Every BaseSettings subclass defined in the project's packages (imports them all)."""
    for package_name in SETTINGS_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, f"{package_name}."):
            if not info.name.endswith(".__main__"):  # that one runs the CLI
                importlib.import_module(info.name)
    classes: list[type[BaseSettings]] = []
    pending: list[type[BaseSettings]] = [BaseSettings]
    while pending:
        subclasses: list[type[BaseSettings]] = pending.pop().__subclasses__()
        pending += subclasses
        classes += [c for c in subclasses if c.__module__.split(".")[0] in SETTINGS_PACKAGES]
    return classes


def env_names(cls: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads (upper case; they are not
    case-sensitive unless the class says so)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {choice for choice in alias.choices if isinstance(choice, str)}
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{prefix}{field.alias or field_name}")
    return {name.upper() for name in names}


def known_settings() -> set[str]:
    names: set[str] = set()
    for cls in settings_classes():
        names |= env_names(cls)
    return names


def default(cls: type[BaseSettings], field: str) -> Any:
    return cls.model_fields[field].default


# --- checks ------------------------------------------------------------------------------

_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def image_pin_problem(image: str) -> str | None:
    """Why an image reference is not pinned (a tag other than `latest`, or a digest)."""
    if "$" in image:
        return f"{image!r}: a variable decides the version"
    reference, _, digest = image.partition("@")
    if digest:
        return None if _DIGEST.match(digest) else f"{image!r}: malformed digest"
    last = reference.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"{image!r}: no tag (means latest)"
    tag = last.split(":", 1)[1]
    if not _TAG.match(tag):
        return f"{image!r}: malformed tag"
    if tag == "latest" or tag.startswith("latest-"):
        return f"{image!r}: `latest` is not a version"
    return None


def image_problems(name: str, service: dict[str, Any]) -> list[str]:
    if "image" not in service:
        return [] if "build" in service else [f"{name}: neither image nor build"]
    problem = image_pin_problem(str(service["image"]))
    return [f"{name}: {problem}"] if problem else []


def build_problems(name: str, service: dict[str, Any]) -> list[str]:
    build = service["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    if (ROOT / context).resolve() != ROOT or not (ROOT / context / dockerfile).is_file():
        return [f"{name}: builds {context}/{dockerfile}, not this repository's Dockerfile"]
    return []


def command_problems(
    name: str, service: dict[str, Any], scripts: dict[str, str], subcommand_names: set[str]
) -> list[str]:
    """A built service must run a `tempay` subcommand with options the CLI accepts."""
    argv = argv_of(service)
    if not argv:
        return [f"{name}: no command (the image's default is not a role)"]
    if argv[0] not in scripts:
        return [f"{name}: {argv[0]!r} is not a console script of pyproject.toml"]
    if len(argv) < 2 or argv[1] not in subcommand_names:
        return [f"{name}: {shlex.join(argv)!r}: not a subcommand of {argv[0]}"]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            cli_parser().parse_args(argv[1:])
    except SystemExit:
        return [f"{name}: {shlex.join(argv)!r}: {stderr.getvalue().strip().splitlines()[-1]}"]
    return []


def role_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    for role in ROLES:
        services = running(compose, role)
        if len(services) != 1:
            problems.append(f"`tempay {role}` runs in {len(services)} services, not 1")
    return problems


def setting_problems(name: str, service: dict[str, Any], known: set[str]) -> list[str]:
    return [
        f"{name}: {key} is not a tempay setting"
        for key in env_of(service)
        if key.upper().startswith(("TEMPAY_", "TEMPORAL_")) and key.upper() not in known
    ]


def temporal_address_problems(compose: dict[str, Any]) -> list[str]:
    """Every TEMPORAL_ADDRESS is the temporal service's gRPC port, which is published."""
    server_name, server = one(by_image(compose, SERVER_IMAGE), SERVER_IMAGE)
    grpc = int(env_of(server).get("FRONTEND_GRPC_PORT", TEMPORAL_GRPC_DEFAULT))
    problems = []
    # The CLI on the host reaches the stack with its default address.
    host_default = int(str(default(Settings, "temporal_address")).rsplit(":", 1)[1])
    if host_port(server, grpc) != host_default:
        problems.append(f"{server_name}: gRPC port {grpc} is not published on {host_default}")
    expected = f"{server_name}:{grpc}"
    for name, service in compose["services"].items():
        address = env_of(service).get("TEMPORAL_ADDRESS")
        if address is not None and address != expected:
            problems.append(f"{name}: TEMPORAL_ADDRESS={address}, expected {expected}")
    for name, service in built(compose).items():
        talks_to_temporal = role_of(service) in ("worker", "webhook")
        if talks_to_temporal and "TEMPORAL_ADDRESS" not in env_of(service):
            problems.append(f"{name}: no TEMPORAL_ADDRESS (the default is 127.0.0.1)")
    return problems


def _url_problem(name: str, key: str, value: str | None, expected: str) -> list[str]:
    if value is None:
        return [f"{name}: {key} unset, expected {expected}"]
    return [] if value.rstrip("/") == expected else [f"{name}: {key}={value}, expected {expected}"]


def _http_service(
    compose: dict[str, Any], role: str, cls: type[BaseSettings], prefix: str
) -> tuple[str, list[str], int, int | None]:
    """Checks the role's bind host and port settings; returns (name, problems, port, host port)."""
    name, service = one(running(compose, role), f"`tempay {role}`")
    env = env_of(service)
    problems = []
    port_default = int(default(cls, "port" if cls is SandboxSettings else f"{role}_port"))
    port = int(env.get(f"{prefix}PORT", port_default))
    if port != port_default:
        problems.append(f"{name}: {prefix}PORT={port}, the code's default is {port_default}")
    if env.get(f"{prefix}HOST") != "0.0.0.0":
        problems.append(f"{name}: {prefix}HOST must be 0.0.0.0 in a container")
    published = host_port(service, port)
    if published is None:
        problems.append(f"{name}: port {port} is not published")
    elif published != port:
        problems.append(f"{name}: published on {published}, not {port} as the docs and CLI say")
    test = (service.get("healthcheck") or {}).get("test", [])
    health = test if isinstance(test, str) else " ".join(map(str, test))
    match = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)/healthz", health)
    if match is None:
        problems.append(f"{name}: healthcheck does not GET /healthz")
    elif int(match.group(1)) != port:
        problems.append(f"{name}: healthcheck port {match.group(1)}, service port {port}")
    return name, problems, port, published


def port_problems(compose: dict[str, Any]) -> list[str]:
    hook, problems, hook_port, hook_host_port = _http_service(
        compose, "webhook", Settings, "TEMPAY_WEBHOOK_"
    )
    box, box_problems, box_port, box_host_port = _http_service(
        compose, "sandbox", SandboxSettings, "TEMPAY_SANDBOX_"
    )
    problems += box_problems
    box_env = env_of(compose["services"][box])
    if box_host_port is not None:  # (else "not published" is already reported)
        problems += _url_problem(
            box,
            "TEMPAY_SANDBOX_PUBLIC_URL",
            box_env.get("TEMPAY_SANDBOX_PUBLIC_URL"),
            f"http://localhost:{box_host_port}",
        )
    for name, service in built(compose).items():
        env = env_of(service)
        if "TEMPAY_WEBHOOK_URL" in env or name != box:
            problems += _url_problem(
                name,
                "TEMPAY_WEBHOOK_URL",
                env.get("TEMPAY_WEBHOOK_URL"),
                f"http://{hook}:{hook_port}",
            )
        if "TEMPAY_SANDBOX_URL" in env or name != box:
            problems += _url_problem(
                name,
                "TEMPAY_SANDBOX_URL",
                env.get("TEMPAY_SANDBOX_URL"),
                f"http://{box}:{box_port}",
            )
    return problems


def codec_problems(compose: dict[str, Any]) -> list[str]:
    """The UI's codec endpoint is the webhook's published /codec (the browser calls it), and
    the webhook lets the UI's published origin call it."""
    ui_name, ui = one(by_image(compose, UI_IMAGE), UI_IMAGE)
    hook, hook_service = one(running(compose, "webhook"), "`tempay webhook`")
    problems = []
    hook_port = int(
        env_of(hook_service).get("TEMPAY_WEBHOOK_PORT", default(Settings, "webhook_port"))
    )
    hook_host_port = host_port(hook_service, hook_port)
    problems += _url_problem(
        ui_name,
        "TEMPORAL_CODEC_ENDPOINT",
        env_of(ui).get("TEMPORAL_CODEC_ENDPOINT"),
        f"http://localhost:{hook_host_port}/codec",
    )
    ui_port = int(env_of(ui).get("TEMPORAL_UI_PORT", UI_PORT_DEFAULT))
    ui_host_port = host_port(ui, ui_port)
    if ui_host_port != UI_PORT_DEFAULT:
        return [*problems, f"{ui_name}: port {ui_port} is not published on {UI_PORT_DEFAULT}"]
    origin = f"http://localhost:{ui_host_port}"
    raw = env_of(hook_service).get("TEMPAY_CODEC_CORS_ORIGINS", "")
    origins = json.loads(raw) if raw.strip().startswith("[") else raw.split(",")
    if origin not in {o.strip().rstrip("/") for o in origins}:
        problems.append(f"{hook}: TEMPAY_CODEC_CORS_ORIGINS={raw!r} does not allow {origin}")
    for name, service in built(compose).items():
        keys = env_of(service).get("TEMPAY_CODEC_KEYS")
        if role_of(service) in ("worker", "webhook") and keys is None:
            problems.append(f"{name}: no TEMPAY_CODEC_KEYS (payloads must be encrypted)")
        elif keys is not None and interpolated(keys) != {"TEMPAY_CODEC_KEYS"}:
            problems.append(f"{name}: TEMPAY_CODEC_KEYS must come from .env, not this file")
    return problems


def role_of(service: dict[str, Any]) -> str | None:
    argv = argv_of(service)
    return argv[1] if len(argv) > 1 else None


def scaling_problems(compose: dict[str, Any]) -> list[str]:
    """`docker compose up --scale worker=3` needs no fixed name and no host port."""
    problems = []
    for name, service in running(compose, "worker").items():
        if "container_name" in service:
            problems.append(f"{name}: container_name prevents --scale")
        if any(port.host is not None for port in ports_of(service)):
            problems.append(f"{name}: a published host port prevents --scale")
    return problems


def search_attribute_problems(compose: dict[str, Any]) -> list[str]:
    """A one-shot service registers tempay's search attributes on the namespace it uses."""
    setups = {
        n: s for n, s in compose["services"].items() if any(SETUP_SCRIPT in a for a in argv_of(s))
    }
    name, service = one(setups, SETUP_SCRIPT)
    argv = argv_of(service)
    args = argv[next(i for i, a in enumerate(argv) if SETUP_SCRIPT in a) + 1 :]
    problems = []
    namespaces = {
        env_of(s).get("TEMPORAL_NAMESPACE", default(Settings, "temporal_namespace"))
        for s in built(compose).values()
        if role_of(s) in ("worker", "webhook")
    }
    if not args or namespaces != {args[0]}:
        problems.append(f"{name}: registers on {args[:1]}, tempay uses {sorted(namespaces)}")
    expected = sorted(key.name for key in sa.ALL)
    if sorted(args[1:]) != expected:
        problems.append(f"{name}: registers {sorted(args[1:])}, tempay needs {expected}")
    for dependant, other in compose["services"].items():
        if role_of(other) in ("worker", "webhook"):
            condition = (other.get("depends_on") or {}).get(name, {}).get("condition")
            if condition != "service_completed_successfully":
                problems.append(f"{dependant}: does not wait for {name} to complete")
    return problems


def mount_problems(compose: dict[str, Any]) -> list[str]:
    """Bind-mounted sources exist, and so do the mounted scripts and files services name."""
    problems = []
    for name, service in compose["services"].items():
        for source, _ in bind_mounts(service):
            if not (ROOT / source).exists():
                problems.append(f"{name}: mounts {source}, which does not exist")
        for arg in argv_of(service):
            if arg.startswith("/"):
                path = host_path(service, arg)
                if path is not None and not path.is_file():
                    problems.append(f"{name}: runs {arg}, but {path} does not exist")
        config = env_of(service).get("DYNAMIC_CONFIG_FILE_PATH")
        if config is not None:
            full = config if config.startswith("/") else f"/etc/temporal/{config}"
            path = host_path(service, full)
            if path is None or not path.is_file():
                problems.append(f"{name}: DYNAMIC_CONFIG_FILE_PATH {full} is not a mounted file")
    return problems


_INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")


def interpolated(text: str) -> set[str]:
    """Variables compose substitutes (`${VAR}`, `${VAR:-x}`, ...; `$${` is a literal `$`)."""
    return set(_INTERPOLATION.findall(text))


def env_file_names(text: str) -> dict[str, str]:
    names = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            names[key.removeprefix("export ").strip()] = value.strip()
    return names


def env_example_problems(compose_text: str, example_text: str) -> list[str]:
    listed = env_file_names(example_text)
    problems = [
        f".env.example does not list {name}, which docker-compose.yml uses"
        for name in sorted(interpolated(compose_text) - set(listed))
    ]
    if listed.get("TEMPAY_CODEC_KEYS"):
        problems.append(".env.example must not carry a codec key (each install makes its own)")
    return problems


# --- the Dockerfile ----------------------------------------------------------------------


def dockerfile_instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        instruction, _, args = logical.partition(" ")
        yield instruction.upper(), args.strip()
        logical = ""


def dockerfile_problems(text: str, context: Path = ROOT) -> list[str]:
    problems = []
    instructions = list(dockerfile_instructions(text))
    stages: set[str] = set()
    copied: set[str] = set()
    users = []
    for instruction, args in instructions:
        if instruction == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            image = words[0]
            if len(words) >= 3 and words[1].lower() == "as":
                stages.add(words[2])
            if image not in stages:
                problem = image_pin_problem(image)
                if problem:
                    problems.append(f"Dockerfile FROM {problem}")
        elif instruction in ("COPY", "ADD"):
            words = shlex.split(args)
            if any(w.startswith("--from") for w in words):
                continue
            sources = [w for w in words if not w.startswith("--")][:-1]
            for source in sources:
                copied.add(source.rstrip("/").removeprefix("./"))
                if not list(context.glob(source)):
                    problems.append(f"Dockerfile copies {source}, which does not exist")
        elif instruction == "USER":
            users.append(args.split(":")[0])
    if not users or users[-1] in ("root", "0"):
        problems.append("Dockerfile: the processes must not run as root (no USER)")
    problems += [
        f"Dockerfile does not copy {need}, which `pip install .` needs"
        for need in sorted(install_needs(context) - copied)
    ]
    return problems


def install_needs(context: Path = ROOT) -> set[str]:
    """pyproject.toml, its readme, and every top-level package its find-config includes."""
    pyproject = tomllib.loads((context / "pyproject.toml").read_text())
    needs = {"pyproject.toml"}
    readme = pyproject["project"].get("readme")
    if isinstance(readme, str):
        needs.add(readme)
    patterns: Iterable[str] = (
        pyproject.get("tool", {})
        .get("setuptools", {})
        .get("packages", {})
        .get("find", {})
        .get("include", [])
    )
    for pattern in patterns:
        top = pattern.split(".")[0].rstrip("*")
        needs |= {
            p.name
            for p in context.iterdir()
            if p.is_dir() and p.name.startswith(top) and (p / "__init__.py").exists()
        }
    return needs

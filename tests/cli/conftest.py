"""The CLI tests' fixtures: `env` and `dev_factory` (tests.support.cli)."""

from tests.support.cli import dev_factory, env  # noqa: F401

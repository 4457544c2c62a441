"""The rules-file loader's layout: one module per section, one table of secret sources."""

from __future__ import annotations

import ast
from pathlib import Path

import mailrules.config
from mailrules.config.accounts import ACCOUNT_KEYS, SECRET_KEYS, SECRET_VALUES
from mailrules.secrets import SECRET_SOURCES

PACKAGE = Path(mailrules.config.__file__).parent


def _imports(path: Path) -> list[ast.ImportFrom]:
    return [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom)]


def test_the_loader_accepts_exactly_the_secret_sources_that_get_secret_knows():
    assert tuple(SECRET_SOURCES) == SECRET_KEYS
    assert set(SECRET_VALUES) == set(SECRET_SOURCES)
    assert all(key in ACCOUNT_KEYS for key in SECRET_SOURCES)


def test_the_public_api_is_still_importable_from_mailrules_config():
    from mailrules.config import (  # noqa: F401
        ConfigError,
        ConfigWarning,
        default_config_path,
        is_loopback,
        load,
        parse_duration,
        parse_size,
    )

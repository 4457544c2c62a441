"""The rules-file loader's layout: one module per section, one table of secret sources."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import mailrules.config
from mailrules.config.accounts import ACCOUNT_KEYS, SECRET_KEYS, SECRET_VALUES
from mailrules.secrets import SECRET_SOURCES

PACKAGE = Path(mailrules.config.__file__).parent
EXAMPLE = PACKAGE.parent.parent / "rules.example.yaml"  # the repository's example (it includes examples/)


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


def test_the_accounts_alone_load_without_the_plugins_or_the_modules_that_read_rules():
    """`run --once` reads them first and starts connecting while the rest loads (`config.top`)."""
    code = ("import sys; from mailrules.config.top import load_accounts; load_accounts(sys.argv[1]); "
            "print(sorted(m for m in ('mailrules.plugins', 'mailrules.builtins', 'mailrules.config.rules') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(EXAMPLE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_accounts_alone_are_the_accounts_of_the_whole_load():
    from mailrules.config import load, load_accounts

    assert load_accounts(EXAMPLE) == load(EXAMPLE).accounts


def test_a_problem_in_the_accounts_alone_is_reported_with_its_place_as_the_whole_load_reports_it(tmp_path):
    from mailrules.config import ConfigError, load, load_accounts

    path = tmp_path / "rules.yaml"
    path.write_text("version: 1\naccounts:\n  work:\n    port: 993\nrules: []\n")
    with pytest.raises(ConfigError, match=r"rules\.yaml:4:5: account 'work': missing key 'host'") as alone:
        load_accounts(path)
    with pytest.raises(ConfigError) as whole:
        load(path)
    assert str(alone.value) == str(whole.value)

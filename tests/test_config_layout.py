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


def test_no_module_of_the_loader_imports_a_private_name_from_another():
    for path in PACKAGE.glob("*.py"):
        for node in _imports(path):
            private = [alias.name for alias in node.names if alias.name.startswith("_")]
            assert not private, f"{path.name} imports {private} from {node.module}"


def test_the_modules_of_the_loader_import_each_other_without_a_cycle():
    graph = {
        path.stem: {node.module for node in _imports(path) if node.level == 1 and node.module}
        for path in PACKAGE.glob("*.py")
    }
    done: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        assert name not in chain, f"import cycle: {' -> '.join((*chain, name))}"
        if name in done:
            return
        for imported in graph.get(name, ()):
            visit(imported, (*chain, name))
        done.add(name)

    for name in graph:
        if name != "__init__":
            visit(name, ())


def test_no_module_of_the_loader_is_over_600_lines():
    sizes = {path.name: len(path.read_text().splitlines()) for path in PACKAGE.glob("*.py")}
    assert max(sizes.values()) <= 600, sizes

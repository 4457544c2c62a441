"""The package's shape: no import cycles, no private names imported across modules, modules of a size.

Reads the sources (no imports run): every `from .x import y` inside mailrules is an edge.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[1] / "mailrules"
MAX_LINES = 600  # beyond this a module says at its top why it is one module ("One module because")


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        name = ".".join(("mailrules", *rel.with_suffix("").parts)).removesuffix(".__init__")
        out[name] = path
    return out


def _imports() -> tuple[dict[str, set[str]], list[str]]:
    """Module -> the mailrules modules it imports; and every private name imported across modules."""
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    private: list[str] = []
    for cur, path in mods.items():
        package = cur if path.name == "__init__.py" else cur.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = parts[: len(parts) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                for alias in node.names:
                    target = f"{module}.{alias.name}" if f"{module}.{alias.name}" in mods else module
                    if target in mods and target != cur:
                        edges[cur].add(target)
                        if alias.name.startswith("_") and not alias.name.startswith("__"):
                            private.append(f"{cur} imports {module}.{alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in mods and alias.name != cur:
                        edges[cur].add(alias.name)
    return edges, private


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


# Packages are allowed to import their own submodules from __init__ (that is no cycle of meaning).
def _without_package_inits(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in edges.items()}


def test_no_import_cycles_among_the_modules():
    edges, _ = _imports()
    assert _cycles(_without_package_inits(edges)) == []


def test_no_private_name_is_imported_from_another_module():
    _, private = _imports()
    assert private == []


def test_every_module_is_small_or_says_why_not():
    long = []
    for name, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_LINES and "One module because" not in text[:3000]:
            long.append(f"{name}: {text.count(chr(10))} lines")
    assert long == []


# imaplib's and IMAPClient's private names: used in mailrules/imap/internals.py and nowhere else
_PRIVATE_IMAP = re.compile(r"\._imap\b|_new_tag|tagged_commands|_command_complete|_get_response|untagged_responses"
                           r"|_normalise_folder|(?<!self)\._command\(|response_parser")


def test_only_the_internals_module_reaches_into_imaplib_and_imapclient():
    reaches = []
    for name, path in _modules().items():
        if name == "mailrules.imap.internals" or name.startswith("mailrules.testing"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _PRIVATE_IMAP.search(line.split("#", 1)[0]):
                reaches.append(f"{path.relative_to(ROOT.parent)}:{number}: {line.strip()}")
    assert reaches == []

"""Guards on the code's shape: what must change together does, and the package stays acyclic.

- every criteria node type of `mailrules.model` is handled by the compiler
  (`criteria.compile_search`), the reads analysis (`criteria.reads_of`, which raises on an
  unknown node) and the local evaluator (`local_search.explain`): adding a node fails here
  until every place handles it;
- every registered action (built-in or plugin) has an executor;
- no import cycles among mailrules' modules, and no ``from .x import _private`` across them.
"""

from __future__ import annotations

import ast
import datetime as dt
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailrules import model
from mailrules.criteria import compile_search, reads_of
from mailrules.local_search import LocalMessage, NotEvaluableOffline, explain
from mailrules.plugins import Registry

PACKAGE = Path(__file__).resolve().parent.parent / "mailrules"
DAY = dt.date(2024, 6, 3)

# One instance of every criteria node type; a new type must be added here (the first guard).
SAMPLES: dict[type, object] = {
    model.Text: model.Text("subject", "x"),
    model.Header: model.Header("List-Id", "dev"),
    model.Size: model.Size("larger", 10),
    model.Age: model.Age("older", 86400),
    model.ArrivalDate: model.ArrivalDate("before", DAY),
    model.SentDate: model.SentDate("since", DAY),
    model.Flag: model.Flag("\\Seen"),
    model.Keyword: model.Keyword("$A"),
    model.All: model.All((model.Flag("\\Seen"),)),
    model.AnyOf: model.AnyOf((model.Flag("\\Seen"),)),
    model.Not: model.Not(model.Flag("\\Seen")),
    model.Raw: model.Raw("UNSEEN"),
}
MESSAGE = LocalMessage(b"Subject: x\r\nDate: Mon, 03 Jun 2024 10:00:00 +0000\r\n\r\nhello\r\n",
                       internaldate=dt.datetime(2024, 6, 3, tzinfo=dt.UTC))


@dataclass(frozen=True)
class Unknown:
    """A criteria node none of the three places knows."""


def test_every_criteria_node_type_has_a_sample_here():
    assert set(typing.get_args(model.Criterion)) == set(SAMPLES)


@pytest.mark.parametrize("node", SAMPLES.values(), ids=lambda n: type(n).__name__)
def test_every_criteria_node_is_compiled_analysed_and_evaluated_locally(node):
    assert compile_search(node).tokens
    reads_of(node)
    try:
        explain(node, MESSAGE)
    except NotEvaluableOffline:
        assert isinstance(node, model.Raw)  # only the server can evaluate raw keys


@pytest.mark.parametrize("where", [compile_search, reads_of, lambda n: explain(n, MESSAGE)],
                         ids=["compile_search", "reads_of", "local_search"])
def test_an_unknown_criteria_node_is_an_error_in_every_place_that_reads_criteria(where):
    with pytest.raises(TypeError):
        where(Unknown())


def test_every_registered_action_has_an_executor():
    registry = Registry.load(entry_points=True)
    missing = [name for name, action in registry.actions.items() if not action.has_executor()]
    assert missing == []


def _imports() -> tuple[dict[str, set[str]], list[str]]:
    """Module -> the package modules it imports (anywhere in it); and private names imported across."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        modules[".".join(rel.parts).removesuffix(".__init__")] = path
    edges: dict[str, set[str]] = {}
    private = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                dest = full if full in modules else target
                if dest in modules and dest != name:
                    edges.setdefault(name, set()).add(dest)
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        private.append(f"{name} imports {dest}.{alias.name}")
    return edges, private


def test_no_import_cycles_among_the_packages_modules():
    edges, _ = _imports()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            cur = todo.pop()
            for nxt in edges.get(cur, ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    # the package itself re-exports from its modules: it is the root, not part of a cycle
    cycles = sorted({" <-> ".join(sorted((a, b))) for a in edges for b in edges[a]
                     if "mailrules" not in (a, b) and reaches(b, a)})
    assert cycles == []


def test_no_private_name_is_imported_across_modules():
    assert _imports()[1] == []

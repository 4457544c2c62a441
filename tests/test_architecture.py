"""Guards on the code's shape: what must change together does (the import graph: test_layout.py).

- every criteria node type of `mailrules.model` is handled by the compiler
  (`criteria.compile_search`), the reads analysis (`criteria.reads_of`, which raises on an
  unknown node) and the local evaluator (`local_search.explain`): adding a node fails here
  until every place handles it;
- every registered action (built-in or plugin) has an executor.
"""

from __future__ import annotations

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

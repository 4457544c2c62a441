"""`mailrules import gmail`: a Gmail filters export (examples/switching/mailFilters.xml) as rules."""

from __future__ import annotations

from pathlib import Path

import yaml

from mailrules.importers.conditions import to_match
from mailrules.importers.gmail_query import parse_query
from tests.helpers import run_cli

EXPORT = Path(__file__).parent.parent / "examples" / "switching" / "mailFilters.xml"


def _rules(out: str) -> dict[str, dict]:
    return {r["name"].split(":")[0]: r for r in yaml.safe_load(out)["rules"]}


def test_label_and_archive_is_a_move_written_after_the_filters_that_do_not_archive():
    result = run_cli("import", "gmail", EXPORT)
    names = [r["name"].split(":")[0] for r in yaml.safe_load(result.out)["rules"]]
    assert names == ["gmail 2", "gmail 3", "gmail 1", "gmail 4"]
    assert _rules(result.out)["gmail 1"]["actions"] == [{"move": "Lists/dev"}]
    assert _rules(result.out)["gmail 1"]["match"] == {"header": {"List-Id": "dev.lists.example.org"}}


def test_read_star_label_and_trash_become_seen_flag_copy_and_trash():
    rules = _rules(run_cli("import", "gmail", EXPORT).out)
    assert rules["gmail 3"]["actions"] == ["seen", {"copy": "Receipts"}]
    assert rules["gmail 3"]["match"] == {"from": "billing@shop.example", "subject": "invoice",
                                         "not": {"text": "reminder"}}
    assert rules["gmail 2"]["actions"] == ["flag"]
    assert rules["gmail 4"]["actions"] == ["trash"]


def test_unmappable_properties_and_operators_are_listed_with_their_line_and_exit_1():
    result = run_cli("import", "gmail", EXPORT)
    assert result.code == 1
    assert "mailFilters.xml:21: not converted: filter 2: shouldAlwaysMarkAsImportant" in result.err
    assert "mailFilters.xml:52: not converted: filter 5: the Gmail search operator has:" in result.err


def test_the_output_passes_check(tmp_path):
    out = tmp_path / "rules.yaml"
    out.write_text(run_cli("import", "gmail", EXPORT).out)
    out.chmod(0o600)
    assert run_cli("-c", out, "check").code == 0


def test_gmail_search_or_braces_and_negation():
    assert to_match(parse_query("a OR b", default="from")) == {"any": [{"from": "a"}, {"from": "b"}]}
    assert to_match(parse_query("-subject:x", default="text")) == {"not": {"subject": "x"}}


def test_a_file_that_is_not_an_export_is_a_usage_error(tmp_path):
    bad = tmp_path / "x.xml"
    bad.write_text("<html/>")
    result = run_cli("import", "gmail", bad)
    assert result.code == 2 and "not a Gmail filters export" in result.err

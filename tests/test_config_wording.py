"""Error wording of the rules file: YAML syntax errors in plain words, "did you mean" for misspellings.

Every YAML case is checked with both parsers (libyaml and PyYAML's pure-Python one): the same
file gets the same words. No message repeats the file's text.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import mailrules.config.reading
from mailrules.config import ConfigError, load
from mailrules.plugins import Registry

HEADER = """\
version: 1
accounts:
  personal:
    host: imap.example.com
    username: me@example.com
    password_env: PERSONAL_PW
"""
HEADER_LINES = HEADER.count("\n")
PARSERS = {"libyaml": getattr(yaml, "CSafeLoader", yaml.SafeLoader), "pure": yaml.SafeLoader}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load(entry_points=False)


@pytest.fixture(params=list(PARSERS))
def parser(request, monkeypatch) -> str:
    monkeypatch.setattr(mailrules.config.reading, "_LOADER", PARSERS[request.param])
    return request.param


def error_of(tmp_path: Path, text: str, registry: Registry) -> ConfigError:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(path, registry=registry)
    return info.value


def rules(text: str) -> str:
    return HEADER + "rules:\n" + text


# --------------------------------------------------------------------------- YAML syntax, plain words


def test_a_tab_used_for_indentation_is_named_as_a_tab(tmp_path, registry, parser):
    err = error_of(tmp_path, rules("  - name: r\n    actions:\n\t  - flag\n"), registry)
    assert err.location.line == HEADER_LINES + 4
    assert err.message == "invalid YAML: a tab character: YAML indents with spaces only (replace the tab with spaces)"


def test_a_line_out_of_line_with_its_list_says_where_the_list_starts(tmp_path, registry, parser):
    """The issue's `expected <block end>, but found '?'`."""
    err = error_of(tmp_path, rules("  - name: r\n    actions: [flag]\n  stray: value\n"), registry)
    assert (err.location.line, err.location.column) == (HEADER_LINES + 4, 3)
    assert err.message.startswith(
        f"invalid YAML: this line does not line up with the list that starts at line {HEADER_LINES + 2}, "
        "column 3: its items start with '- ' at column 3"
    )
    assert "<block end>" not in err.message


def test_a_key_indented_unlike_its_neighbours_says_where_the_mapping_starts(tmp_path, registry, parser):
    err = error_of(tmp_path, "version: 1\naccounts:\n  a:\n    host: x\n   username: y\n", registry)
    assert (err.location.line, err.location.column) == (5, 4)
    assert err.message.startswith(
        "invalid YAML: this line does not line up with the mapping that starts at line 3, column 3"
    )


def test_a_colon_inside_a_plain_value_suggests_quotes(tmp_path, registry, parser):
    err = error_of(tmp_path, rules("  - name: Re: hello\n    actions: [flag]\n"), registry)
    assert "if a value contains ': ', write it in quotes" in err.message


def test_an_unclosed_quote_names_the_line_where_it_opened(tmp_path, registry, parser):
    err = error_of(tmp_path, rules("  - name: 'r\n    actions: [flag]\n"), registry)
    assert err.message == (
        f"invalid YAML: the quoted string that starts at line {HEADER_LINES + 2}, column 11 is never closed: "
        "its closing quote is missing"
    )


def test_an_unclosed_bracket_names_the_line_where_it_opened(tmp_path, registry, parser):
    err = error_of(tmp_path, rules("  - name: r\n    actions: [flag\n"), registry)
    assert err.message.startswith(
        f"invalid YAML: the list in brackets that starts at line {HEADER_LINES + 3}, column 14 is not closed "
        "with ']'"
    )


def test_an_unknown_escape_in_double_quotes_suggests_single_quotes(tmp_path, registry, parser):
    text = rules('  - name: r\n    where:\n      - regex: {body: "build #\\d+"}\n    actions: [flag]\n')
    err = error_of(tmp_path, text, registry)
    assert err.location.line == HEADER_LINES + 4
    assert "write the value in single quotes" in err.message


@pytest.mark.parametrize("char", ["@", "`"])
def test_a_value_starting_with_a_reserved_character_suggests_quotes(tmp_path, registry, parser, char):
    err = error_of(tmp_path, rules(f"  - name: {char}r\n    actions: [flag]\n"), registry)
    assert err.message == (
        f"invalid YAML: a value cannot start with {char!r} (reserved in YAML): write the value in quotes"
    )


def test_a_line_without_a_colon_names_that_line(tmp_path, registry, parser):
    err = error_of(tmp_path, rules("  - name: r\n    actions:\n    flag\n    - move: a\n"), registry)
    assert f"line {HEADER_LINES + 4} is neither 'key: value' nor a list item" in err.message


def test_a_syntax_error_never_repeats_the_file_text(tmp_path, registry, parser):
    err = error_of(tmp_path, rules("  - name: hunter2-secret\n    actions: [flag]\n  hunter2: x\n"), registry)
    assert "hunter2" not in str(err)


# --------------------------------------------------------------------------- did you mean


def test_a_misspelt_top_level_key_gets_a_suggestion(tmp_path, registry):
    err = error_of(tmp_path, HEADER + "rulez: []\n", registry)
    assert err.message.endswith("; did you mean 'rules'?")


def test_a_misspelt_account_key_gets_a_suggestion(tmp_path, registry):
    err = error_of(tmp_path, HEADER.replace("username:", "usrname:"), registry)
    assert err.message.endswith("; did you mean 'username'?")


def test_a_misspelt_rule_key_gets_a_suggestion(tmp_path, registry):
    err = error_of(tmp_path, rules("  - name: r\n    mach: {from: a}\n    actions: [flag]\n"), registry)
    assert err.message.endswith("unknown key 'mach' (expected one of: name, account, mailbox, match, where, "
                                "actions, stop, enabled, schedule); did you mean 'match'?")


def test_a_misspelt_criteria_key_gets_a_suggestion(tmp_path, registry):
    err = error_of(tmp_path, rules("  - name: r\n    match: {form: a@example.com}\n    actions: [flag]\n"),
                   registry)
    assert err.message.startswith("rule 'r': match: unknown key 'form'")
    assert err.message.endswith("; did you mean 'from'?")


def test_a_misspelt_action_gets_a_suggestion(tmp_path, registry):
    err = error_of(tmp_path, rules("  - name: r\n    actions: [flagg]\n"), registry)
    assert err.message.startswith("rule 'r': actions: unknown action 'flagg' (known actions: ")
    assert err.message.endswith("; did you mean 'flag'?")


def test_a_misspelt_predicate_gets_a_suggestion(tmp_path, registry):
    err = error_of(tmp_path, rules("  - name: r\n    where: [{regx: {subject: a}}]\n    actions: [flag]\n"),
                   registry)
    assert err.message.endswith("unknown predicate 'regx' (known predicates: regex); did you mean 'regex'?")


def test_a_misspelt_account_name_in_a_rule_gets_a_suggestion(tmp_path, registry):
    err = error_of(tmp_path, rules("  - name: r\n    account: persnal\n    actions: [flag]\n"), registry)
    assert err.message.endswith("; did you mean 'personal'?")


def test_a_misspelt_time_zone_gets_a_suggestion(tmp_path, registry):
    err = error_of(tmp_path, HEADER + "timezone: Europe/Pariss\n", registry)
    assert err.message.endswith("; did you mean 'Europe/Paris'?")


def test_a_key_far_from_every_known_one_gets_no_suggestion(tmp_path, registry):
    err = error_of(tmp_path, rules("  - name: r\n    zzzzzz: 1\n    actions: [flag]\n"), registry)
    assert "did you mean" not in err.message

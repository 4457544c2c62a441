"""Loading and validating rules files: `mailrules.config.load`.

Pure unit tests: files are written to tmp_path, nothing talks IMAP.
"""

from __future__ import annotations

import datetime as dt
import os
import textwrap
import warnings
from pathlib import Path

import pytest

from mailrules.config import (
    ConfigError,
    ConfigWarning,
    default_config_path,
    load,
    parse_duration,
    parse_size,
)
from mailrules.model import (
    MATCH_EVERYTHING,
    Age,
    All,
    AnyOf,
    ArrivalDate,
    Flag,
    FolderRef,
    Header,
    Keyword,
    Location,
    Not,
    Raw,
    Schedule,
    SentDate,
    Size,
    Text,
)
from mailrules.plugins import Action, Predicate, Registry

REPO = Path(__file__).resolve().parents[1]

HEADER = """\
version: 1
accounts:
  personal:
    host: imap.example.com
    username: me@example.com
    password_env: PERSONAL_PW
  work:
    host: mail.corp.example
    username: jdoe
    password_command: [pass, show, work]
"""
HEADER_LINES = HEADER.count("\n")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load(entry_points=False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def with_rules(tmp_path: Path, rules: str, *, name: str = "rules.yaml") -> Path:
    """HEADER (two accounts) followed by `rules:` and the given (dedented) rule list."""
    body = textwrap.indent(textwrap.dedent(rules), "  ")
    return write(tmp_path / name, HEADER + "rules:\n" + body)


def error_of(path: Path, registry: Registry) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(path, registry=registry)
    return info.value


def match_of(tmp_path: Path, registry: Registry, match: str):
    """The criteria tree of a one-rule file whose match: is the given flow mapping."""
    path = with_rules(tmp_path, f"- name: r\n  match: {match}\n  actions: [flag]\n")
    return load(path, registry=registry).rules[0].match


def match_error(tmp_path: Path, registry: Registry, match: str) -> ConfigError:
    path = with_rules(tmp_path, f"- name: r\n  match: {match}\n  actions: [flag]\n")
    return error_of(path, registry)


def account_file(tmp_path: Path, account: str, *, mode: int = 0o600) -> Path:
    """A file with one account 'a' (the given, dedented settings) and one rule."""
    body = textwrap.indent(textwrap.dedent(account), "    ")
    path = write(tmp_path / "rules.yaml", "version: 1\naccounts:\n  a:\n" + body + "rules: []\n")
    path.chmod(mode)
    return path


# --------------------------------------------------------------------------- the example


def test_example_file_loads_without_errors_or_warnings(registry):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = load(REPO / "rules.example.yaml", registry=registry)
    assert config.warnings == ()
    assert set(config.accounts) >= {"personal", "work"}
    assert config.timezone == "Europe/Paris"
    assert str(REPO / "examples" / "team-triage.yaml") in config.files


def test_example_file_rules_from_the_included_file_come_first(registry):
    config = load(REPO / "rules.example.yaml", registry=registry)
    assert config.rules[0].location.file.endswith("team-triage.yaml")
    assert config.rules[-1].location.file.endswith("rules.example.yaml")


def test_example_file_uses_every_builtin_action(registry):
    config = load(REPO / "rules.example.yaml", registry=registry)
    used = {call.name for rule in config.rules for call in rule.actions}
    assert used >= set(registry.actions)


def test_example_file_uses_every_criteria_key(registry):
    config = load(REPO / "rules.example.yaml", registry=registry)
    seen: set[str] = set()

    def walk(node):
        if isinstance(node, All | AnyOf):
            seen.add("any" if isinstance(node, AnyOf) else "all")
            for child in node.children:
                walk(child)
        elif isinstance(node, Not):
            seen.add("not")
            walk(node.child)
        elif isinstance(node, Text):
            seen.add(node.field)
        elif isinstance(node, Header):
            seen.add("header")
        elif isinstance(node, Size):
            seen.add(node.op)
        elif isinstance(node, Age):
            seen.add(f"{node.op}_than")
        elif isinstance(node, ArrivalDate):
            seen.add(node.op)
        elif isinstance(node, SentDate):
            seen.add(f"sent_{node.op}")
        elif isinstance(node, Flag):
            seen.add(node.flag.lstrip("\\").lower())
        elif isinstance(node, Keyword):
            seen.add("keyword")
        elif isinstance(node, Raw):
            seen.add("raw")

    for rule in config.rules:
        walk(rule.match)
    from mailrules.config import CRITERIA_KEYS

    assert seen >= set(CRITERIA_KEYS)


def test_example_file_shows_both_schedule_forms_and_a_disabled_rule(registry):
    config = load(REPO / "rules.example.yaml", registry=registry)
    schedules = [rule.schedule for rule in config.rules if rule.schedule]
    assert any(s.cron for s in schedules) and any(s.every_seconds for s in schedules)
    assert any(not rule.enabled for rule in config.rules)


def test_example_file_uses_no_inline_password():
    text = (REPO / "rules.example.yaml").read_text()
    active = [line for line in text.splitlines() if line.strip().startswith("password:")]
    assert active == []


# --------------------------------------------------------------------------- the file itself


def test_missing_file_is_an_error_naming_the_file(tmp_path, registry):
    err = error_of(tmp_path / "nope.yaml", registry)
    assert "nope.yaml" in str(err) and "cannot read" in str(err)


def test_empty_file_is_a_clear_error(tmp_path, registry):
    err = error_of(write(tmp_path / "rules.yaml", "# only a comment\n"), registry)
    assert "empty" in err.message and "version: 1" in err.message


def test_malformed_yaml_is_an_error_with_the_parser_position(tmp_path, registry):
    path = write(tmp_path / "rules.yaml", "version: 1\naccounts:\n  a: [1, 2\nrules: []\n")
    err = error_of(path, registry)
    assert err.location.file == str(path)
    assert err.location.line >= 3
    assert "invalid YAML" in err.message


def test_bad_indentation_is_an_error_naming_line_and_column(tmp_path, registry):
    path = write(tmp_path / "rules.yaml", "version: 1\naccounts:\n  a:\n    host: x\n   username: y\n")
    err = error_of(path, registry)
    assert (err.location.line, err.location.column) == (5, 4)
    assert str(err).startswith(f"{path}:5:4: invalid YAML")


def test_not_utf8_is_an_error_with_a_position(tmp_path, registry):
    path = tmp_path / "rules.yaml"
    path.write_bytes(b"version: 1\n# caf\xe9\n")
    err = error_of(path, registry)
    assert err.location.line == 2 and "UTF-8" in err.message


def test_duplicate_top_level_key_is_an_error(tmp_path, registry):
    path = write(tmp_path / "rules.yaml", HEADER + "rules: []\nrules: []\n")
    err = error_of(path, registry)
    assert err.location.line == HEADER_LINES + 2
    assert "duplicate key 'rules'" in err.message and f"line {HEADER_LINES + 1}" in err.message


def test_duplicate_key_in_a_rule_is_an_error(tmp_path, registry):
    path = with_rules(tmp_path, "- name: r\n  actions: [flag]\n  actions: [seen]\n")
    err = error_of(path, registry)
    assert err.location.line == HEADER_LINES + 4 and "duplicate key 'actions'" in err.message


def test_duplicate_key_inside_predicate_arguments_is_an_error(tmp_path, registry):
    path = with_rules(tmp_path, "- name: r\n  where:\n    - regex: {body: a, body: b}\n  actions: [flag]\n")
    assert "duplicate key 'body'" in error_of(path, registry).message


def test_top_level_must_be_a_mapping(tmp_path, registry):
    err = error_of(write(tmp_path / "rules.yaml", "- a\n- b\n"), registry)
    assert "expected a mapping" in err.message and "found a list" in err.message


def test_python_tags_are_refused(tmp_path, registry):
    path = write(tmp_path / "rules.yaml", "version: !!python/object:os.system echo\n")
    err = error_of(path, registry)
    assert err.location.line == 1


def test_missing_version_is_an_error(tmp_path, registry):
    path = write(tmp_path / "rules.yaml", HEADER.replace("version: 1\n", "") + "rules: []\n")
    assert "missing key 'version'" in error_of(path, registry).message


@pytest.mark.parametrize("value", ["2", '"1"', "true", "1.0"])
def test_version_other_than_1_is_an_error(tmp_path, registry, value):
    path = write(tmp_path / "rules.yaml", HEADER.replace("version: 1", f"version: {value}") + "rules: []\n")
    err = error_of(path, registry)
    assert (err.location.line, err.location.column) == (1, 10)
    assert "version: expected 1" in err.message


def test_unknown_top_level_key_is_an_error_listing_the_known_ones(tmp_path, registry):
    path = write(tmp_path / "rules.yaml", HEADER + "rule: []\n")
    err = error_of(path, registry)
    assert (err.location.line, err.location.column) == (HEADER_LINES + 1, 1)
    assert err.message == (
        "unknown key 'rule' (expected one of: version, accounts, include, timezone, history_days, rules, tests); "
        "did you mean 'rules'?"
    )


def test_missing_accounts_is_an_error(tmp_path, registry):
    path = write(tmp_path / "rules.yaml", "version: 1\nrules: []\n")
    assert "missing key 'accounts'" in error_of(path, registry).message


def test_file_without_rules_loads(tmp_path, registry):
    config = load(write(tmp_path / "rules.yaml", HEADER), registry=registry)
    assert config.rules == ()


def test_config_records_its_path_and_files(tmp_path, registry):
    path = write(tmp_path / "rules.yaml", HEADER + "rules: []\n")
    config = load(path, registry=registry)
    assert config.path == str(path)
    assert config.files == (str(path.resolve()),)


# --------------------------------------------------------------------------- timezone


def test_timezone_accepts_an_iana_name(tmp_path, registry):
    config = load(write(tmp_path / "rules.yaml", HEADER + "timezone: America/New_York\n"), registry=registry)
    assert config.timezone == "America/New_York"


def test_timezone_defaults_to_none(tmp_path, registry):
    assert load(write(tmp_path / "rules.yaml", HEADER), registry=registry).timezone is None


@pytest.mark.parametrize("name", ["Mars/Olympus", "CEST+2", "../etc/passwd"])
def test_unknown_timezone_is_an_error(tmp_path, registry, name):
    err = error_of(write(tmp_path / "rules.yaml", HEADER + f"timezone: {name}\n"), registry)
    assert "unknown time zone" in err.message and err.location.line == HEADER_LINES + 1


# --------------------------------------------------------------------------- accounts


def test_account_defaults(tmp_path, registry):
    config = load(
        account_file(tmp_path, "host: h.example\nusername: u\npassword_env: PW\n"), registry=registry
    )
    account = config.accounts["a"]
    assert (account.port, account.tls, account.watch, account.timeout) == (993, "implicit", ("INBOX",), 60.0)
    assert account.insecure is False and account.ca_file is None
    assert account.location.line == 4


@pytest.mark.parametrize("tls", ["starttls", "none"])
def test_port_defaults_to_143_without_implicit_tls(tmp_path, registry, tls):
    path = account_file(tmp_path, f"host: localhost\ntls: {tls}\nusername: u\npassword_env: PW\n")
    assert load(path, registry=registry).accounts["a"].port == 143


def test_explicit_port_is_kept(tmp_path, registry):
    path = account_file(tmp_path, "host: h.example\nport: 10993\nusername: u\npassword_env: PW\n")
    assert load(path, registry=registry).accounts["a"].port == 10993


@pytest.mark.parametrize("port", ["0", "70000", '"993"', "true"])
def test_bad_port_is_an_error(tmp_path, registry, port):
    path = account_file(tmp_path, f"host: h.example\nport: {port}\nusername: u\npassword_env: PW\n")
    err = error_of(path, registry)
    assert "port: expected a port number" in err.message and err.location.line == 5


def test_unknown_tls_mode_is_an_error(tmp_path, registry):
    path = account_file(tmp_path, "host: h.example\ntls: ssl\nusername: u\npassword_env: PW\n")
    assert "expected one of implicit, starttls, none" in error_of(path, registry).message


def test_tls_none_to_a_remote_host_is_refused(tmp_path, registry):
    path = account_file(tmp_path, "host: imap.example.com\ntls: none\nusername: u\npassword_env: PW\n")
    err = error_of(path, registry)
    assert err.location.line == 5
    assert "account 'a': tls: none" in err.message and "insecure: true" in err.message


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.8.9.10", "::1", "LOCALHOST"])
def test_tls_none_to_a_loopback_host_is_allowed(tmp_path, registry, host):
    path = account_file(tmp_path, f"host: '{host}'\ntls: none\nusername: u\npassword_env: PW\n")
    assert load(path, registry=registry).accounts["a"].tls == "none"


def test_tls_none_to_a_remote_host_is_allowed_with_insecure(tmp_path, registry):
    path = account_file(
        tmp_path, "host: 10.0.0.5\ntls: none\ninsecure: true\nusername: u\npassword_env: PW\n"
    )
    account = load(path, registry=registry).accounts["a"]
    assert (account.tls, account.insecure) == ("none", True)


def test_host_with_a_scheme_is_an_error(tmp_path, registry):
    path = account_file(tmp_path, "host: imaps://imap.example.com\nusername: u\npassword_env: PW\n")
    assert "bare host name" in error_of(path, registry).message


def test_missing_host_is_an_error_at_the_account(tmp_path, registry):
    err = error_of(account_file(tmp_path, "username: u\npassword_env: PW\n"), registry)
    assert err.message == "account 'a': missing key 'host'" and err.location.line == 4


def test_unknown_account_key_is_an_error_naming_line_and_column(tmp_path, registry):
    path = account_file(tmp_path, "host: h.example\nusername: u\npasword_env: PW\n")
    err = error_of(path, registry)
    assert (err.location.line, err.location.column) == (6, 5)
    assert err.message.startswith("account 'a': unknown key 'pasword_env' (expected one of: host, port, tls,")


def test_account_name_with_a_colon_is_an_error(tmp_path, registry):
    path = write(
        tmp_path / "rules.yaml", "version: 1\naccounts:\n  'a:b': {host: h, username: u, password_env: P}\n"
    )
    err = error_of(path, registry)
    assert "without ':'" in err.message and err.location.line == 3


def test_empty_accounts_is_an_error(tmp_path, registry):
    err = error_of(write(tmp_path / "rules.yaml", "version: 1\naccounts: {}\n"), registry)
    assert "found an empty mapping" in err.message


def test_watch_accepts_a_single_name(tmp_path, registry):
    path = account_file(tmp_path, "host: h.example\nusername: u\npassword_env: PW\nwatch: Lists/dev\n")
    assert load(path, registry=registry).accounts["a"].watch == ("Lists/dev",)


def test_watch_accepts_a_list_and_normalizes_inbox(tmp_path, registry):
    path = account_file(
        tmp_path, "host: h.example\nusername: u\npassword_env: PW\nwatch: [inbox, Lists/dév]\n"
    )
    assert load(path, registry=registry).accounts["a"].watch == ("INBOX", "Lists/dév")


def test_empty_watch_list_is_an_error(tmp_path, registry):
    path = account_file(tmp_path, "host: h.example\nusername: u\npassword_env: PW\nwatch: []\n")
    assert "found an empty list" in error_of(path, registry).message


@pytest.mark.parametrize(("text", "seconds"), [("30", 30.0), ("2.5", 2.5), ("2m", 120.0)])
def test_timeout_accepts_seconds_or_a_duration(tmp_path, registry, text, seconds):
    path = account_file(tmp_path, f"host: h.example\nusername: u\npassword_env: PW\ntimeout: {text}\n")
    assert load(path, registry=registry).accounts["a"].timeout == seconds


@pytest.mark.parametrize("text", ["0", "-1", "soon", "true"])
def test_bad_timeout_is_an_error(tmp_path, registry, text):
    path = account_file(tmp_path, f"host: h.example\nusername: u\npassword_env: PW\ntimeout: {text}\n")
    assert "timeout: expected a number of seconds" in error_of(path, registry).message


def test_ca_file_is_resolved_relative_to_the_rules_file(tmp_path, registry):
    (tmp_path / "ca.pem").write_text("x")
    path = account_file(tmp_path, "host: h.example\nusername: u\npassword_env: PW\nca_file: ca.pem\n")
    assert load(path, registry=registry).accounts["a"].ca_file == str(tmp_path / "ca.pem")


def test_missing_ca_file_is_an_error(tmp_path, registry):
    path = account_file(tmp_path, "host: h.example\nusername: u\npassword_env: PW\nca_file: nope.pem\n")
    assert "ca_file: no such file" in error_of(path, registry).message


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    ("setting", "kind", "value"),
    [
        ("password_command: pass show mail", "password_command", "pass show mail"),
        ("password_command: [pass, show, mail]", "password_command", ["pass", "show", "mail"]),
        ("password_env: MAIL_PW", "password_env", "MAIL_PW"),
        ("keyring: true", "keyring", True),
        ("oauth2: {token_command: get-token me}", "oauth2", {"token_command": "get-token me"}),
        ("oauth2: {token_command: [get-token, me]}", "oauth2", {"token_command": ["get-token", "me"]}),
    ],
)
def test_each_kind_of_secret_is_accepted(tmp_path, registry, setting, kind, value):
    path = account_file(tmp_path, f"host: h.example\nusername: u\n{setting}\n")
    auth = load(path, registry=registry).accounts["a"].auth
    assert (auth.kind, auth.value) == (kind, value)


def test_no_secret_is_an_error_listing_the_choices(tmp_path, registry):
    err = error_of(account_file(tmp_path, "host: h.example\nusername: u\n"), registry)
    assert "exactly one of password_command, password_env, keyring" in err.message
    assert err.location.line == 4


def test_two_secrets_are_an_error_naming_both(tmp_path, registry):
    path = account_file(tmp_path, "host: h.example\nusername: u\npassword_env: PW\nkeyring: true\n")
    err = error_of(path, registry)
    assert "both password_env and keyring" in err.message
    assert err.location.line == 7


def test_keyring_false_is_an_error(tmp_path, registry):
    err = error_of(account_file(tmp_path, "host: h.example\nusername: u\nkeyring: false\n"), registry)
    assert "keyring: false" in err.message


def test_oauth2_without_token_command_is_an_error(tmp_path, registry):
    err = error_of(account_file(tmp_path, "host: h.example\nusername: u\noauth2: {command: x}\n"), registry)
    assert "oauth2: unknown key 'command' (expected one of: token_command)" in err.message


def test_empty_password_command_list_is_an_error(tmp_path, registry):
    err = error_of(account_file(tmp_path, "host: h.example\nusername: u\npassword_command: []\n"), registry)
    assert "password_command: expected a command" in err.message


def test_inline_password_is_allowed_with_a_warning(tmp_path, registry):
    path = account_file(tmp_path, "host: h.example\nusername: u\npassword: hunter2\n", mode=0o600)
    with pytest.warns(ConfigWarning, match="password is written in the rules file"):
        config = load(path, registry=registry)
    assert config.accounts["a"].auth.value == "hunter2"
    assert "hunter2" not in repr(config.accounts["a"])
    assert len(config.warnings) == 1


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_inline_password_in_a_file_readable_by_others_warns_again(tmp_path, registry):
    path = account_file(tmp_path, "host: h.example\nusername: u\npassword: hunter2\n", mode=0o644)
    with pytest.warns(ConfigWarning) as record:
        config = load(path, registry=registry)
    assert any("readable by group or others" in str(w.message) for w in record)
    assert len(config.warnings) == 2


def test_secret_from_a_command_or_env_gives_no_warning(tmp_path, registry):
    path = account_file(tmp_path, "host: h.example\nusername: u\npassword_env: PW\n", mode=0o644)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(path, registry=registry)


# --------------------------------------------------------------------------- include


def test_included_rules_come_first_in_listed_order(tmp_path, registry):
    write(tmp_path / "a.yaml", "rules:\n  - {name: a1, actions: [flag]}\n")
    write(tmp_path / "b.yaml", "rules:\n  - {name: b1, actions: [flag]}\n  - {name: b2, actions: [flag]}\n")
    path = write(
        tmp_path / "rules.yaml",
        HEADER + "include: [b.yaml, a.yaml]\nrules:\n  - {name: own, actions: [flag]}\n",
    )
    config = load(path, registry=registry)
    assert [r.name for r in config.rules] == ["b1", "b2", "a1", "own"]


def test_included_paths_are_relative_to_the_including_file(tmp_path, registry):
    write(
        tmp_path / "team" / "triage.yaml",
        "include: [more/extra.yaml]\nrules:\n  - {name: t, actions: [flag]}\n",
    )
    write(tmp_path / "team" / "more" / "extra.yaml", "rules:\n  - {name: x, actions: [seen]}\n")
    path = write(tmp_path / "rules.yaml", HEADER + "include: [team/triage.yaml]\n")
    config = load(path, registry=registry)
    assert [r.name for r in config.rules] == ["x", "t"]
    assert config.files == (
        str(path.resolve()),
        str((tmp_path / "team" / "triage.yaml").resolve()),
        str((tmp_path / "team" / "more" / "extra.yaml").resolve()),
    )


def test_included_rule_locations_are_in_the_included_file(tmp_path, registry):
    write(tmp_path / "team" / "triage.yaml", "# team rules\nrules:\n  - name: t\n    actions: [flag]\n")
    config = load(write(tmp_path / "rules.yaml", HEADER + "include: [team/triage.yaml]\n"), registry=registry)
    rule = config.rules[0]
    assert rule.location == Location(str(tmp_path / "team" / "triage.yaml"), 3, 5)
    assert rule.actions[0].location.file == str(tmp_path / "team" / "triage.yaml")


def test_errors_in_an_included_file_name_that_file(tmp_path, registry):
    write(tmp_path / "team.yaml", "rules:\n  - name: t\n    actions: [fly]\n")
    err = error_of(write(tmp_path / "rules.yaml", HEADER + "include: [team.yaml]\n"), registry)
    assert err.location == Location(str(tmp_path / "team.yaml"), 3, 15)


def test_include_cycle_is_an_error_naming_the_chain(tmp_path, registry):
    write(tmp_path / "a.yaml", "include: [b.yaml]\n")
    write(tmp_path / "b.yaml", "include: [a.yaml]\n")
    path = write(tmp_path / "rules.yaml", HEADER + "include: [a.yaml]\n")
    err = error_of(path, registry)
    assert err.location.file == str(tmp_path / "b.yaml")
    assert f"cycle {tmp_path / 'a.yaml'} -> {tmp_path / 'b.yaml'} -> {tmp_path / 'a.yaml'}" in err.message


def test_including_the_main_file_is_a_cycle(tmp_path, registry):
    path = write(tmp_path / "rules.yaml", HEADER + "include: [rules.yaml]\n")
    assert "cycle" in error_of(path, registry).message


def test_missing_included_file_is_an_error_at_the_include_line(tmp_path, registry):
    path = write(tmp_path / "rules.yaml", HEADER + "include:\n  - team/nope.yaml\n")
    err = error_of(path, registry)
    assert err.location == Location(str(path), HEADER_LINES + 2, 5)
    assert "cannot read 'team/nope.yaml'" in err.message


def test_accounts_in_an_included_file_are_an_error(tmp_path, registry):
    write(tmp_path / "team.yaml", "accounts:\n  x: {host: h, username: u, password_env: P}\nrules: []\n")
    err = error_of(write(tmp_path / "rules.yaml", HEADER + "include: [team.yaml]\n"), registry)
    assert err.location == Location(str(tmp_path / "team.yaml"), 1, 1)
    assert "'accounts:' is not allowed in an included file" in err.message


def test_version_in_an_included_file_is_an_error(tmp_path, registry):
    write(tmp_path / "team.yaml", "version: 1\nrules: []\n")
    err = error_of(write(tmp_path / "rules.yaml", HEADER + "include: [team.yaml]\n"), registry)
    assert "'version:' is not allowed in an included file" in err.message


def test_unknown_key_in_an_included_file_is_an_error(tmp_path, registry):
    write(tmp_path / "team.yaml", "rulez: []\n")
    err = error_of(write(tmp_path / "rules.yaml", HEADER + "include: [team.yaml]\n"), registry)
    assert err.message == "unknown key 'rulez' (expected one of: include, rules, tests); did you mean 'rules'?"


def test_empty_included_file_is_an_error(tmp_path, registry):
    write(tmp_path / "team.yaml", "")
    err = error_of(write(tmp_path / "rules.yaml", HEADER + "include: [team.yaml]\n"), registry)
    assert "empty" in err.message and err.location.file == str(tmp_path / "team.yaml")


def test_including_a_file_twice_is_an_error(tmp_path, registry):
    write(tmp_path / "team.yaml", "rules: []\n")
    err = error_of(write(tmp_path / "rules.yaml", HEADER + "include: [team.yaml, ./team.yaml]\n"), registry)
    assert "already included" in err.message


# --------------------------------------------------------------------------- rules


def test_minimal_rule_has_the_documented_defaults(tmp_path, registry):
    rule = load(with_rules(tmp_path, "- name: r\n  actions: [flag]\n"), registry=registry).rules[0]
    assert rule.match == MATCH_EVERYTHING and rule.where == ()
    assert (rule.account, rule.mailboxes, rule.stop, rule.enabled, rule.schedule) == (
        None,
        None,
        False,
        True,
        None,
    )
    assert rule.location == Location(str(tmp_path / "rules.yaml"), HEADER_LINES + 2, 5)


def test_unknown_rule_key_is_an_error_naming_line_and_column(tmp_path, registry):
    path = with_rules(tmp_path, "- name: dev list\n  mach: {from: a}\n  actions: [flag]\n")
    err = error_of(path, registry)
    assert str(err) == (
        f"{path}:{HEADER_LINES + 3}:5: rule 'dev list': unknown key 'mach' "
        "(expected one of: name, account, mailbox, match, where, actions, stop, enabled, schedule); "
        "did you mean 'match'?"
    )


def test_rule_without_a_name_is_an_error(tmp_path, registry):
    err = error_of(with_rules(tmp_path, "- actions: [flag]\n"), registry)
    assert "rule #1: missing key 'name'" in err.message


def test_rule_without_actions_is_an_error(tmp_path, registry):
    err = error_of(with_rules(tmp_path, "- name: r\n  match: {from: a}\n"), registry)
    assert err.message == "rule 'r': missing key 'actions'"


def test_empty_action_list_is_an_error(tmp_path, registry):
    err = error_of(with_rules(tmp_path, "- name: r\n  actions: []\n"), registry)
    assert "actions: expected a non-empty list of actions" in err.message


def test_duplicate_rule_names_are_an_error_naming_both_locations(tmp_path, registry):
    path = with_rules(tmp_path, "- {name: same, actions: [flag]}\n- {name: same, actions: [seen]}\n")
    err = error_of(path, registry)
    assert err.location.line == HEADER_LINES + 3
    assert f"first defined at {path}:{HEADER_LINES + 2}:5" in err.message


def test_duplicate_rule_names_across_files_are_an_error(tmp_path, registry):
    write(tmp_path / "team.yaml", "rules:\n  - {name: same, actions: [flag]}\n")
    path = write(
        tmp_path / "rules.yaml", HEADER + "include: [team.yaml]\nrules:\n  - {name: same, actions: [seen]}\n"
    )
    err = error_of(path, registry)
    assert err.location.file == str(path)
    assert f"first defined at {tmp_path / 'team.yaml'}:2:5" in err.message


def test_rule_account_must_be_configured(tmp_path, registry):
    err = error_of(with_rules(tmp_path, "- name: r\n  account: home\n  actions: [flag]\n"), registry)
    assert "unknown account 'home' (configured: personal, work)" in err.message


def test_rule_account_and_mailbox_are_kept(tmp_path, registry):
    path = with_rules(tmp_path, "- name: r\n  account: work\n  mailbox: inbox\n  actions: [flag]\n")
    rule = load(path, registry=registry).rules[0]
    assert (rule.account, rule.mailboxes) == ("work", ("INBOX",))


def test_rule_mailbox_accepts_a_list(tmp_path, registry):
    path = with_rules(
        tmp_path, "- name: r\n  mailbox: [INBOX, Archiv/Größe]\n  schedule: '@daily'\n  actions: [flag]\n"
    )
    assert load(path, registry=registry).rules[0].mailboxes == ("INBOX", "Archiv/Größe")


def test_arrival_rule_on_an_unwatched_mailbox_warns(tmp_path, registry):
    path = with_rules(tmp_path, "- name: r\n  mailbox: Archive\n  actions: [flag]\n")
    with pytest.warns(ConfigWarning, match="not in any 'watch:' list"):
        load(path, registry=registry)


def test_enabled_false_keeps_the_rule(tmp_path, registry):
    rule = load(
        with_rules(tmp_path, "- name: r\n  enabled: false\n  actions: [flag]\n"), registry=registry
    ).rules[0]
    assert rule.enabled is False


@pytest.mark.parametrize("value", ['"false"', "0", "maybe"])
def test_enabled_must_be_a_boolean(tmp_path, registry, value):
    err = error_of(with_rules(tmp_path, f"- name: r\n  enabled: {value}\n  actions: [flag]\n"), registry)
    assert "enabled: expected true or false" in err.message


def test_non_ascii_rule_name_and_values_are_kept(tmp_path, registry):
    path = with_rules(
        tmp_path,
        "- name: Rechnungen für Größe\n  match: {subject: 注文}\n  actions: [{move: Archiv/Größe}]\n",
    )
    rule = load(path, registry=registry).rules[0]
    assert rule.name == "Rechnungen für Größe"
    assert rule.match == Text("subject", "注文")
    assert rule.actions[0].arg == FolderRef("Archiv/Größe")


# --------------------------------------------------------------------------- match


@pytest.mark.parametrize("key", ["from", "to", "cc", "bcc", "subject", "body", "text"])
def test_text_keys_become_text_criteria(tmp_path, registry, key):
    assert match_of(tmp_path, registry, f"{{{key}: alice}}") == Text(key, "alice")


def test_text_value_must_be_a_string(tmp_path, registry):
    err = match_error(tmp_path, registry, "{subject: 2024}")
    assert "subject: expected a non-empty string, found the number 2024" in err.message
    assert "write it in quotes" in err.message


def test_text_value_list_suggests_any(tmp_path, registry):
    assert "use 'any:'" in match_error(tmp_path, registry, "{from: [a, b]}").message


def test_header_becomes_a_header_criterion(tmp_path, registry):
    assert match_of(tmp_path, registry, "{header: {List-Id: dev.example.org}}") == Header(
        "List-Id", "dev.example.org"
    )


def test_header_empty_value_means_exists(tmp_path, registry):
    assert match_of(tmp_path, registry, '{header: {X-Spam: ""}}') == Header("X-Spam", "")


def test_header_with_several_entries_is_anded(tmp_path, registry):
    assert match_of(tmp_path, registry, "{header: {A: x, B: y}}") == All((Header("A", "x"), Header("B", "y")))


def test_header_null_value_is_an_error_suggesting_empty_string(tmp_path, registry):
    assert 'write ""' in match_error(tmp_path, registry, "{header: {X-Spam: }}").message


def test_header_name_with_a_space_is_an_error(tmp_path, registry):
    assert "header field name" in match_error(tmp_path, registry, "{header: {'List Id': x}}").message


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1000", 1000),
        ("'100B'", 100),
        ("100K", 102400),
        ("100KB", 102400),
        ("100kib", 102400),
        ("2MB", 2 * 1024 * 1024),
        ("1.5M", 1572864),
        ("1G", 1024**3),
    ],
)
def test_larger_accepts_bytes_and_units(tmp_path, registry, text, size):
    assert match_of(tmp_path, registry, f"{{larger: {text}}}") == Size("larger", size)


def test_smaller_becomes_a_size_criterion(tmp_path, registry):
    assert match_of(tmp_path, registry, "{smaller: 2MB}") == Size("smaller", 2 * 1024 * 1024)


@pytest.mark.parametrize("text", ["'10 parsecs'", "-5", "1.5", "2TB", "true", "'1.5B'"])
def test_bad_size_is_an_error_saying_the_expected_form(tmp_path, registry, text):
    err = match_error(tmp_path, registry, f"{{larger: {text}}}")
    assert "larger:" in err.message and "'100KB'" in err.message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("45s", 45),
        ("90m", 5400),
        ("12h", 43200),
        ("30d", 2592000),
        ("2w", 1209600),
        ("1h30m", 5400),
        ("3 days", 259200),
    ],
)
def test_older_than_accepts_durations(tmp_path, registry, text, seconds):
    assert match_of(tmp_path, registry, f"{{older_than: {text}}}") == Age("older", seconds)


def test_younger_than_becomes_an_age_criterion(tmp_path, registry):
    assert match_of(tmp_path, registry, "{younger_than: 12h}") == Age("younger", 43200)


def test_duration_without_a_unit_is_an_error(tmp_path, registry):
    err = match_error(tmp_path, registry, "{older_than: 30}")
    assert "older_than: expected a duration with a unit such as '45s'" in err.message
    assert "found the number 30" in err.message
    assert (err.location.line, err.location.column) == (HEADER_LINES + 3, 25)


@pytest.mark.parametrize("text", ["30x", "d30", "0d", "'1:30'", "1.5h", "''"])
def test_bad_duration_is_an_error(tmp_path, registry, text):
    assert "older_than:" in match_error(tmp_path, registry, f"{{older_than: {text}}}").message


@pytest.mark.parametrize("text", ["6M", "1y", "2months"])
def test_months_and_years_are_refused(tmp_path, registry, text):
    assert "months and years" in match_error(tmp_path, registry, f"{{older_than: {text}}}").message


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("before", ArrivalDate("before", dt.date(2024, 1, 31))),
        ("on", ArrivalDate("on", dt.date(2024, 1, 31))),
        ("since", ArrivalDate("since", dt.date(2024, 1, 31))),
        ("sent_before", SentDate("before", dt.date(2024, 1, 31))),
        ("sent_on", SentDate("on", dt.date(2024, 1, 31))),
        ("sent_since", SentDate("since", dt.date(2024, 1, 31))),
    ],
)
def test_date_keys_become_date_criteria(tmp_path, registry, key, expected):
    assert match_of(tmp_path, registry, f"{{{key}: 2024-01-31}}") == expected


def test_quoted_date_string_is_accepted(tmp_path, registry):
    assert match_of(tmp_path, registry, "{since: '2024-01-31'}") == ArrivalDate("since", dt.date(2024, 1, 31))


@pytest.mark.parametrize(
    "text", ["2024-1-5", "'31.01.2024'", "2024-02-30", "'2024-13-01'", "2024", "'2024-01-31 10:00'"]
)
def test_bad_date_is_an_error(tmp_path, registry, text):
    assert "YYYY-MM-DD" in match_error(tmp_path, registry, f"{{since: {text}}}").message


def test_date_with_a_time_is_an_error(tmp_path, registry):
    assert "without a time" in match_error(tmp_path, registry, "{since: 2024-01-31 10:00:00}").message


@pytest.mark.parametrize(
    ("key", "flag"),
    [
        ("seen", "\\Seen"),
        ("answered", "\\Answered"),
        ("flagged", "\\Flagged"),
        ("deleted", "\\Deleted"),
        ("draft", "\\Draft"),
    ],
)
def test_flag_keys_become_flag_criteria(tmp_path, registry, key, flag):
    assert match_of(tmp_path, registry, f"{{{key}: true}}") == Flag(flag, True)
    assert match_of(tmp_path, registry, f"{{{key}: false}}") == Flag(flag, False)


@pytest.mark.parametrize("text", ['"true"', "1", "unread"])
def test_flag_value_must_be_a_boolean(tmp_path, registry, text):
    assert "seen: expected true or false" in match_error(tmp_path, registry, f"{{seen: {text}}}").message


def test_keyword_becomes_a_keyword_criterion(tmp_path, registry):
    assert match_of(tmp_path, registry, "{keyword: $Dev}") == Keyword("$Dev")


def test_keyword_list_means_all_of_them(tmp_path, registry):
    assert match_of(tmp_path, registry, "{keyword: [$Dev, Work]}") == All((Keyword("$Dev"), Keyword("Work")))


def test_keyword_with_a_space_is_an_error(tmp_path, registry):
    assert "keyword:" in match_error(tmp_path, registry, "{keyword: 'two words'}").message


def test_all_becomes_all(tmp_path, registry):
    assert match_of(tmp_path, registry, "{all: [{from: a}, {seen: false}]}") == All(
        (Text("from", "a"), Flag("\\Seen", False))
    )


def test_any_becomes_anyof(tmp_path, registry):
    assert match_of(tmp_path, registry, "{any: [{from: a}, {from: b, seen: true}]}") == AnyOf(
        (Text("from", "a"), All((Text("from", "b"), Flag("\\Seen", True))))
    )


@pytest.mark.parametrize("key", ["all", "any"])
def test_empty_all_or_any_is_an_error(tmp_path, registry, key):
    assert "found an empty list" in match_error(tmp_path, registry, f"{{{key}: []}}").message


def test_not_with_one_key_negates_it(tmp_path, registry):
    assert match_of(tmp_path, registry, "{not: {from: a}}") == Not(Text("from", "a"))


def test_not_with_several_keys_negates_all_of_them(tmp_path, registry):
    assert match_of(tmp_path, registry, "{not: {from: a, seen: true}}") == Not(
        All((Text("from", "a"), Flag("\\Seen", True)))
    )


def test_not_must_be_a_mapping(tmp_path, registry):
    assert "not: expected a mapping of criteria" in match_error(tmp_path, registry, "{not: [a]}").message


def test_raw_becomes_raw(tmp_path, registry):
    assert match_of(tmp_path, registry, """{raw: 'X-GM-RAW "has:attachment"'}""") == Raw(
        'X-GM-RAW "has:attachment"'
    )


def test_several_keys_are_anded_in_written_order(tmp_path, registry):
    assert match_of(tmp_path, registry, "{subject: x, from: a, larger: 1K}") == All(
        (Text("subject", "x"), Text("from", "a"), Size("larger", 1024))
    )


def test_empty_match_matches_everything(tmp_path, registry):
    assert match_of(tmp_path, registry, "{}") == MATCH_EVERYTHING


def test_null_match_matches_everything(tmp_path, registry):
    assert match_of(tmp_path, registry, "") == MATCH_EVERYTHING


def test_on_key_is_not_read_as_a_yaml_boolean(tmp_path, registry):
    path = with_rules(tmp_path, "- name: r\n  match:\n    on: 2024-06-03\n  actions: [flag]\n")
    assert load(path, registry=registry).rules[0].match == ArrivalDate("on", dt.date(2024, 6, 3))


def test_unknown_criteria_key_is_an_error_naming_line_and_column(tmp_path, registry):
    path = with_rules(tmp_path, "- name: r\n  match:\n    frm: a\n  actions: [flag]\n")
    err = error_of(path, registry)
    assert (err.location.line, err.location.column) == (HEADER_LINES + 4, 7)
    assert err.message.startswith("rule 'r': match: unknown key 'frm' (expected one of: from, to, cc,")


def test_unknown_key_in_a_nested_criteria_mapping_is_an_error(tmp_path, registry):
    err = match_error(tmp_path, registry, "{any: [{from: a}, {subjet: b}]}")
    assert "any: unknown key 'subjet'" in err.message


def test_match_must_be_a_mapping(tmp_path, registry):
    assert "match: expected a mapping of criteria" in match_error(tmp_path, registry, "[from, a]").message


def test_yaml_anchors_and_merge_keys_work_in_rules(tmp_path, registry):
    path = with_rules(
        tmp_path,
        """\
        - name: a
          match: &lists {header: {List-Id: x}}
          actions: [flag]
        - &base
          name: b
          match: *lists
          actions: [seen]
        - <<: *base
          name: c
        """,
    )
    rules = load(path, registry=registry).rules
    assert rules[1].match == rules[0].match == Header("List-Id", "x")
    assert (rules[2].name, rules[2].actions[0].name) == ("c", "seen")


# --------------------------------------------------------------------------- where


def test_where_regex_is_parsed_by_the_predicate(tmp_path, registry):
    path = with_rules(
        tmp_path, "- name: r\n  where:\n    - regex: {body: 'build #\\d+ failed'}\n  actions: [flag]\n"
    )
    (call,) = load(path, registry=registry).rules[0].where
    assert call.name == "regex"
    assert call.args[0][0] == "body" and call.args[0][1].pattern == "build #\\d+ failed"
    assert call.location.line == HEADER_LINES + 4


def test_bad_regex_is_an_error_at_its_arguments(tmp_path, registry):
    path = with_rules(tmp_path, "- name: r\n  where:\n    - regex: {body: '(unclosed'}\n  actions: [flag]\n")
    err = error_of(path, registry)
    assert (err.location.line, err.location.column) == (HEADER_LINES + 4, 16)
    assert "where: regex: bad regular expression" in err.message


def test_unknown_predicate_is_an_error_listing_the_known_ones(tmp_path, registry):
    path = with_rules(tmp_path, "- name: r\n  where:\n    - regexp: {body: x}\n  actions: [flag]\n")
    err = error_of(path, registry)
    assert "unknown predicate 'regexp' (known predicates: regex)" in err.message
    assert (err.location.line, err.location.column) == (HEADER_LINES + 4, 9)


def test_where_item_with_two_keys_is_an_error(tmp_path, registry):
    path = with_rules(
        tmp_path, "- name: r\n  where:\n    - {regex: {body: x}, other: 1}\n  actions: [flag]\n"
    )
    assert "one per list item" in error_of(path, registry).message


def test_plugin_predicate_receives_its_parsed_arguments(tmp_path):
    class Plugin:
        from mailrules import hookimpl

        @hookimpl
        def mailrules_predicates(self):
            return [Predicate("spam_score", test=lambda m, a: True, parse=lambda raw: float(raw["above"]))]

    registry = Registry.load(entry_points=False, extra=[Plugin()])
    path = with_rules(tmp_path, "- name: r\n  where:\n    - spam_score: {above: 5}\n  actions: [flag]\n")
    assert load(path, registry=registry).rules[0].where[0].args == 5.0


# --------------------------------------------------------------------------- actions


def test_bare_word_and_mapping_actions(tmp_path, registry):
    path = with_rules(
        tmp_path, "- name: r\n  actions:\n    - flag\n    - add_keyword: [$A, $B]\n    - move: Lists/dev\n"
    )
    actions = load(path, registry=registry).rules[0].actions
    assert [(a.name, a.arg) for a in actions] == [
        ("flag", ("\\Flagged",)),
        ("add_keyword", ("$A", "$B")),
        ("move", FolderRef("Lists/dev")),
    ]
    assert [a.location.line for a in actions] == [HEADER_LINES + 4, HEADER_LINES + 5, HEADER_LINES + 6]


def test_unknown_action_is_an_error_listing_the_known_ones(tmp_path, registry):
    err = error_of(with_rules(tmp_path, "- name: r\n  actions: [mvoe]\n"), registry)
    assert "unknown action 'mvoe' (known actions: add_flag, add_keyword, copy, delete, flag," in err.message
    assert (err.location.line, err.location.column) == (HEADER_LINES + 3, 15)


def test_action_argument_error_is_reported_at_the_argument(tmp_path, registry):
    err = error_of(with_rules(tmp_path, "- name: r\n  actions:\n    - flag: now\n"), registry)
    assert err.message == "rule 'r': flag: takes no argument (write it as a bare word)"
    assert (err.location.line, err.location.column) == (HEADER_LINES + 4, 15)


def test_action_needing_an_argument_as_a_bare_word_is_an_error(tmp_path, registry):
    err = error_of(with_rules(tmp_path, "- name: r\n  actions: [move]\n"), registry)
    assert "move: expected a folder name" in err.message


def test_add_flag_deleted_is_refused(tmp_path, registry):
    err = error_of(with_rules(tmp_path, "- name: r\n  actions:\n    - add_flag: \\Deleted\n"), registry)
    assert "use the 'delete' action" in err.message
    assert err.location.line == HEADER_LINES + 4


def test_add_flag_normalizes_system_flags(tmp_path, registry):
    path = with_rules(tmp_path, "- name: r\n  actions:\n    - add_flag: [\\answered, \\Draft]\n")
    assert load(path, registry=registry).rules[0].actions[0].arg == ("\\Answered", "\\Draft")


def test_numeric_folder_name_error_suggests_quotes(tmp_path, registry):
    err = error_of(with_rules(tmp_path, "- name: r\n  actions:\n    - move: 2024\n"), registry)
    assert "write it in quotes: '2024'" in err.message


def test_action_item_with_two_keys_is_an_error(tmp_path, registry):
    err = error_of(with_rules(tmp_path, "- name: r\n  actions:\n    - {copy: A, move: B}\n"), registry)
    assert "found a mapping with 2 keys" in err.message


@pytest.mark.parametrize("terminal", ["move: Archive", "trash", "delete"])
def test_terminal_action_implies_stop(tmp_path, registry, terminal):
    path = with_rules(tmp_path, f"- name: r\n  actions:\n    - {terminal}\n")
    assert load(path, registry=registry).rules[0].stop is True


@pytest.mark.parametrize("terminal", ["move: Archive", "trash", "delete"])
def test_action_after_a_terminal_action_is_an_error(tmp_path, registry, terminal):
    err = error_of(with_rules(tmp_path, f"- name: r\n  actions:\n    - {terminal}\n    - flag\n"), registry)
    assert "'flag' comes after" in err.message and "removes the message" in err.message
    assert (err.location.line, err.location.column) == (HEADER_LINES + 5, 9)


def test_stop_false_beside_a_terminal_action_is_an_error(tmp_path, registry):
    err = error_of(with_rules(tmp_path, "- name: r\n  actions: [delete]\n  stop: false\n"), registry)
    assert "stop: false contradicts 'delete'" in err.message
    assert err.location.line == HEADER_LINES + 4


def test_stop_true_without_a_terminal_action_is_kept(tmp_path, registry):
    rule = load(
        with_rules(tmp_path, "- name: r\n  actions: [flag]\n  stop: true\n"), registry=registry
    ).rules[0]
    assert rule.stop is True


def test_folder_prefix_naming_an_account_is_a_cross_account_destination(tmp_path, registry):
    path = with_rules(
        tmp_path, "- name: r\n  actions:\n    - copy: work:Archive/2024\n    - move: personal:Old\n"
    )
    actions = load(path, registry=registry).rules[0].actions
    assert [a.arg for a in actions] == [FolderRef("Archive/2024", "work"), FolderRef("Old", "personal")]


def test_folder_prefix_not_naming_an_account_is_part_of_the_path(tmp_path, registry):
    path = with_rules(tmp_path, "- name: r\n  actions:\n    - move: 'Projects: 2024/Q1'\n")
    assert load(path, registry=registry).rules[0].actions[0].arg == FolderRef("Projects: 2024/Q1")


def test_folder_after_an_account_prefix_must_be_valid(tmp_path, registry):
    err = error_of(with_rules(tmp_path, "- name: r\n  actions:\n    - move: 'work:'\n"), registry)
    assert "move: account 'work': expected a folder name" in err.message


def test_plugin_action_receives_its_parsed_argument(tmp_path):
    class Plugin:
        from mailrules import hookimpl

        @hookimpl
        def mailrules_actions(self):
            return [Action("notify", parse=lambda raw: {"channel": raw})]

    registry = Registry.load(entry_points=False, extra=[Plugin()])
    path = with_rules(tmp_path, "- name: r\n  actions:\n    - notify: '#mail'\n")
    assert load(path, registry=registry).rules[0].actions[0].arg == {"channel": "#mail"}


# --------------------------------------------------------------------------- schedule


def test_cron_schedule_is_kept(tmp_path, registry):
    path = with_rules(tmp_path, "- name: r\n  schedule: '0 3 * * *'\n  actions: [flag]\n")
    assert load(path, registry=registry).rules[0].schedule == Schedule(cron="0 3 * * *")


def test_cron_day_of_week_numbers_follow_crontab(tmp_path, registry):
    path = with_rules(tmp_path, "- name: r\n  schedule: '0 3 * * 0,1-5'\n  actions: [flag]\n")
    assert load(path, registry=registry).rules[0].schedule == Schedule(cron="0 3 * * sun,mon,tue,wed,thu,fri")


def test_cron_seven_is_sunday(tmp_path, registry):
    path = with_rules(tmp_path, "- name: r\n  schedule: '0 3 * * 7'\n  actions: [flag]\n")
    assert load(path, registry=registry).rules[0].schedule == Schedule(cron="0 3 * * sun")


def test_cron_macro_is_expanded(tmp_path, registry):
    path = with_rules(tmp_path, "- name: r\n  schedule: '@daily'\n  actions: [flag]\n")
    assert load(path, registry=registry).rules[0].schedule == Schedule(cron="0 0 * * *")


@pytest.mark.parametrize("expr", ["0 3 * *", "61 * * * *", "0 3 * * 8", "0 3 1 * mon", "every day"])
def test_bad_cron_is_an_error(tmp_path, registry, expr):
    err = error_of(with_rules(tmp_path, f"- name: r\n  schedule: '{expr}'\n  actions: [flag]\n"), registry)
    assert "schedule: invalid cron expression" in err.message
    assert err.location.line == HEADER_LINES + 3


def test_every_schedule_takes_any_duration(tmp_path, registry):
    path = with_rules(tmp_path, "- name: r\n  schedule: {every: 1h30m}\n  actions: [flag]\n")
    assert load(path, registry=registry).rules[0].schedule == Schedule(every_seconds=5400)


def test_every_schedule_without_a_unit_is_an_error(tmp_path, registry):
    err = error_of(
        with_rules(tmp_path, "- name: r\n  schedule: {every: 3600}\n  actions: [flag]\n"), registry
    )
    assert "schedule: every: expected a duration" in err.message


def test_unknown_schedule_key_is_an_error(tmp_path, registry):
    err = error_of(with_rules(tmp_path, "- name: r\n  schedule: {evry: 1h}\n  actions: [flag]\n"), registry)
    assert "schedule: unknown key 'evry' (expected one of: every)" in err.message


# --------------------------------------------------------------------------- helpers


def test_parse_duration_combines_units():
    assert parse_duration("1w2d3h4m5s") == 604800 + 2 * 86400 + 3 * 3600 + 4 * 60 + 5


def test_parse_size_rounds_fractions_down_to_bytes():
    assert parse_size("1.1K") == 1126


def test_default_config_path_uses_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MAILRULES_CONFIG", str(tmp_path / "x.yaml"))
    assert default_config_path() == tmp_path / "x.yaml"


def test_default_config_path_falls_back_to_home(monkeypatch, tmp_path):
    monkeypatch.delenv("MAILRULES_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_config_path() == tmp_path / ".config" / "mailrules" / "rules.yaml"


def test_config_error_str_names_file_line_and_column():
    err = ConfigError("boom", Location("rules.yaml", 14, 7))
    assert str(err) == "rules.yaml:14:7: boom" and err.location.line == 14


def test_default_registry_is_used_when_none_is_given(tmp_path):
    config = load(with_rules(tmp_path, "- name: r\n  actions: [flag]\n"))
    assert config.rules[0].actions[0].name == "flag"


# --------------------------------------------------------------------------- values every run would fail on
# `check` accepted these and every run then failed (issue 9, item 5): they are refused at load
# time, at their line, saying what is wrong.

MATCH_LINE = HEADER_LINES + 3  # the line of `match:` in match_error's one-rule file


@pytest.mark.parametrize(
    ("match", "says"),
    [
        ("{larger: 100000000000000000000000000}", "larger: at most 4294967295 bytes"),
        ("{smaller: 5G}", "smaller: at most 4294967295 bytes"),
        ("{older_than: 99999999999999999999999d}", "older_than: at most"),
        ("{younger_than: 99999999999w}", "younger_than: at most"),
        ('{subject: "\\0"}', "subject: a NUL"),
        ('{from: "a\\r\\nb"}', "from: a line break"),
        ('{body: "a\\x1bb"}', "body: a control character"),
        ('{header: {X-Tag: "a\\0"}}', "header X-Tag: a NUL"),
        ('{header: {"X(": a}}', "header: expected a header field name"),
        ('{raw: "UNSEEN\\r\\nA1 LOGOUT"}', "raw: a line break"),
        ('{raw: "UNSEEN\\0"}', "raw: a NUL"),
        ("{raw: '(UNSEEN'}", "raw: unbalanced parentheses"),
        ("{raw: 'UNSEEN)'}", "raw: unbalanced parentheses"),
        ("""{raw: 'SUBJECT "x'}""", "raw: a quoted string is not closed"),
        ("{raw: 'SUBJECT {3}'}", "raw: a literal"),
        ("{any: [{seen: true}, {subject: \"\\0\"}]}", "subject: a NUL"),
    ],
)
def test_a_match_value_the_server_cannot_take_is_refused_at_its_line(tmp_path, registry, match, says):
    err = match_error(tmp_path, registry, match)
    assert says in err.message, err.message
    assert err.location is not None and err.location.line == MATCH_LINE, str(err)


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        ("{larger: 4294967295}", Size("larger", 4294967295)),
        ("{older_than: 3650d}", Age("older", 3650 * 86400)),
        ('{subject: "tab\\there"}', Text("subject", "tab\there")),
        ("""{raw: 'OR (SUBJECT "a(\\"b") UNSEEN'}""", Raw('OR (SUBJECT "a(\\"b") UNSEEN')),
        ("""{raw: 'X-GM-RAW "has:attachment"'}""", Raw('X-GM-RAW "has:attachment"')),
    ],
)
def test_values_at_the_bounds_still_load(tmp_path, registry, match, expected):
    assert match_of(tmp_path, registry, match) == expected


@pytest.mark.parametrize(
    ("action", "says"),
    [
        ('{move: "Lists\\r\\ndev"}', "move: a line break"),
        ('{copy: "Arch\\0ive"}', "copy: a NUL"),
        ('{copy: "work:Arch\\x07ive"}', "a control character"),
    ],
)
def test_a_folder_name_with_control_characters_is_refused_at_its_line(tmp_path, registry, action, says):
    path = with_rules(tmp_path, f"- name: r\n  actions: [{action}]\n")
    err = error_of(path, registry)
    assert says in err.message, err.message
    assert err.location.line == HEADER_LINES + 3


def test_a_rule_mailbox_with_a_line_break_is_refused(tmp_path, registry):
    path = with_rules(tmp_path, '- name: r\n  mailbox: "IN\\r\\nBOX"\n  actions: [flag]\n')
    err = error_of(path, registry)
    assert "mailbox: a line break" in err.message and err.location.line == HEADER_LINES + 3


def test_a_watched_mailbox_with_a_nul_is_refused(tmp_path, registry):
    path = account_file(tmp_path, 'host: h.example\nusername: u\npassword_env: PW\nwatch: ["IN\\0BOX"]\n')
    err = error_of(path, registry)
    assert "watch: a NUL" in err.message and err.location.line == 7


@pytest.mark.parametrize("name", ["X(", "X)", "X{1}", 'X"', "X\\", "X]", "X%", "X*"])
def test_a_regex_on_a_header_name_imap_cannot_fetch_is_refused(tmp_path, registry, name):
    path = with_rules(tmp_path, f"- name: r\n  where: [{{regex: {{'{name}': a}}}}]\n  actions: [flag]\n")
    err = error_of(path, registry)
    assert "expected a header name" in err.message, err.message
    assert err.location.line == HEADER_LINES + 3


@pytest.mark.parametrize("key", ["timeout", "poll_interval", "idle_interval", "reconnect_max"])
@pytest.mark.parametrize("text", [".inf", "1e30", "99999999999999w", "8d"])
def test_a_timeout_too_long_for_a_timer_is_refused(tmp_path, registry, key, text):
    path = account_file(tmp_path, f"host: h.example\nusername: u\npassword_env: PW\n{key}: {text}\n")
    err = error_of(path, registry)
    assert f"{key}: expected a number of seconds" in err.message and "at most 7 days" in err.message, err.message
    assert err.location.line == 7


def test_a_timeout_of_seven_days_loads(tmp_path, registry):
    path = account_file(tmp_path, "host: h.example\nusername: u\npassword_env: PW\npoll_interval: 7d\n")
    assert load(path, registry=registry).accounts["a"].poll_interval == 7 * 86400


def test_max_connections_beyond_any_server_is_refused(tmp_path, registry):
    path = account_file(tmp_path, "host: h.example\nusername: u\npassword_env: PW\nmax_connections: 100000000000\n")
    assert "max_connections: expected a number of connections" in error_of(path, registry).message


@pytest.mark.parametrize("every", ["99999999999999w", "2147483648s"])
def test_a_schedule_beyond_what_dates_can_hold_is_refused(tmp_path, registry, every):
    path = with_rules(tmp_path, f"- name: r\n  schedule: {{every: {every}}}\n  actions: [flag]\n")
    err = error_of(path, registry)
    assert "schedule: every: at most" in err.message and err.location.line == HEADER_LINES + 3


def test_a_username_with_a_line_break_is_refused(tmp_path, registry):
    path = account_file(tmp_path, 'host: h.example\nusername: "u\\r\\nA1 LOGOUT"\npassword_env: PW\n')
    assert "username: a line break" in error_of(path, registry).message


def test_parse_size_and_parse_duration_refuse_what_imap_and_dates_cannot_hold():
    assert parse_size(2**32 - 1) == 2**32 - 1
    with pytest.raises(ValueError, match="at most 4294967295"):
        parse_size(2**32)
    with pytest.raises(ValueError, match="at most 4294967295"):
        parse_size("4G")
    assert parse_duration(f"{2**31 - 1}s") == 2**31 - 1
    with pytest.raises(ValueError, match="at most"):
        parse_duration(f"{2**31}s")

"""A path in a plugin's argument is relative to the rules file that writes it (issue 18), as
`include:`, `ca_file:` and a test's `file:` are: `mailrules.resolve_path` in `parse`."""

from __future__ import annotations

from pathlib import Path

from mailrules import Predicate, hookimpl, resolve_path
from mailrules.config import load
from mailrules.plugins import Registry

ACCOUNTS = "version: 1\naccounts: {a: {host: localhost, username: u, password_env: UNUSED}}\n"


class ListPlugin:
    mailrules_plugin_name = "lists"

    @hookimpl
    def mailrules_predicates(self):
        return [Predicate("listed", lambda message, path: True, "x", schema={"type": "string"},
                          parse=resolve_path, needs=["header:From"])]


def load_with_plugin(path: Path):
    return load(path, registry=Registry.load(entry_points=False, extra=[ListPlugin()]))


def test_a_relative_path_is_relative_to_the_rules_files_directory(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    rules = tmp_path / "conf" / "rules.yaml"
    rules.parent.mkdir()
    rules.write_text(ACCOUNTS + "rules:\n  - name: r\n    where: [{listed: lists/vip.txt}]\n    actions: [flag]\n")
    assert load_with_plugin(rules).rules[0].where[0].args == tmp_path / "conf" / "lists" / "vip.txt"


def test_a_relative_path_in_an_included_file_is_relative_to_that_file(tmp_path):
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "shared.yaml").write_text(
        "rules:\n  - name: r\n    where: [{listed: vip.txt}]\n    actions: [flag]\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text(ACCOUNTS + "include: [team/shared.yaml]\nrules: []\n")
    assert load_with_plugin(rules).rules[0].where[0].args == tmp_path / "team" / "vip.txt"


def test_home_and_absolute_paths_are_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_path("~/x.txt") == tmp_path / "home" / "x.txt"
    assert resolve_path("/etc/x.txt") == Path("/etc/x.txt")


def test_outside_loading_a_relative_path_stays_relative_to_the_current_directory():
    assert resolve_path("x.txt") == Path("x.txt")

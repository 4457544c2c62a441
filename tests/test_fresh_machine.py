"""A fresh machine: the suite is green where optional pieces are missing, and says what is missing.

A newcomer runs the tests before installing the plugins (only CI and scripts/run-tests install
them); every test that needs a plugin must then skip with the reason and the command that
installs it, never fail. Those tests run pytest in a child Python where the `notify` plugin is
hidden: neither its module nor its entry point exist there, as on a machine where it was never
installed. scripts/setup names each missing system package and the one command that installs
it. Every subcommand's --help says what it does and shows an example.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WITHOUT_NOTIFY = """
import importlib.abc, importlib.metadata as md, sys
class Hidden(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "mailrules_notify" or name.startswith("mailrules_notify."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Hidden())
everything = md.entry_points
md.entry_points = lambda **kw: [e for e in everything(**kw) if not e.value.startswith("mailrules_notify")]
import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""


def pytest_without_notify(*args: str, require: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MAILRULES_REQUIRE_PLUGINS"}
    if require:
        env["MAILRULES_REQUIRE_PLUGINS"] = "1"
    return subprocess.run([sys.executable, "-c", WITHOUT_NOTIFY, "-q", "-rs", "-p", "no:cacheprovider", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_the_plugin_guides_notify_tests_skip_with_the_install_command_when_notify_is_missing():
    result = pytest_without_notify("tests/test_docs_plugins.py", "-k", "pipe or failing_command or typo")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 skipped" in result.stdout
    assert "mailrules_notify is not installed (pip install -e plugins/notify)" in result.stdout


def test_the_plugin_guides_notify_tests_fail_when_plugins_are_required_and_notify_is_missing():
    result = pytest_without_notify("tests/test_docs_plugins.py", "-k", "typo", require=True)
    assert result.returncode == 1 and "MAILRULES_REQUIRE_PLUGINS is set" in result.stdout


def run_setup(tmp_path: Path, path_programs: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """scripts/setup in a copy of the checkout's scripts, with only `path_programs` on PATH."""
    shutil.copytree(REPO / "scripts", tmp_path / "checkout" / "scripts")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, target in path_programs.items():
        (bin_dir / name).symlink_to(target)
    env = {"PATH": str(bin_dir), "MAILRULES_SBIN": "", "HOME": str(tmp_path)}
    return subprocess.run([shutil.which("bash") or "/bin/bash", str(tmp_path / "checkout" / "scripts" / "setup")],
                          env=env, capture_output=True, text=True, timeout=60)


def test_setup_names_each_missing_system_package_and_the_one_command_that_installs_it(tmp_path):
    result = run_setup(tmp_path, {"python3": sys.executable, "dirname": shutil.which("dirname") or "/usr/bin/dirname"})
    assert result.returncode == 3
    assert "missing system package(s): dovecot-imapd openssl" in result.stderr
    assert "  apt-get install -y dovecot-imapd openssl\n" in result.stderr
    assert not (tmp_path / "checkout" / ".venv").exists()


def test_setup_without_python_names_python3_venv(tmp_path):
    result = run_setup(tmp_path, {"dirname": shutil.which("dirname") or "/usr/bin/dirname"})
    assert result.returncode == 3 and "apt-get install -y python3 python3-venv dovecot-imapd" in result.stderr


def test_every_subcommands_help_has_a_description_and_an_example():
    from mailrules.cli import build_parser

    parser = build_parser()
    action = parser._subparsers._group_actions[0]
    missing = []
    for name, sub in sorted(action.choices.items()):
        text = sub.format_help()
        body = text.split("\n\n", 2)[1] if "\n\n" in text else ""
        if not sub.description or body.startswith(("positional arguments", "options")):
            missing.append(f"{name}: no description")
        if f"mailrules {name}" not in (sub.epilog or "") or "example" not in (sub.epilog or ""):
            missing.append(f"{name}: no example")
    assert missing == [], missing


def test_test_module_names_are_unique_across_the_test_paths():
    """pytest's default import mode imports each test file by its basename: two test_x.py in
    different test paths (tests/, plugins/*/tests/) stop the whole run at collection."""
    import collections

    files = list((REPO / "tests").glob("test_*.py")) + list((REPO / "plugins").glob("*/tests/test_*.py"))
    names = collections.Counter(f.name for f in files)
    assert [name for name, n in names.items() if n > 1] == []

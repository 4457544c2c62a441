"""Shell completion: `mailrules` answers argcomplete's protocol (`_ARGCOMPLETE`, `COMP_LINE`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import mailrules.cli

pytest.importorskip("argcomplete")


def completions(tmp_path: Path, line: str) -> list[str]:
    """What the shell would offer for the command line `line` (the cursor at its end)."""
    out = tmp_path / "completions"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_IFS": "\n",
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "COMP_TYPE": "9",
    }
    result = subprocess.run(
        [sys.executable, "-m", "mailrules"], env=env, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [word.rstrip() for word in out.read_text().split("\n")]


def test_the_shell_completes_the_subcommands(tmp_path):
    assert completions(tmp_path, "mailrules ch") == ["check"]
    assert {"run", "check", "status", "plugins", "demo", "login"} <= set(completions(tmp_path, "mailrules "))


def test_the_shell_completes_the_options_of_a_subcommand(tmp_path):
    assert completions(tmp_path, "mailrules run --dr") == ["--dry-run"]
    assert "--connect" in completions(tmp_path, "mailrules check --")


def test_the_entry_point_is_marked_for_register_python_argcomplete():
    """`register-python-argcomplete mailrules` completes only scripts marked in their first 1024 bytes."""
    head = Path(mailrules.cli.__file__).read_bytes()[:1024]
    assert b"PYTHON_ARGCOMPLETE_OK" in head


def test_an_ordinary_run_does_not_import_argcomplete():
    code = "import sys, mailrules.cli as c; c.complete(c.build_parser()); print('argcomplete' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "_ARGCOMPLETE"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.stdout.strip() == "False"

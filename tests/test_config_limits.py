"""A bad rules file, whatever it holds, is a clear error with file:line, fast, in bounded memory.

Issue 9, items 6 and 7: control characters, deep nesting, alias bombs, files that are not
regular files (/dev/zero, a FIFO, a directory), paths that cannot be used (a NUL, a symbolic
link loop, ~nosuchuser), oversized files, and files that are not rules files at all (whose
text must never be echoed: an include may point at a secret).

Most tests call `load()` in-process. `load_bounded()` runs it in a thread and fails the test
if it has not returned after a minute (a hang guard, not a timing assertion). The CLI tests
run `mailrules check` in a subprocess with an address-space limit, so that a regression that
eats memory fails the test instead of the machine.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest

from mailrules.config import ConfigError, load
from mailrules.config.reading import MAX_DEPTH, MAX_FILE_BYTES
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
HANG_GUARD = 60.0  # seconds: far above the fraction of a second these loads take
PASSWD = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
PRIVATE_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACDzSECRETSECRETSECRETSECRETSECRETSECRETSECRETAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load(entry_points=False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load_bounded(path: Path | str, registry: Registry) -> BaseException | None:
    """load(path) in a thread; what it raised (None if it loaded). Fails if it hangs."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                load(path, registry=registry)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_GUARD)
    assert not thread.is_alive(), f"load({path}) did not return within {HANG_GUARD:g}s"
    return outcome[0]


def config_error(path: Path | str, registry: Registry) -> ConfigError:
    exc = load_bounded(path, registry)
    assert isinstance(exc, ConfigError), f"expected a ConfigError, got {exc!r}"
    return exc


def rules_with(tmp_path: Path, rules: str) -> Path:
    return write(tmp_path / "rules.yaml", HEADER + "rules:\n" + rules)


# ---------------------------------------------------------------------- control characters


@pytest.mark.parametrize("char", ["\x01", "\x1b", "\x7f", "\x00", "\ufffe"])
def test_a_control_character_is_an_error_naming_its_line_and_column(tmp_path, registry, char):
    path = rules_with(tmp_path, f"  - name: r{char}x\n    actions: [flag]\n")
    err = config_error(path, registry)
    assert (err.location.file, err.location.line, err.location.column) == (str(path), HEADER_LINES + 2, 12)
    assert f"control character U+{ord(char):04X}" in err.message


def test_a_control_character_in_an_included_file_names_that_file(tmp_path, registry):
    team = write(tmp_path / "team.yaml", "rules:\n  - name: t\n    actions: [fl\x02ag]\n")
    err = config_error(write(tmp_path / "rules.yaml", HEADER + "include: [team.yaml]\n"), registry)
    assert (err.location.file, err.location.line, err.location.column) == (str(team), 3, 17)


# ---------------------------------------------------------------------- nesting


def deep_not(depth: int) -> str:
    return "  - name: deep\n    match: " + "{not: " * depth + "{seen: true}" + "}" * depth + "\n    actions: [flag]\n"


def deep_any(depth: int) -> str:
    return (
        "  - name: deep\n    match: " + "{any: [" * depth + "{seen: true}" + "]}" * depth + "\n    actions: [flag]\n"
    )


@pytest.mark.parametrize("make", [deep_not, deep_any], ids=["not", "any"])
def test_thousand_deep_criteria_are_an_error_not_a_recursion_error(tmp_path, registry, make):
    err = config_error(rules_with(tmp_path, make(1000)), registry)
    assert err.location.line == HEADER_LINES + 3
    assert f"nested more than {MAX_DEPTH} levels deep" in err.message


@pytest.mark.parametrize("depth", [1000, 200_000])
def test_deeply_nested_lists_are_an_error(tmp_path, registry, depth):
    """200,000 levels would crash libyaml's own composer (C recursion): ours is iterative."""
    err = config_error(write(tmp_path / "rules.yaml", HEADER + "x: " + "[" * depth + "]" * depth + "\n"), registry)
    assert err.location.line == HEADER_LINES + 1
    assert "nested more than" in err.message


def test_criteria_nested_within_the_limit_load(tmp_path, registry):
    config = load(rules_with(tmp_path, deep_not(25)), registry=registry)
    assert config.rules[0].name == "deep"


def test_an_alias_cannot_nest_deeper_than_the_limit(tmp_path, registry):
    half = MAX_DEPTH // 2 + 2
    text = HEADER + "x: &deep " + "[" * half + "]" * half + "\ny: " + "[" * half + "*deep" + "]" * half + "\n"
    err = config_error(write(tmp_path / "rules.yaml", text), registry)
    assert err.location.line == HEADER_LINES + 2
    assert "alias *deep nests more than" in err.message


# ---------------------------------------------------------------------- aliases


def laughs(levels: int = 9, width: int = 9, indent: str = "") -> str:
    """A "billion laughs": `levels` anchors, each a list of `width` aliases of the one before."""
    lines = [f'{indent}l0: &l0 "lol"']
    for n in range(1, levels + 1):
        lines.append(f"{indent}l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def criteria_bomb(levels: int = 9, width: int = 9) -> str:
    """Valid criteria that alias each other: `levels` nested any: of `width` (9**9 leaves)."""
    expr = "&c0 {subject: x}"
    for n in range(1, levels + 1):
        expr = f"&c{n} {{any: [{expr}, " + ", ".join([f"*c{n - 1}"] * (width - 1)) + "]}"
    return expr


def test_an_alias_bomb_anywhere_is_refused_while_parsing(tmp_path, registry):
    """Before any validation: even under a key that validation would refuse at once."""
    text = "version: 1\nbomb:\n" + laughs(indent="  ")
    err = config_error(write(tmp_path / "rules.yaml", text + HEADER[len("version: 1\n"):]), registry)
    assert err.location.file == str(tmp_path / "rules.yaml") and err.location.line >= 3
    assert "too large" in err.message and "aliases expanded" in err.message


def test_an_alias_bomb_of_criteria_is_an_error(tmp_path, registry):
    """Every criterion is valid, but 9 levels of 9 aliases stand for 387 million of them."""
    rules = f"  - name: bomb\n    match: {criteria_bomb()}\n    actions: [flag]\n"
    err = config_error(rules_with(tmp_path, rules), registry)
    assert err.location.line == HEADER_LINES + 3
    assert "too large" in err.message and "aliases expanded" in err.message


def test_an_alias_bomb_inside_predicate_arguments_is_an_error(tmp_path, registry):
    rules = (
        "  - name: bomb\n    where:\n      - regex:\n          subject: x\n          laughs:\n"
        + laughs(indent="            ") + "    actions: [flag]\n"
    )
    err = config_error(rules_with(tmp_path, rules), registry)
    assert "too large" in err.message and err.location.line > HEADER_LINES


def test_an_alias_bomb_inside_action_arguments_is_an_error(tmp_path, registry):
    rules = "  - name: bomb\n    actions:\n      - add_keyword:\n" + laughs(indent="          ")
    err = config_error(rules_with(tmp_path, rules), registry)
    assert "too large" in err.message


def test_an_alias_of_a_long_string_repeated_is_an_error(tmp_path, registry):
    """Few nodes, much text: each use of the alias costs the string's length."""
    big = "x" * 1_000_000
    text = HEADER + f"s: &s {big}\n" + "l: [" + ", ".join(["*s"] * 40) + "]\n"
    err = config_error(write(tmp_path / "rules.yaml", text), registry)
    assert "MiB of text" in err.message


def test_a_recursive_alias_is_an_error(tmp_path, registry):
    err = config_error(rules_with(tmp_path, "  - name: r\n    match: &m {not: *m}\n    actions: [flag]\n"),
                       registry)
    assert err.location.line == HEADER_LINES + 3
    assert "inside the node it refers to" in err.message


def test_an_undefined_alias_is_an_error_with_its_position(tmp_path, registry):
    err = config_error(rules_with(tmp_path, "  - name: r\n    actions: *nope\n"), registry)
    assert (err.location.line, err.location.column) == (HEADER_LINES + 3, 14)
    assert "undefined alias *nope" in err.message


def test_a_merge_alias_per_rule_is_fine(tmp_path, registry):
    """`<<: *defaults` in every rule of a large file stays far below the alias limits."""
    rules = "".join(f"  - {{<<: *d, name: r{n}}}\n" for n in range(2000))
    text = HEADER + "rules:\n  - &d {name: r, actions: [flag], match: {seen: false}}\n" + rules
    config = load(write(tmp_path / "rules.yaml", text), registry=registry)
    assert len(config.rules) == 2001


PURE_CASES = {
    "control character": HEADER + "rules:\n  - name: r\x01\n",
    # 500, not 1,000: PyYAML 6.0.4's libyaml scanner stops at 1,000 levels on its own, at
    # another column than our composer's limit (the message is the same: see the test above).
    "deep list": HEADER + "x: " + "[" * 500 + "]" * 500 + "\n",
    "deep not": HEADER + "rules:\n" + deep_not(1000),
    "alias bomb": HEADER + "bomb:\n" + laughs(indent="  "),
    "recursive alias": HEADER + "rules:\n  - &r {name: r, actions: [flag], match: {not: *r}}\n",
    "second document": HEADER + "---\nversion: 1\n",
}


@pytest.mark.parametrize("case", list(PURE_CASES))
def test_the_pure_python_parser_has_the_same_limits(tmp_path, registry, monkeypatch, case):
    """Without libyaml (PyYAML built without it) the same files get the same kind of error."""
    import yaml

    import mailrules.config.reading

    monkeypatch.setattr(mailrules.config.reading, "_LOADER", yaml.SafeLoader)
    path = write(tmp_path / "rules.yaml", PURE_CASES[case])
    with_pure = config_error(path, registry)
    monkeypatch.undo()
    with_libyaml = config_error(path, registry)
    assert with_pure.location == with_libyaml.location
    assert with_pure.message == with_libyaml.message


# ---------------------------------------------------------------------- files that are not files


def test_dev_zero_as_the_rules_file_is_an_error(registry):
    err = config_error("/dev/zero", registry)
    assert err.location.file == "/dev/zero" and "not a regular file" in err.message


def test_dev_zero_as_an_include_is_an_error_at_the_include(tmp_path, registry):
    path = write(tmp_path / "rules.yaml", HEADER + "include: [/dev/zero]\n")
    err = config_error(path, registry)
    assert (err.location.file, err.location.line) == (str(path), HEADER_LINES + 1)
    assert "character device, not a regular file" in err.message


def test_a_fifo_include_is_an_error_and_does_not_hang(tmp_path, registry):
    os.mkfifo(tmp_path / "pipe.yaml")
    path = write(tmp_path / "rules.yaml", HEADER + "include:\n  - pipe.yaml\n")
    err = config_error(path, registry)
    assert (err.location.line, err.location.column) == (HEADER_LINES + 2, 5)
    assert "named pipe" in err.message


def test_a_directory_include_is_an_error(tmp_path, registry):
    (tmp_path / "team").mkdir()
    err = config_error(write(tmp_path / "rules.yaml", HEADER + "include: [team]\n"), registry)
    assert err.location.line == HEADER_LINES + 1 and "a directory" in err.message


def test_a_file_over_the_size_limit_is_an_error(tmp_path, registry):
    path = write(tmp_path / "rules.yaml", HEADER + "# " + "x" * MAX_FILE_BYTES + "\n")
    err = config_error(path, registry)
    assert err.location.file == str(path) and "MiB" in err.message


def test_the_size_limit_counts_the_includes_together(tmp_path, registry):
    half = "rules: []\n# " + "x" * (MAX_FILE_BYTES // 2) + "\n"
    write(tmp_path / "a.yaml", half)
    write(tmp_path / "b.yaml", half)
    path = write(tmp_path / "rules.yaml", HEADER + "include: [a.yaml, b.yaml]\n")
    err = config_error(path, registry)
    assert (err.location.file, err.location.line) == (str(path), HEADER_LINES + 1)
    assert "b.yaml" in err.message and "together" in err.message


# ---------------------------------------------------------------------- paths that cannot be used


def test_a_nul_in_an_include_path_is_an_error(tmp_path, registry):
    err = config_error(write(tmp_path / "rules.yaml", HEADER + 'include: ["team\\0.yaml"]\n'), registry)
    assert err.location.line == HEADER_LINES + 1 and "NUL" in err.message


def test_a_symbolic_link_loop_include_is_an_error(tmp_path, registry):
    os.symlink("b.yaml", tmp_path / "a.yaml")
    os.symlink("a.yaml", tmp_path / "b.yaml")
    err = config_error(write(tmp_path / "rules.yaml", HEADER + "include: [a.yaml]\n"), registry)
    assert err.location.line == HEADER_LINES + 1 and "symbolic link" in err.message


def test_a_symbolic_link_loop_as_the_rules_file_is_an_error(tmp_path, registry):
    os.symlink("rules.yaml", tmp_path / "rules.yaml")
    err = config_error(tmp_path / "rules.yaml", registry)
    assert err.location.file == str(tmp_path / "rules.yaml") and "symbolic link" in err.message


def test_an_unknown_user_home_in_an_include_is_an_error(tmp_path, registry):
    path = write(tmp_path / "rules.yaml", HEADER + "include: [~nosuchuser-mailrules/team.yaml]\n")
    err = config_error(path, registry)
    assert err.location.line == HEADER_LINES + 1 and "~nosuchuser-mailrules" in err.message


def test_an_unknown_user_home_as_the_rules_file_is_an_error(registry):
    err = config_error("~nosuchuser-mailrules/rules.yaml", registry)
    assert "cannot expand '~nosuchuser-mailrules'" in err.message


# ---------------------------------------------------------------------- no file content in messages


@pytest.mark.parametrize("content", [PASSWD, PRIVATE_KEY, "API_TOKEN=s3cr3t-t0ken-value\n",
                                     "password: hunter2 is my: password\n"], ids=["passwd", "key", "env", "yaml"])
def test_an_included_file_that_is_not_a_rules_file_is_not_quoted(tmp_path, registry, content):
    write(tmp_path / "secret", content)
    path = write(tmp_path / "rules.yaml", HEADER + "include: [secret]\n")
    err = config_error(path, registry)
    assert err.location.file == str(tmp_path / "secret") and err.location.line >= 1
    for word in ("root:x", "daemon", "b3Blbn", "SECRET", "s3cr3t", "hunter2"):
        assert word not in str(err)


def test_an_included_mapping_of_secrets_is_not_quoted(tmp_path, registry):
    write(tmp_path / "secret.yaml", "'correct horse battery staple': 1\n")
    err = config_error(write(tmp_path / "rules.yaml", HEADER + "include: [secret.yaml]\n"), registry)
    assert "correct horse" not in str(err) and "is this a rules file?" in err.message


def test_a_rules_file_that_is_not_a_rules_file_is_not_quoted(tmp_path, registry):
    err = config_error(write(tmp_path / "rules.yaml", PASSWD), registry)
    assert (err.location.line, err.location.column) == (1, 1)
    assert "found a string" in err.message and "root:x" not in str(err)


# ---------------------------------------------------------------------- the command line


def _limited_memory() -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def mailrules_check(path: Path | str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`mailrules check -c PATH` with 2 GiB of address space and a hang guard."""
    return subprocess.run(
        [sys.executable, "-m", "mailrules.cli", "check", "-c", str(path)],
        capture_output=True, text=True, timeout=HANG_GUARD, cwd=cwd, preexec_fn=_limited_memory,
        env={**os.environ, "PERSONAL_PW": "x"},
    )


CLI_CASES = {
    "control character": lambda d: write(d / "rules.yaml", HEADER + "rules:\n  - name: \x01\n"),
    "deep not": lambda d: write(d / "rules.yaml", HEADER + "rules:\n" + deep_not(1000)),
    "deep list": lambda d: write(d / "rules.yaml", HEADER + "x: " + "[" * 1000 + "]" * 1000 + "\n"),
    "alias bomb": lambda d: write(
        d / "rules.yaml", HEADER + f"rules:\n  - name: b\n    match: {criteria_bomb()}\n    actions: [flag]\n"
    ),
    "dev zero include": lambda d: write(d / "rules.yaml", HEADER + "include: [/dev/zero]\n"),
    "fifo include": lambda d: (os.mkfifo(d / "p"), write(d / "rules.yaml", HEADER + "include: [p]\n"))[1],
    "nul in include": lambda d: write(d / "rules.yaml", HEADER + 'include: ["a\\0b"]\n'),
    "symlink loop include": lambda d: (
        os.symlink("l2", d / "l1"), os.symlink("l1", d / "l2"), write(d / "rules.yaml", HEADER + "include: [l1]\n")
    )[2],
    "unknown user include": lambda d: write(d / "rules.yaml", HEADER + "include: [~nosuchuser-mr/x]\n"),
    "passwd include": lambda d: (write(d / "pw", PASSWD), write(d / "rules.yaml", HEADER + "include: [pw]\n"))[1],
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_check_exits_2_with_file_and_line_and_no_traceback(tmp_path, case):
    path = CLI_CASES[case](tmp_path)
    result = mailrules_check(path, tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert re.match(r"mailrules: \S+:\d+:\d+: ", result.stderr), result.stderr
    assert "root:x" not in result.stderr


def test_check_with_dev_zero_as_the_file_exits_2(tmp_path):
    result = mailrules_check("/dev/zero", tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("mailrules: /dev/zero: cannot read the rules file: it is a character device")


def test_check_with_an_unknown_user_in_mailrules_config_exits_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mailrules.cli", "check"], capture_output=True, text=True, timeout=HANG_GUARD,
        env={**os.environ, "MAILRULES_CONFIG": "~nosuchuser-mr/rules.yaml"},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cannot expand '~nosuchuser-mr'" in result.stderr


def test_check_reports_an_unexpected_load_failure_as_exit_2_without_a_traceback(tmp_path, monkeypatch):
    """A bug in a plugin's validator (anything but a ConfigError) still exits 2, tracebacks only with -v."""
    from helpers import run_cli

    def broken_load(path, *, registry=None):
        raise TypeError("a validator broke")

    monkeypatch.setattr("mailrules.config.load", broken_load)
    result = run_cli("check", "-c", write(tmp_path / "rules.yaml", HEADER))
    assert result.code == 2
    assert "cannot load the rules file: TypeError: a validator broke" in result.err
    assert "Traceback" not in result.err


@pytest.mark.slow
def test_a_legitimate_28000_rule_file_is_within_the_limits(tmp_path, registry):
    """Issue 9, item 8: the limits must not refuse a large real file (bench/big_rules.py, 5.6 MB)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("big_rules", Path(__file__).parents[1] / "bench" / "big_rules.py")
    assert spec is not None and spec.loader is not None
    big_rules = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(big_rules)
    path = write(tmp_path / "big.yaml", big_rules.rules_text(28_000))
    assert path.stat().st_size > 5_000_000
    exc = load_bounded(path, registry)
    assert exc is None, exc

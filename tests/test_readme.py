"""The README works as printed: its offline shell blocks run, its links resolve, its rules
reference lists exactly the keys the loader accepts.

Convention (README, "Tests"): a fenced block opened with ```` ```sh ```` is run by this test,
in order, in one bash script (``set -e``) in a copy of the repository's example files; one opened
with ```` ```sh no-test ```` needs something the test cannot have (root, the network, a running
server, systemd) and is only shown. Any other shell-like fence is refused, so that nothing
escapes both.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.M | re.S)
SHELL_LANGUAGES = {"sh", "bash", "shell", "console", "zsh"}


def blocks() -> list[tuple[str, str]]:
    """(info string, body) of every fenced code block of the README."""
    return [(m.group(1).strip(), m.group(2)) for m in FENCE.finditer(README.read_text())]


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n{title}\n")
    level = title.split(" ")[0]
    rest = text[start + len(title) + 2:]
    end = re.search(rf"^#{{1,{len(level)}}} ", rest, re.M)
    return rest[: end.start()] if end else rest


def test_every_shell_block_is_either_run_or_marked_no_test():
    for info, body in blocks():
        words = info.split()
        if words and words[0] in SHELL_LANGUAGES:
            assert info in ("sh", "sh no-test"), f"shell block fenced as {info!r}:\n{body}"


def test_the_readmes_offline_shell_blocks_work_as_printed(tmp_path):
    runnable = [body for info, body in blocks() if info == "sh"]
    assert len(runnable) >= 3
    work = tmp_path / "clone"
    work.mkdir()
    shutil.copy(REPO / "rules.example.yaml", work)
    shutil.copytree(REPO / "examples", work / "examples")
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "mailrules").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m mailrules "$@"\n')
    (shim / "mailrules").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(tmp_path),
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    env.pop("MAILRULES_CONFIG", None)
    script = "set -euo pipefail\n" + "\n".join(runnable)
    result = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "tour.yaml: OK" in result.stdout and "rules.example.yaml: OK" in result.stdout


def test_relative_links_in_the_readme_point_to_files_in_the_repository():
    text = README.read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    assert "docs/rules-format.md" in local and "contrib/mailrules.service" in local
    missing = [t for t in local if not (REPO / t).resolve().is_relative_to(REPO) or not (REPO / t).exists()]
    assert missing == []


def test_relative_links_in_the_docs_point_to_files_in_the_repository():
    """docs/ holds what moved out of the README (semantics, limits, benchmarks, architecture)."""
    for page in sorted((REPO / "docs").glob("*.md")):
        text = FENCE.sub("", page.read_text())
        targets = [t for t in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if not re.match(r"[a-z]+:", t)]
        missing = [t for t in targets if not (page.parent / t).resolve().exists()]
        assert missing == [], f"{page.name}: {missing}"


def test_the_readme_keeps_its_order_and_links_to_what_moved_to_docs():
    titles = re.findall(r"^## (.+)$", FENCE.sub("", README.read_text()), re.M)
    order = ["Start here", "Try it on your own mail and rules", "A five-minute tour", "Rules file", "Command line",
             "Errors and what to do"]
    assert [t for t in titles if t in order] == order, titles
    assert not {"Semantics", "Benchmarks", "Code layout"} & set(titles)
    text = README.read_text()
    for page in ("docs/semantics.md", "docs/limits.md", "docs/benchmarks.md", "docs/architecture.md"):
        assert f"]({page})" in text, page


def start_commands() -> list[str]:
    """The commands of the README's first block (comments and blank lines aside)."""
    _info, body = blocks()[0]
    lines = (line.split("#", 1)[0].strip() for line in body.splitlines())
    return [line for line in lines if line]


def test_the_readmes_first_block_is_two_commands_a_demo_and_the_tests():
    commands = start_commands()
    assert commands == ["scripts/demo", "scripts/run-tests"]
    for command in commands:
        script = REPO / command
        assert script.is_file() and os.access(script, os.X_OK), command
    assert "mailrules demo" in (REPO / "scripts" / "demo").read_text()
    assert "python -m pytest" in (REPO / "scripts" / "run-tests").read_text()


def test_ci_runs_the_readmes_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(rf"^{re.escape(start_commands()[1])}$", ci, re.M)
    assert re.search(r"^scripts/setup --newest$", ci, re.M)  # the newest versions the bounds allow


def ci_recipe_commands() -> list[list[str]]:
    """The shell commands of each CI recipe (the yaml blocks with `mailrules test`)."""
    recipes = []
    for info, body in blocks():
        if info == "yaml" and "mailrules test" in body:
            recipes.append([m.group(1).strip() for m in re.finditer(r"^\s*- (?:run: )?((?:pip|mailrules) .*)$", body, re.M)])
    return recipes


def test_the_ci_recipes_install_from_the_checkout_and_their_commands_work(tmp_path):
    recipes = ci_recipe_commands()
    assert len(recipes) == 2 and recipes[0] == recipes[1], recipes
    install, *commands = recipes[0]
    assert install == "pip install ."  # built by tests/test_packaging.py; mailrules is not on the index
    for command in commands:
        args = command.split()
        assert args[0] == "mailrules", command
        result = subprocess.run([sys.executable, "-m", "mailrules", *args[1:]], cwd=REPO, capture_output=True,
                                text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
        assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"


def _reference_tables() -> dict[str, set[str]]:
    """First-column names of each table in "Rules reference", by the table's first header cell."""
    tables: dict[str, set[str]] = {}
    current = None
    for line in section("### Rules reference").splitlines():
        if not line.startswith("|"):
            current = None
            continue
        first = line.split("|")[1].strip()
        if current is None:
            current = first
            tables[current] = set()
        elif not first.startswith("---"):
            tables[current].update(re.findall(r"`([^`]+)`", first))
    return tables


@pytest.mark.parametrize("table, names", [
    ("top level", "TOP_KEYS"),
    ("account key", "ACCOUNT_KEYS"),
    ("rule key", "RULE_KEYS"),
    ("criteria key (`match:`)", "CRITERIA_KEYS"),
])
def test_the_rules_reference_lists_exactly_the_keys_the_loader_accepts(table, names):
    from mailrules import config

    assert _reference_tables()[table] == set(getattr(config, names))


def test_the_rules_reference_lists_exactly_the_built_in_actions():
    from mailrules.plugins import Registry

    assert _reference_tables()["action"] == set(Registry.load(entry_points=False).actions)

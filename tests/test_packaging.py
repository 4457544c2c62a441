"""`python -m build` makes a clean wheel and sdist of mailrules and of each plugin.

Clean: no warnings from the build backend, the version from one place (the package's
`__version__`), and what an installed wheel needs at run time inside it (the demo's rules).
Builds in an isolated environment, as `pip install .` does, so it needs the package index
(or a local mirror of setuptools).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECTS = {".": "mailrules", "plugins/notify": "mailrules_notify", "plugins/spamassassin": "mailrules_spamassassin"}


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    pytest.importorskip("build", reason="needs the 'build' package (pip install -e '.[test]')")
    out = tmp_path_factory.mktemp("dist")
    for project in PROJECTS:
        result = subprocess.run([sys.executable, "-m", "build", "-o", str(out), str(REPO / project)],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        noise = [line for line in (result.stdout + result.stderr).splitlines()
                 if ("warn" in line.lower() or "deprecat" in line.lower()) and "byte-compiling" not in line
                 and "copying" not in line and "adding '" not in line]
        assert noise == [], f"{project}: {noise}"
    return out


@pytest.mark.parametrize("project, package", PROJECTS.items())
def test_each_project_builds_a_wheel_and_an_sdist_with_its_packages_version(dist, project, package):
    init = (REPO / project / package / "__init__.py").read_text()
    version = next(line.split('"')[1] for line in init.splitlines() if line.startswith("__version__"))
    wheel = dist / f"{package}-{version}-py3-none-any.whl"
    assert wheel.exists() and (dist / f"{package}-{version}.tar.gz").exists(), sorted(os.listdir(dist))
    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read(f"{package}-{version}.dist-info/METADATA").decode()
    assert f"\nVersion: {version}\n" in metadata


def test_an_installed_wheel_finds_the_demos_rules_without_a_checkout(dist, tmp_path):
    wheel = next(dist.glob("mailrules-*.whl"))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run([sys.executable, "-c", "from mailrules.demo import default_rules_file as f; print(f())"],
                            cwd=elsewhere, env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == str(site / "mailrules" / "rules.example.yaml"), \
        result.stdout + result.stderr

"""Skip a test whose dependency is missing, unless the environment requires it: then fail.

CI sets ``MAILRULES_REQUIRE_DOVECOT``, ``MAILRULES_REQUIRE_SPAMD``, ``MAILRULES_REQUIRE_PLUGINS``
and ``MAILRULES_REQUIRE_CYRUS``, so that a missing Dovecot, spamd, plugin package or Cyrus is a
failure there instead of a quietly skipped test. On a developer's machine the same tests are
skipped, with a message naming the variable that would make the absence an error::

    from mailrules.testing.require import import_or_skip, missing

    spamassassin = import_or_skip("mailrules_spamassassin", "pip install -e plugins/spamassassin",
                                  "MAILRULES_REQUIRE_SPAMD", "MAILRULES_REQUIRE_PLUGINS")
    if find_spamd() is None:
        missing("spamd is not installed (Debian: apt-get install spamassassin)", "MAILRULES_REQUIRE_SPAMD")
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

__all__ = ["REQUIRE_CYRUS", "REQUIRE_DOVECOT", "REQUIRE_PLUGINS", "REQUIRE_SPAMD", "import_or_skip", "missing", "required_by"]

REQUIRE_DOVECOT = "MAILRULES_REQUIRE_DOVECOT"
REQUIRE_SPAMD = "MAILRULES_REQUIRE_SPAMD"
REQUIRE_PLUGINS = "MAILRULES_REQUIRE_PLUGINS"
REQUIRE_CYRUS = "MAILRULES_REQUIRE_CYRUS"


def required_by(*envs: str) -> str | None:
    """The first of `envs` that is set to something other than empty or "0", else None."""
    for env in envs:
        if os.environ.get(env, "").strip() not in ("", "0"):
            return env
    return None


def missing(message: str, *envs: str) -> NoReturn:
    """Fail (if one of `envs` is set) or skip the current test, or module at import time."""
    env = required_by(*envs)
    if env is not None:
        pytest.fail(f"{message}, and {env} is set", pytrace=False)
    names = " or ".join(f"{e}=1" for e in envs)
    pytest.skip(f"{message}; set {names} to make this an error", allow_module_level=True)


def import_or_skip(module: str, install: str, *envs: str) -> ModuleType:
    """`pytest.importorskip` that fails instead of skipping when one of `envs` is set.

    `install` says how to get the module (e.g. "pip install -e plugins/notify"). Only a
    missing module counts as absent: an ImportError raised inside the module is a failure.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module and not module.startswith(f"{exc.name}."):
            raise
    missing(f"{module} is not installed ({install})", *envs)

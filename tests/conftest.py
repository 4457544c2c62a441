"""Shared test setup.

The fixtures (``dovecot``, ``imap_user``, ``imap``, ``make_message``, ``dovecot_factory``)
come from the ``mailrules.testing.pytest_plugin`` pytest11 entry point once the package
is installed (``pip install -e .``).  Without the install (or with plugin autoload
disabled) the plugin is registered here instead.
"""

from __future__ import annotations

import pytest

PLUGIN = "mailrules.testing.pytest_plugin"


def pytest_configure(config: pytest.Config) -> None:
    pm = config.pluginmanager
    if not (pm.has_plugin("mailrules") or pm.has_plugin(PLUGIN)):
        pm.import_plugin(PLUGIN)


@pytest.fixture
def lab(dovecot, imap_user, tmp_path, monkeypatch):
    """A fresh user on the session's Dovecot, with its rules file and state directory (helpers.Lab)."""
    from helpers import Lab

    return Lab(dovecot, imap_user, tmp_path, monkeypatch)

"""docs/plugins.md's code runs: its Python blocks, in order, as one module, and its tests.

The guide is what a third-party plugin author reads instead of the source, so its examples
must work as written: every ```python block is executed (in order, in one module, as a
reader pasting them would), and every ``test_*`` function the guide defines is run with the
fixtures it asks for (against the private Dovecot). The guide's tests of `pipe` need the notify
plugin installed (``pip install -e plugins/notify``): without it they are skipped, saying so
(a failure where MAILRULES_REQUIRE_PLUGINS is set, as in CI).
"""

from __future__ import annotations

import inspect
import re
import sys
import textwrap
import types
from pathlib import Path

import pytest

from mailrules.testing.require import REQUIRE_PLUGINS, import_or_skip

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
BLOCK = re.compile(r"^( *)```python\n(.*?)^\1```", re.S | re.M)
MODULE = "mailrules_docs_example"


def guide_module() -> types.ModuleType:
    module = types.ModuleType(MODULE)
    sys.modules[MODULE] = module  # the guide's tests pass the module itself as a plugin
    for n, (_indent, code) in enumerate(BLOCK.findall(GUIDE.read_text(encoding="utf-8"))):
        exec(compile(textwrap.dedent(code), f"{GUIDE}:block{n}", "exec"), module.__dict__)  # noqa: S102
    return module


def guide_tests() -> list[str]:
    module = guide_module()
    return [name for name, fn in vars(module).items() if name.startswith("test_") and callable(fn)]


def test_every_python_block_of_the_plugin_guide_runs():
    module = guide_module()
    assert callable(module.stamp) and callable(module.is_vip)


@pytest.mark.parametrize("name", guide_tests())
def test_the_plugin_guides_tests_pass(name, request):
    fn = getattr(guide_module(), name)
    texts = [c for c in fn.__code__.co_consts if isinstance(c, str)]
    if any("pipe:" in t for t in texts):  # the guide's section 7 tests the installed notify plugin
        import_or_skip("mailrules_notify", "pip install -e plugins/notify", REQUIRE_PLUGINS)
    fn(**{arg: request.getfixturevalue(arg) for arg in inspect.signature(fn).parameters})

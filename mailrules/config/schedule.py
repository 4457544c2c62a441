"""`schedule:`: a 5-field cron expression (or a macro such as @daily) or {every: DURATION}.

Cron expressions are checked with APScheduler's own parser, in the rules file's time zone;
the day of week is rewritten as names, since APScheduler numbers days from Monday.
"""

from __future__ import annotations

import re

from yaml.nodes import MappingNode, Node, ScalarNode

from ..model import Schedule
from .context import LoadState
from .nodes import mapping_of, string_of
from .reading import Doc
from .values import parse_duration

__all__ = ["read_schedule"]

_CRON_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * sun",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_CRON_FORM = (
    "a cron expression of 5 fields (minute hour day-of-month month day-of-week, e.g. '0 3 * * *') "
    "or {every: DURATION}"
)


def _dow_number(text: str) -> int:
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text)
    if text.lower() in _DOW_NAMES:
        return _DOW_NAMES.index(text.lower())
    raise ValueError(f"day of week {text!r}: expected 0-7 (0 and 7 are Sunday) or sun..sat")


def _cron_day_of_week(field_text: str) -> str:
    """Crontab day-of-week (0 or 7 = Sunday) -> day names, which APScheduler reads the same way.

    APScheduler 3 numbers days from Monday = 0, so numbers are never passed through.
    """
    if field_text == "*":
        return "*"
    days: set[int] = set()
    for part in field_text.split(","):
        m = re.fullmatch(r"(?:(\*)|(\w+)(?:-(\w+))?)(?:/(\d+))?", part)
        if not m:
            raise ValueError(f"day of week {part!r}: expected 0-7, sun..sat, a range such as 1-5, or */N")
        step = int(m[4]) if m[4] else 1
        if step == 0:
            raise ValueError(f"day of week {part!r}: a step of 0")
        if m[1]:
            lo, hi = 0, 6
        else:
            lo = _dow_number(m[2])
            hi = _dow_number(m[3]) if m[3] else (7 if m[4] else lo)
        if lo > hi:
            raise ValueError(f"day of week {part!r}: the range goes backwards")
        days.update(d % 7 for d in range(lo, hi + 1, step))
    return ",".join(_DOW_NAMES[d] for d in sorted(days))


def _normalize_cron(expr: str, timezone: str | None) -> str:
    """Validate a 5-field cron expression; return it with the day of week as names."""
    from apscheduler.triggers.cron import CronTrigger

    text = expr.strip()
    if text.startswith("@"):
        if text.lower() not in _CRON_MACROS:
            raise ValueError(f"unknown macro {text!r} (known: {', '.join(_CRON_MACROS)})")
        text = _CRON_MACROS[text.lower()]
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(f"{len(fields)} fields")
    if not fields[2].startswith("*") and not fields[4].startswith("*"):
        raise ValueError(
            "both the day of the month and the day of the week are restricted (cron would run when "
            "either matches); restrict only one of them"
        )
    fields[4] = _cron_day_of_week(fields[4])
    normalized = " ".join(fields)
    CronTrigger.from_crontab(normalized, timezone=timezone or "UTC")
    return normalized




def read_schedule(doc: Doc, node: Node, state: LoadState) -> Schedule:
    if isinstance(node, MappingNode):
        pairs = mapping_of(doc, node, "schedule", ("every",), required=("every",))
        every_node = pairs["every"][1]
        raw = doc.value(every_node) if isinstance(every_node, ScalarNode) else None
        try:
            return Schedule(every_seconds=parse_duration(raw))
        except ValueError as exc:
            raise doc.error(every_node, f"schedule: every: {exc}, found {doc.describe(every_node)}") from None
    expr = string_of(doc, node, "schedule", _CRON_FORM)
    try:
        return Schedule(cron=_normalize_cron(expr, state.timezone))
    except ValueError as exc:
        raise doc.error(
            node, f"schedule: invalid cron expression {expr!r}: {exc} (expected {_CRON_FORM})"
        ) from None

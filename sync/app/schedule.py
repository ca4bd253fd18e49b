"""NCRONTAB, the six-field schedule of Azure Functions timer triggers (`{second} {minute} {hour} {day} {month}
{day-of-week}`), parsed for real so that a bad SYNC_SCHEDULE fails at start (E4), not when the host reads it.

The forms follow "Timer trigger for Azure Functions", NCRONTAB expressions: a value (`5`), all values (`*`), a
range (`1-3`), a set (`5,8,10`), an interval (`*/5`, `1-30/5`), and month and day-of-week names (`Jan`, `Mon`)."""
from __future__ import annotations

import re

FIELDS = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12), ("day-of-week", 0, 6))
MONTHS = {name: i for i, name in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)}
DAYS = {name: i for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
PART = re.compile(r"^(?P<range>\*|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(?P<step>\d+))?$")


class ScheduleError(ValueError):
    pass


def _value(text: str, field: str, low: int, high: int) -> int:
    names = MONTHS if field == "month" else DAYS if field == "day-of-week" else {}
    number = names.get(text.lower()) if not text.isdigit() else int(text)
    if number is None or not low <= number <= high:
        raise ScheduleError(f"{field} {text!r} is outside {low}-{high}")
    return number


def parse(expression: str) -> list[set[int]]:
    """The values each field allows; raises ScheduleError saying which field is wrong."""
    fields = expression.split()
    if len(fields) != len(FIELDS):
        raise ScheduleError(f"{len(fields)} fields instead of six")
    allowed = []
    for text, (field, low, high) in zip(fields, FIELDS, strict=True):
        values: set[int] = set()
        for part in text.split(","):
            m = PART.match(part)
            if m is None:
                raise ScheduleError(f"{field} {part!r} is not a value, range, set or interval")
            if m["range"] == "*":
                first, last = low, high
            else:
                bounds = m["range"].split("-")
                first = _value(bounds[0], field, low, high)
                last = _value(bounds[-1], field, low, high)
                if last < first:
                    raise ScheduleError(f"{field} range {m['range']!r} runs backwards")
                if len(bounds) == 1 and m["step"]:
                    last = high
            step = int(m["step"] or 1)
            if step < 1:
                raise ScheduleError(f"{field} interval must be at least 1")
            values |= set(range(first, last + 1, step))
        allowed.append(values)
    return allowed

"""G3: a preflight check's verdict, in one shape for the command line, the HTTP route and the admin page: pass, warn
or fail, what it found (ids and counts, never a person's data), what to do, and the page that explains it."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PASS, WARN, FAIL = "pass", "warn", "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: str                                           # pass | warn | fail
    found: Mapping[str, Any] = field(default_factory=dict)
    advice: str = ""                                      # what to do (empty when it passed)
    page: str = ""                                        # where it is explained

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "status": self.status, "found": dict(self.found), "advice": self.advice, "page": self.page}


def verdict(checks: Sequence[Check]) -> str:
    """The worst of the checks' statuses: a deployment is ready only when nothing failed."""
    statuses = {c.status for c in checks}
    return FAIL if FAIL in statuses else WARN if WARN in statuses else PASS

"""Calendar operations and their results: what the executor hands a Calendar, and what comes back,
classified so that `settle` can decide (M6, C5, E1-E3)."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class OpKind(str, Enum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    CANCEL = "cancel"


@dataclass(frozen=True)
class CalendarOp:
    key: str                       # the booking id: one op per booking per call
    kind: OpKind
    payload: dict[str, Any] | None = None    # create / update body (a Graph event)
    event_id: str | None = None    # update / delete / cancel
    comment: str | None = None     # cancel


class Outcome(str, Enum):
    OK = "ok"
    GONE = "gone"                         # the event no longer exists (C5, D2)
    INVALID = "invalid"                   # Graph refused this payload: skip the item with the reason
    TRANSIENT = "transient"               # throttled / 5xx / timeout after retries: left for the next cycle
    MAILBOX_UNAVAILABLE = "mailbox_unavailable"   # 403 / 404 mailbox / disabled (M6)
    ALREADY_CREATED = "already_created"   # a create whose transactionId Graph has seen: the event exists; find it by tag


@dataclass(frozen=True)
class OpResult:
    key: str
    outcome: Outcome
    event_id: str | None = None
    status: int | None = None
    code: str | None = None
    message: str | None = None

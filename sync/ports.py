"""The protocols the engine talks to. Each has an in-memory fake (sync/fakes.py) and a real implementation,
and one contract suite (tests/contract/) runs against both."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Iterable, Protocol, Sequence

from .domain import Booking, Link, Mailbox, SkippedRow


class OpKind(str, Enum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    CANCEL = "cancel"


@dataclass(frozen=True)
class CalendarOp:
    key: str                       # the booking id: one op per booking per call
    kind: OpKind
    payload: dict | None = None    # create / update body (a Graph event)
    event_id: str | None = None    # update / delete / cancel
    comment: str | None = None     # cancel


class Outcome(str, Enum):
    OK = "ok"
    GONE = "gone"                         # the event no longer exists (C5, D2)
    INVALID = "invalid"                   # Graph refused this payload: skip the item with the reason
    TRANSIENT = "transient"               # throttled / 5xx / timeout after retries: left for the next cycle
    MAILBOX_UNAVAILABLE = "mailbox_unavailable"   # 403 / 404 mailbox / disabled (M6)


@dataclass(frozen=True)
class OpResult:
    key: str
    outcome: Outcome
    event_id: str | None = None
    status: int | None = None
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class MailboxProbe:
    ok: bool
    reason: str | None = None      # stable code: mailbox_not_found, access_denied, mailbox_disabled, calendar_read_only, ...
    message: str | None = None     # a sentence a person can act on
    time_zone: str | None = None
    transient: bool = False


class Calendar(Protocol):
    async def test_mailbox(self, mailbox: str) -> MailboxProbe: ...

    async def apply(self, mailbox: str, ops: Sequence[CalendarOp]) -> dict[str, OpResult]: ...

    async def find_tagged(self, mailbox: str, environment: str, booking_id: str) -> list[str]: ...


class BookingSource(Protocol):
    environment: str

    async def read_window(self, start: datetime, end: datetime): ...

    async def read_bookings(self, ids: Iterable[str]): ...

    async def read_bookings_for_work_orders(self, work_order_ids: Iterable[str], start: datetime, end: datetime): ...

    async def read_changes(self, delta_links: dict[str, str] | None): ...

    async def read_cycle(self, delta_links: dict[str, str], slice_start: datetime | None, slice_end: datetime): ...

    async def read_booking(self, booking_id: str) -> Booking | SkippedRow | None: ...


class StateStore(Protocol):
    async def get_mailbox(self, address: str) -> Mailbox | None: ...

    async def put_mailbox(self, mailbox: Mailbox) -> None: ...

    async def links(self, mailbox: str) -> dict[str, Link]: ...

    async def put_link(self, link: Link) -> Link: ...

    async def delete_link(self, link: Link) -> None: ...

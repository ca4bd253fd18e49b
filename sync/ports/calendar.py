"""The calendar port (Graph): testing mailboxes, applying a mailbox's operations, finding events by their tag."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..core.operations import CalendarOp, OpResult


@dataclass(frozen=True)
class MailboxProbe:
    ok: bool
    reason: str | None = None      # stable code: mailbox_not_found, access_denied, mailbox_disabled, calendar_read_only, ...
    message: str | None = None     # a sentence a person can act on
    time_zone: str | None = None
    transient: bool = False
    warning: str | None = None     # writable, but something a person may want to fix (the time zone fell back to UTC)


class Calendar(Protocol):
    async def test_mailboxes(self, mailboxes: Sequence[str]) -> dict[str, MailboxProbe]: ...

    async def apply(self, mailbox: str, ops: Sequence[CalendarOp]) -> dict[str, OpResult]: ...

    async def find_tagged(self, mailbox: str, environment: str, booking_id: str) -> list[str]: ...

    async def list_events(self, mailbox: str, top: int = 50) -> list[dict[str, Any]]: ...

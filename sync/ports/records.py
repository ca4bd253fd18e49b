"""The typed records the state ports exchange: what a mailbox row, an observation, a lease and a commit are.

The engine, collect and the admin tools see these only, never a storage row. Each adapter reads its rows into
them tolerantly (E5): a field it does not know is ignored, a missing one takes its default here.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

from ..core.domain import Link, Mailbox

# The schema every stored row is written with (column `schema`); a row without one is version 1. A reader takes
# rows of any version: what it does not know it ignores, what is missing it defaults.
ROW_SCHEMA = 2

# What a stored observation that does not parse reads as: no booking_from_dict takes it, so the sync sets it aside and
# keeps it (E3), instead of stopping on it or taking it for a deletion.
UNREADABLE_OBSERVATION: Mapping[str, Any] = {"unreadable": True}

WRITE_COUNTS = ("created", "updated", "deleted", "cancelled", "unlinked", "recreated")


class MailboxFields(TypedDict, total=False):
    """The fields of a mailbox record that collect, the sync and the admin tools write besides the mailbox itself."""
    needs_initial_read: bool
    linked_count: int
    tested_at: str
    test_warning: str
    retest_until: str
    pending_mark: str
    consumed_mark: str
    pending_left: int
    last_cycle_at: str
    last_outcome: str
    last_error: str
    removals_held: bool
    set_aside_count: int
    set_aside_reason: str
    counts: dict[str, int]


@dataclass(frozen=True)
class MailboxRecord:
    """A registered mailbox and what the deployment records of it (M1-M6, G2)."""
    mailbox: Mailbox
    etag: str | None = None
    needs_initial_read: bool = False        # its next collect reads its whole window (newly enabled, moved, refiltered)
    linked_count: int | None = None         # links its last sync left (D5's deployment total); None: never counted
    tested_at: str = ""
    test_warning: str = ""
    # M8: Exchange refused the app (access denied) within the time it takes to apply a change of the app's scope; the
    # cycles test the mailbox again until then (ISO 8601; "" when nothing waits).
    retest_until: str = ""
    # Which mailboxes have work: adding observations sets a fresh `pending_mark` after their rows are written; a
    # sync records the mark it read before its observations (`consumed_mark`) and how many it kept (`pending_left`).
    pending_mark: str = ""
    consumed_mark: str = ""
    pending_left: int = 0
    last_cycle_at: str = ""
    last_outcome: str = ""
    last_error: str = ""
    removals_held: bool = False             # the deployment-wide guard held this mailbox's removals (D5)
    set_aside_count: int = 0                # rows the last sync could not plan (E3), and why
    set_aside_reason: str = ""
    counts: Mapping[str, int] = field(default_factory=dict)   # what the last sync that wrote anything did, by kind
    unreadable: str = ""                    # why the stored row does not read as a mailbox ("" when it does)

    @property
    def address(self) -> str:
        return self.mailbox.address

    @property
    def has_work(self) -> bool:
        return self.pending_mark != self.consumed_mark or self.pending_left > 0

    @property
    def syncs(self) -> bool:
        """M1: the mailbox is eligible, and its row reads (a row that does not is never synced on a guess)."""
        return not self.unreadable and self.mailbox.eligible

    def retest_due(self, now: datetime) -> bool:
        """M8: refused access within Exchange's delay for a scope change, so a cycle tests it again."""
        return (self.mailbox.test_status.value == "failure" and bool(self.retest_until)
                and datetime.fromisoformat(self.retest_until) > now)

    @property
    def filtered(self) -> bool:
        return bool(self.mailbox.filters)


@dataclass(frozen=True)
class Observation:
    """A booking's state, as collect or a webhook saw it, waiting for its mailbox's next sync."""
    booking_id: str
    booking: Mapping[str, Any] | None       # None: observed deleted (UNREADABLE_OBSERVATION: stored, but does not read)
    observed_at: str | None = None          # when it was written (ISO 8601)
    etag: str | None = None                 # the stored row's: consuming it removes only that version

    @property
    def deleted(self) -> bool:
        return self.booking is None


@dataclass(frozen=True)
class MailboxLease:
    """A mailbox's lease row as read or written: it lives with the mailbox's links, so taking it is conditioned on
    the row the sync read with them, and giving it back is part of the sync's last transaction. Released, the row
    stays (holder empty): a later claim against an older read then fails on the changed ETag."""
    holder: str
    expires: datetime
    etag: str | None

    def held_by_other(self, holder: str, now: datetime) -> bool:
        return bool(self.holder) and self.holder != holder and self.expires > now


@dataclass
class MailboxState:
    """What one sync reads of a mailbox, in one query of its partition."""
    links: dict[str, Link]
    pending: list[Observation]
    errors: set[str]                     # bookings with a recorded error
    lease: MailboxLease | None           # None: the mailbox was never leased
    # Bookings whose link row does not read (E3): the sync plans nothing for them, so a missing link can never
    # become a second create, and keeps their observations.
    unreadable_links: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class LeaseAsRead:
    """A commit made without claiming the lease first (its plan calls nothing outside the store): conditioned on the
    lease row as the sync read it (None: no row yet), held by no other holder at `now`."""
    seen: MailboxLease | None
    holder: str
    now: datetime
    ttl_s: float = 30.0                  # should the commit take the lease after all (it does not fit one transaction)


@dataclass(frozen=True)
class LeaseHeld:
    """A commit of a sync that holds the lease (None: lost meanwhile; the links still commit, the lease is left to its
    new holder); `release` gives it back in the same commit."""
    lease: MailboxLease | None
    release: bool = True


@dataclass
class MailboxCommit:
    """What a sync writes when its Graph calls are done."""
    lease: LeaseAsRead | LeaseHeld
    puts: list[Link] = field(default_factory=list)           # each matched by its ETag (or created when it has none)
    deletes: list[Link] = field(default_factory=list)
    unindex: list[Link] = field(default_factory=list)        # deleted links whose booking index row must go too
    consumed: list[Observation] = field(default_factory=list)  # removed unless a newer observation replaced them
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)   # booking id -> its outcome (a success clears)
    known_errors: set[str] = field(default_factory=set)      # the error rows the sync read (a success removes its row)


@dataclass(frozen=True)
class Cursor:
    """Per environment: the change-tracking delta links and the window horizon already read (T4)."""
    delta_links: Mapping[str, str]
    horizon: datetime | None
    etag: str | None = None

"""What the planner decides for one booking in one mailbox: one class per kind, each with the fields its
kind needs and the reason it was chosen (model: vdirsyncer's Upload / Update / Delete)."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from .domain import Booking, Link
from .reasons import Reason
from .render import RenderedEvent


class Kind(str, Enum):
    CREATE = "create"
    UPDATE = "update"
    CANCEL = "cancel"      # Graph cancel action: the event has attendees (X2)
    DELETE = "delete"
    UNLINK = "unlink"      # stop tracking the event and leave it as it is
    FORGET = "forget"      # drop a tombstone (the booking is gone for good); no Graph call
    RECOVER = "recover"    # a create was in flight when the last run stopped: find it by tag before creating again
    SKIP = "skip"


class _OfBooking:
    """An action named by the booking it writes."""
    booking: Booking

    @property
    def booking_id(self) -> str:
        return self.booking.id


class _OfLink:
    """An action named by the link it acts on."""
    link: Link

    @property
    def booking_id(self) -> str:
        return self.link.booking_id


@dataclass(frozen=True)
class Create(_OfBooking):
    """C1: a new event. `previous` is the tombstone or unlinked row it replaces (its ETag guards the intent)."""
    kind: ClassVar[Kind] = Kind.CREATE
    booking: Booking
    rendered: RenderedEvent
    generation: int
    reason: Reason
    previous: Link | None = None
    recreate: bool = False         # C5: the linked event was deleted in Outlook


@dataclass(frozen=True)
class Update(_OfBooking):
    """C2/C3: PATCH the linked event (also relinks an event that came back into scope)."""
    kind: ClassVar[Kind] = Kind.UPDATE
    booking: Booking
    link: Link
    rendered: RenderedEvent
    reason: Reason

    @property
    def generation(self) -> int:
        return self.link.generation


@dataclass(frozen=True)
class Delete(_OfLink):
    """D1, D3 (delete), C6 enhanced, X2 without attendees."""
    kind: ClassVar[Kind] = Kind.DELETE
    link: Link
    reason: Reason
    detail: str | None = None


@dataclass(frozen=True)
class Cancel(_OfLink):
    """X2: the Graph cancel action for an event with attendees (they are notified)."""
    kind: ClassVar[Kind] = Kind.CANCEL
    link: Link
    reason: Reason


@dataclass(frozen=True)
class Unlink(_OfLink):
    """D2, D3: stop tracking the event and leave it in Outlook."""
    kind: ClassVar[Kind] = Kind.UNLINK
    link: Link
    reason: Reason
    detail: str | None = None


@dataclass(frozen=True)
class Forget(_OfLink):
    """Drop a tombstone whose booking is gone for good."""
    kind: ClassVar[Kind] = Kind.FORGET
    link: Link
    reason: Reason = Reason.DELETED


@dataclass(frozen=True)
class Recover(_OfLink):
    """A create intent left by an interrupted run: look for the event by its ownership tag first."""
    kind: ClassVar[Kind] = Kind.RECOVER
    link: Link
    booking: Booking | None
    reason: Reason = Reason.CREATE_IN_FLIGHT


@dataclass(frozen=True)
class Skip:
    kind: ClassVar[Kind] = Kind.SKIP
    booking_id: str
    reason: Reason


Action = Create | Update | Delete | Cancel | Unlink | Forget | Recover | Skip
GraphAction = Create | Update | Delete | Cancel
REMOVALS = (Delete, Cancel, Unlink)

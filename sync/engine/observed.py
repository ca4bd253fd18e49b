"""A mailbox's waiting observations as the planner takes them: the bookings observed, the ids observed deleted, and
the rows set aside (E3), each with its reason."""
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from ..core.domain import Booking
from ..core.ids import is_guid
from ..core.serialize import booking_from_dict
from ..ports import Observation

NOT_A_BOOKING_ID, UNREADABLE, UNREADABLE_LINK = "not_a_booking_id", "unreadable_observation", "unreadable_link"
KEPT_ASIDE = frozenset({UNREADABLE, UNREADABLE_LINK})   # another version may read them; a newer observation replaces them
SET_ASIDE_SENTENCES = {
    UNREADABLE_LINK: "a booking's link does not read (written by another version?); its changes are kept and not synced, "
                     "so it is never created twice",
    NOT_A_BOOKING_ID: "a waiting observation is stored under a key that is not a booking id; it was removed (nothing can apply it)",
    UNREADABLE: "a waiting observation could not be read (written by another version?); it is kept, and the booking syncs "
                "with its next change",
}


@dataclass
class Observed:
    bookings: dict[str, Booking]
    deleted: set[str]
    set_aside: dict[str, str] = field(default_factory=dict)     # an observation's booking id -> why it cannot be planned


def observations(pending: Sequence[Observation], unreadable_links: Collection[str] = ()) -> Observed:
    """No single row may stop a mailbox (E3): a row under a key that is not a booking id (a planner would plan a create
    no claim can record) or one that does not read as a booking is set aside with its reason, and the rest syncs."""
    observed = Observed({}, set())
    for p in pending:
        booking_id = p.booking_id
        if not is_guid(booking_id):
            observed.set_aside[booking_id] = NOT_A_BOOKING_ID
        elif booking_id != booking_id.lower():           # no writer stores one; kept, since its id is a booking's
            observed.set_aside[booking_id] = UNREADABLE
        elif p.booking is None:
            observed.deleted.add(booking_id)
        else:
            booking = _booking(p)
            if booking is None or booking.id != booking_id:
                observed.set_aside[booking_id] = UNREADABLE
                continue
            observed.bookings[booking_id] = booking
    for booking_id in set(unreadable_links) & (set(observed.bookings) | observed.deleted):
        observed.bookings.pop(booking_id, None)         # planned without its link, it would be created a second time
        observed.deleted.discard(booking_id)
        observed.set_aside[booking_id] = UNREADABLE_LINK
    return observed


def _booking(p: Observation) -> Booking | None:
    try:
        return booking_from_dict(dict(p.booking or {}))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None

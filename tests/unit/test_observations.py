"""E3, E5: which waiting rows a sync plans, and which it sets aside (and why)."""
from __future__ import annotations

from sync.core.serialize import booking_to_dict
from sync.engine.mailbox import NOT_A_BOOKING_ID, UNREADABLE, observations
from tests.factories import booking


def _row(booking_id: str, data: dict | None, deleted: bool = False) -> dict:
    return {"booking_id": booking_id, "deleted": deleted, "booking": data, "etag": None}


def test_r_e3_rows_that_cannot_be_planned_are_set_aside_and_the_rest_are_planned():
    good, gone = booking(), booking()
    data = booking_to_dict(good)
    observed = observations([
        _row(good.id, data), _row(gone.id, None, deleted=True),
        _row(good.id + "\n", data),                                                # the webhook's old "<guid>\n"
        _row("not-a-guid", data, deleted=True),
        _row(good.id.upper(), data),                                               # a booking's id, in a case no writer uses
        _row(booking().id, {**data, "status": {**data["status"], "from_a_newer_version": 1}}),
        _row(booking().id, {k: v for k, v in data.items() if k != "start"}),
    ])
    assert list(observed.bookings) == [good.id] and observed.deleted == {gone.id}
    assert sorted(observed.set_aside.values()) == sorted([NOT_A_BOOKING_ID, NOT_A_BOOKING_ID, UNREADABLE, UNREADABLE, UNREADABLE])


def test_r_e3_an_observation_whose_body_names_another_booking_is_set_aside():
    one, other = booking(), booking()
    observed = observations([_row(one.id, booking_to_dict(other))])
    assert observed.bookings == {} and observed.set_aside == {one.id: UNREADABLE}

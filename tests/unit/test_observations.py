"""E3, E5: which waiting observations a sync plans, and which it sets aside (and why)."""
from __future__ import annotations

from sync.core.serialize import booking_to_dict
from sync.engine.observed import NOT_A_BOOKING_ID, UNREADABLE, observations
from sync.ports import UNREADABLE_OBSERVATION, Observation
from tests.factories import booking


def _row(booking_id: str, data: dict | None) -> Observation:
    return Observation(booking_id, data)


def test_r_e3_rows_that_cannot_be_planned_are_set_aside_and_the_rest_are_planned():
    good, gone = booking(), booking()
    data = booking_to_dict(good)
    observed = observations([
        _row(good.id, data), _row(gone.id, None),
        _row(good.id + "\n", data),                                                # the webhook's old "<guid>\n"
        _row("not-a-guid", None),
        _row(good.id.upper(), data),                                               # a booking's id, in a case no writer uses
        _row(booking().id, {k: v for k, v in data.items() if k != "start"}),        # no start: not a booking
        _row(booking().id, UNREADABLE_OBSERVATION),                                  # stored, but its body does not parse
    ])
    assert list(observed.bookings) == [good.id] and observed.deleted == {gone.id}
    assert sorted(observed.set_aside.values()) == sorted([NOT_A_BOOKING_ID, NOT_A_BOOKING_ID, UNREADABLE, UNREADABLE, UNREADABLE])


def test_r_e5_an_observation_a_newer_version_wrote_reads_its_known_fields_and_ignores_the_rest():
    newer, older = booking(), booking()
    data = booking_to_dict(newer)
    written_by_newer = {**data, "travel_minutes": 25, "status": {**data["status"], "from_a_newer_version": 1},
                        "location": {**data["location"], "geofence": "r=50m"}}
    written_by_older = {k: v for k, v in booking_to_dict(older).items() if k not in ("location", "modified_on", "name")}
    observed = observations([_row(newer.id, written_by_newer), _row(older.id, written_by_older)])
    assert observed.set_aside == {}
    assert observed.bookings[newer.id] == newer
    assert observed.bookings[older.id].id == older.id and observed.bookings[older.id].location.work_location is None


def test_r_e3_an_observation_whose_body_names_another_booking_is_set_aside():
    one, other = booking(), booking()
    observed = observations([_row(one.id, booking_to_dict(other))])
    assert observed.bookings == {} and observed.set_aside == {one.id: UNREADABLE}

"""What activities pass to each other and the store keeps: a booking as a plain dict and back, unchanged."""
from __future__ import annotations

import json
from dataclasses import asdict, replace

from hypothesis import given
from hypothesis import strategies as st

from sync.core.domain import BookingLocation
from sync.core.serialize import booking_from_dict, booking_to_dict
from tests.factories import NOW, booking, work_order


def _asdict_form(b) -> dict:
    d = asdict(b)
    d["start"], d["end"] = b.start.isoformat(), b.end.isoformat()
    d["modified_on"] = b.modified_on.isoformat() if b.modified_on else None
    return d


@given(st.booleans(), st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)), st.text(max_size=20))
def test_a_booking_round_trips_through_json_and_is_the_dict_asdict_would_make(with_work_order, latitude, summary):
    b = booking(work_order=work_order(summary=summary) if with_work_order else None, modified_on=NOW,
                location=BookingLocation(690970000, latitude, None))
    as_dict = booking_to_dict(b)
    assert as_dict == _asdict_form(b)
    assert booking_from_dict(json.loads(json.dumps(as_dict))) == b
    assert booking_to_dict(replace(b, modified_on=None))["modified_on"] is None

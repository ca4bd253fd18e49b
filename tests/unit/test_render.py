"""C1 rendering: only real Graph event properties, escaped and bounded text, stable fingerprints (E3)."""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtenant.graph import EVENT_TYPE, validate
from sync.core.domain import Address, BookingLocation
from sync.core.render import MAX_FIELD, TAG_BOOKING, TAG_ENVIRONMENT, render, transaction_id
from tests.factories import ENV, booking, work_order

HOSTILE = ["<script>alert(1)</script>", "\"'><img src=x onerror=alert(1)>", "x" * 10_000, "مرحبا بالعالم 🔧🚐", "",
           "line1\nline2\x00\x07", "') or 1 eq 1 --"]


def test_r_c1_event_fields():
    b = booking()
    event = render(b, "tech@contoso.example", "Pacific Standard Time", 0).payload
    assert event["subject"] == "00042 Boiler not heating"
    assert event["start"] == {"dateTime": b.start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}
    assert event["importance"] == "normal" and event["showAs"] == "busy" and event["attendees"] == []
    assert event["location"]["address"]["city"] == "Seattle" and event["location"]["coordinates"] == {"latitude": 47.6, "longitude": -122.3}
    body = event["body"]["content"]
    for text in ("00042", "High", "Repair", "Boiler not heating", "Bring filters", "Fabrikam", "Ana Lee", "Pacific Standard Time"):
        assert text in body
    tags = {p["id"]: p["value"] for p in event["singleValueExtendedProperties"]}
    assert tags == {TAG_ENVIRONMENT: ENV, TAG_BOOKING: b.id}


def test_r_c1_subject_falls_back_to_work_order_type():
    b = booking(work_order=work_order(primary_incident_type=None))
    assert render(b, "t@x", "UTC", 0).payload["subject"] == "00042 Repair"


def test_r_c1_unknown_time_zone_is_shown_as_utc():
    assert "(UTC)" in render(booking(), "t@x", "Mars/Olympus", 0).payload["body"]["content"]


def test_r_c1_transaction_id_is_stable_and_varies_with_each_part():
    base = transaction_id(ENV, "b", "m@x", 0)
    assert base == transaction_id(ENV.upper(), "B", "M@X", 0)
    assert len({base, transaction_id(ENV, "b2", "m@x", 0), transaction_id(ENV, "b", "n@x", 0), transaction_id(ENV, "b", "m@x", 1),
                transaction_id("https://other.crm.dynamics.com", "b", "m@x", 0)}) == 5


def test_r_c2_trigger_fingerprint_covers_the_time_window_and_the_bookings_own_location_only():
    b = booking()
    r = render(b, "t@x", "UTC", 0)
    assert render(replace(b, start=b.start + timedelta(minutes=30)), "t@x", "UTC", 0).trigger_fingerprint != r.trigger_fingerprint
    for location in (BookingLocation(690970000), BookingLocation(None, 47.6, None), BookingLocation(None, None, -122.3)):
        assert render(replace(b, location=location), "t@x", "UTC", 0).trigger_fingerprint != r.trigger_fingerprint
    # the work order's service address is a work order field (C3): in the content, not in the trigger
    moved = replace(b, work_order=replace(b.work_order, address=Address(line1="2 Elm", city="Tacoma")))
    assert render(moved, "t@x", "UTC", 0).trigger_fingerprint == r.trigger_fingerprint
    assert render(moved, "t@x", "UTC", 0).content_fingerprint != r.content_fingerprint
    summary = replace(b, work_order=replace(b.work_order, summary="other"))
    assert render(summary, "t@x", "UTC", 0).trigger_fingerprint == r.trigger_fingerprint
    assert render(summary, "t@x", "UTC", 0).content_fingerprint != r.content_fingerprint


@pytest.mark.parametrize("text", HOSTILE)
def test_r_e3_hostile_text_is_escaped_bounded_and_valid(text):
    wo = work_order(number=text[:20] or "1", summary=text, service_account=text, reported_by_contact=text, priority=text,
                    address=Address(name=text, line1=text, city=text))
    event = render(booking(work_order=wo), "t@x", "UTC", 0).payload
    validate(EVENT_TYPE, event)  # only real Graph event properties (the emulator checks against the OpenAPI subset)
    body = event["body"]["content"]
    assert "<script>" not in body and "onerror=alert(1)>" not in body.replace("&gt;", ">").split("<td>")[0]
    assert "<img" not in body
    assert len(body) < 9 * MAX_FIELD + 2000
    assert len(event["subject"]) <= 255
    assert "\x00" not in json.dumps(event)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=3000))
def test_r_e3_any_text_never_breaks_out_of_its_cell(text):
    body = render(booking(work_order=work_order(summary=text)), "t@x", "UTC", 0).payload["body"]["content"]
    # The only tags in the body are the ones the renderer writes.
    import re
    assert set(re.findall(r"<(/?[a-z]+)", body)) <= {"html", "/html", "body", "/body", "table", "/table", "tr", "/tr", "th", "/th",
                                                    "td", "/td", "br", "p", "/p"}


def test_r_c2_update_sends_what_a_booking_can_change_and_keeps_the_technicians_settings():
    rendered = render(booking(), "t@x", "UTC", 0)
    update = rendered.payload_for_update()
    assert set(update) == {"subject", "start", "end", "location", "body"}
    assert all(update[k] == rendered.payload[k] for k in update)
    validate(EVENT_TYPE, update)

"""The Graph calendar client against the emulator, through the real msgraph-sdk (C1, C2, C5, X2, D1, E1-E3, M2, M6)."""
from __future__ import annotations

import asyncio

import pytest

from sync.adapters.credentials import LoopbackDevCredential
from sync.adapters.graph import GraphCalendar
from sync.core.render import TAG_BOOKING, render
from sync.ports import CalendarOp, OpKind, Outcome
from tests.factories import NOW, booking

pytestmark = pytest.mark.stack
ADDRESS = "tech@contoso.example"


def calendar(stack, **kw) -> GraphCalendar:
    return GraphCalendar(stack.emulator_url + "/v1.0", LoopbackDevCredential(), **kw)


def add_mailbox(stack, address=ADDRESS, **extra):
    stack.control("POST", "/mailboxes", [{"address": address, "displayName": "Tech", "timeZone": "Pacific Standard Time", **extra}])


def events(stack, address=ADDRESS) -> list[dict]:
    return stack.control("GET", f"/mailboxes/{address}/events")["value"]


def create_op(b, generation=0) -> CalendarOp:
    return CalendarOp(b.id, OpKind.CREATE, render(b, ADDRESS, "UTC", generation).payload)


async def test_r_m2_mailbox_test_reads_calendar_and_time_zone_when_mailbox_settings_are_granted(tenant):
    add_mailbox(tenant, roles=["Calendars.ReadWrite", "MailboxSettings.Read"])
    async with calendar(tenant) as cal:
        probe = await cal.test_mailbox(ADDRESS)
        bulk = await cal.test_mailboxes([ADDRESS])
    assert probe.ok and probe.time_zone == "Pacific Standard Time" and probe.warning is None
    assert bulk[ADDRESS] == probe


async def test_r_m2_under_the_documented_least_privilege_grant_a_writable_mailbox_succeeds_with_a_warning(tenant):
    """The grant of docs/deploy.md (Exchange RBAC "Application Calendars.ReadWrite") does not include
    MailboxSettings.Read; the time zone read gets 403, which must not turn a writable mailbox into a Failure."""
    add_mailbox(tenant)                                                   # the emulator's default: exactly that grant
    add_mailbox(tenant, "readonly@contoso.example", roles=["Calendars.Read"])
    async with calendar(tenant) as cal:
        one = await cal.test_mailbox(ADDRESS)
        bulk = await cal.test_mailboxes([ADDRESS, "readonly@contoso.example"])
        written = await cal.apply(ADDRESS, [create_op(booking())])
    for probe in (one, bulk[ADDRESS]):
        assert probe.ok and probe.time_zone == "UTC" and probe.warning.startswith("mailbox_settings_not_granted")
    assert next(iter(written.values())).outcome == Outcome.OK
    assert bulk["readonly@contoso.example"].warning       # read-only access is not detected without a write (a known gap)


async def test_r_m6_missing_denied_and_disabled_mailboxes_are_permanent_with_actionable_reasons(tenant):
    add_mailbox(tenant, "outside@contoso.example", in_scope=False)
    add_mailbox(tenant, "gone@contoso.example", state="disabled")
    async with calendar(tenant) as cal:
        missing = await cal.test_mailbox("nobody@contoso.example")
        denied = await cal.test_mailbox("outside@contoso.example")
        disabled = await cal.test_mailbox("gone@contoso.example")
        write = await cal.apply("outside@contoso.example", [create_op(booking())])
    assert (missing.ok, missing.reason) == (False, "mailbox_not_found")
    assert (denied.ok, denied.reason) == (False, "access_denied") and "RBAC" in denied.message
    assert (disabled.ok, disabled.reason) == (False, "mailbox_disabled")
    assert not any(p.transient for p in (missing, denied, disabled))
    assert next(iter(write.values())).outcome == Outcome.MAILBOX_UNAVAILABLE


@pytest.mark.parametrize("answer", ["400", "409", "201"])
async def test_r_c1_create_twice_with_same_transaction_id_leaves_one_event(tenant, answer):
    """A repeated transactionId: the emulator's default is 400 ErrorDuplicateTransactionId (docs/emulator-fidelity.md);
    409 and 201-with-the-event are switched on through the control API. Each means "already created"."""
    add_mailbox(tenant)
    tenant.control("PUT", "/graph/limits", {"duplicate_transaction": answer})
    b = booking()
    async with calendar(tenant) as cal:
        first = await cal.apply(ADDRESS, [create_op(b)])
        second = await cal.apply(ADDRESS, [create_op(b)])
        found = await cal.find_tagged(ADDRESS, b.environment, b.id)
    assert first[b.id].outcome == Outcome.OK
    if answer == "201":
        assert second[b.id].outcome == Outcome.OK and second[b.id].event_id == first[b.id].event_id
    else:
        assert (second[b.id].outcome, second[b.id].status, second[b.id].code) == (Outcome.ALREADY_CREATED, int(answer),
                                                                                   "ErrorDuplicateTransactionId")
    assert len(events(tenant)) == 1 and found == [first[b.id].event_id]


async def test_r_c1_create_lost_on_the_wire_is_found_by_ownership_tag_not_duplicated(tenant):
    add_mailbox(tenant)
    b = booking()
    tenant.control("PUT", "/faults", {"rules": [{"service": "graph", "path": r"/\$batch", "action": "drop_after_apply", "times": 1}]})
    async with calendar(tenant) as cal:
        result = await cal.apply(ADDRESS, [create_op(b)])
        found = await cal.find_tagged(ADDRESS, b.environment, b.id)
    # The first answer was lost after Graph applied it; the retry carried the same transactionId, which Graph
    # answers as a repeat (the engine then links the event by its tag: settle's ALREADY_CREATED).
    assert result[b.id].outcome in (Outcome.OK, Outcome.ALREADY_CREATED)
    assert len(events(tenant)) == 1 and found == [events(tenant)[0]["id"]]
    tags = {p["id"]: p["value"] for p in events(tenant)[0]["singleValueExtendedProperties"]}
    assert tags[TAG_BOOKING] == b.id


async def test_find_tagged_ignores_untagged_and_other_environments(tenant):
    add_mailbox(tenant)
    b = booking()
    tenant.control("POST", f"/mailboxes/{ADDRESS}/events", {"subject": "Dentist", "start": {"dateTime": "2026-11-24T09:00:00", "timeZone": "UTC"},
                                                            "end": {"dateTime": "2026-11-24T10:00:00", "timeZone": "UTC"}})
    async with calendar(tenant) as cal:
        await cal.apply(ADDRESS, [create_op(b)])
        assert len(await cal.find_tagged(ADDRESS, b.environment, b.id)) == 1
        assert await cal.find_tagged(ADDRESS, "https://other.crm.dynamics.com", b.id) == []
        assert await cal.find_tagged(ADDRESS, b.environment, booking().id) == []


async def test_r_c2_update_in_place_and_r_c5_gone_event_is_reported(tenant):
    add_mailbox(tenant)
    b = booking()
    async with calendar(tenant) as cal:
        event_id = (await cal.apply(ADDRESS, [create_op(b)]))[b.id].event_id
        moved = render(b.__class__(**{**b.__dict__, "start": b.start.replace(hour=15), "end": b.end.replace(hour=17)}), ADDRESS, "UTC", 0)
        updated = await cal.apply(ADDRESS, [CalendarOp(b.id, OpKind.UPDATE, moved.payload, event_id)])
        assert updated[b.id].outcome == Outcome.OK
        assert events(tenant)[0]["start"]["dateTime"].startswith(b.start.strftime("%Y-%m-%dT15:00"))
        tenant.control("DELETE", f"/mailboxes/{ADDRESS}/events/{event_id}")   # the owner deletes it in Outlook
        gone = await cal.apply(ADDRESS, [CalendarOp(b.id, OpKind.UPDATE, moved.payload, event_id)])
    assert gone[b.id].outcome == Outcome.GONE


async def test_r_x2_cancel_with_attendees_and_r_d1_delete_without(tenant):
    add_mailbox(tenant)
    meeting, appointment = booking(), booking()
    payload = render(meeting, ADDRESS, "UTC", 0).payload
    payload["attendees"] = [{"emailAddress": {"address": "helper@contoso.example", "name": "Helper"}, "type": "required"}]
    async with calendar(tenant) as cal:
        created = await cal.apply(ADDRESS, [CalendarOp(meeting.id, OpKind.CREATE, payload), create_op(appointment)])
        result = await cal.apply(ADDRESS, [
            CalendarOp(meeting.id, OpKind.CANCEL, event_id=created[meeting.id].event_id, comment="Booking canceled"),
            CalendarOp(appointment.id, OpKind.DELETE, event_id=created[appointment.id].event_id)])
        again = await cal.apply(ADDRESS, [CalendarOp(appointment.id, OpKind.DELETE, event_id=created[appointment.id].event_id)])
    assert {r.outcome for r in result.values()} == {Outcome.OK}
    assert events(tenant) == []
    assert tenant.control("GET", f"/mailboxes/{ADDRESS}/cancellations")["value"][0]["comment"] == "Booking canceled"
    assert again[appointment.id].outcome == Outcome.GONE


async def test_r_e1_batch_of_20_with_two_throttled_items_completes_all_20(tenant):
    add_mailbox(tenant)
    tenant.control("PUT", "/faults", {"rules": [{"service": "graph", "method": "POST", "path": "/events$", "action": "status",
                                                  "status": 429, "retry_after": 1, "skip": 5, "times": 2}]})
    bookings = [booking() for _ in range(20)]
    async with calendar(tenant) as cal:
        result = await cal.apply(ADDRESS, [create_op(b) for b in bookings])
        requests = cal.http_requests
    assert {r.outcome for r in result.values()} == {Outcome.OK}
    assert len(events(tenant)) == 20
    # A throttled item holds back the rest of its chain (424); each throttle costs one more batch, not 20 requests.
    assert requests == 3
    log = tenant.control("GET", "/log?service=graph")["value"]
    assert sum(1 for e in log if e["status"] == 429) == 2
    assert sum(1 for e in log if e["status"] == 201) == 20


async def test_r_e2_never_more_than_4_concurrent_requests_per_mailbox(tenant):
    add_mailbox(tenant)
    tenant.control("PUT", "/faults", {"latency_ms": {"graph": 20}})
    bookings = [booking() for _ in range(200)]
    async with calendar(tenant) as cal:
        result = await cal.apply(ADDRESS, [create_op(b) for b in bookings])
        requests = cal.http_requests
    assert {r.outcome for r in result.values()} == {Outcome.OK} and len(events(tenant)) == 200
    stats = tenant.control("GET", "/stats")
    assert stats["max_concurrency_per_mailbox"][ADDRESS] == 4 and stats["throttled"] == 0
    assert requests == 10


async def test_r_e3_invalid_payload_is_skipped_with_reason_others_go_on(tenant):
    add_mailbox(tenant)
    good, bad = booking(), booking()
    payload = render(bad, ADDRESS, "UTC", 0).payload
    payload["end"] = {"dateTime": "2000-01-01T00:00:00", "timeZone": "UTC"}
    async with calendar(tenant) as cal:
        result = await cal.apply(ADDRESS, [CalendarOp(bad.id, OpKind.CREATE, payload), create_op(good)])
        assert result[bad.id].outcome == Outcome.INVALID and result[bad.id].status == 400
        # its failure held back the next item in the chain; that item was sent again and succeeded
        assert result[good.id].outcome == Outcome.OK


async def test_r_e1_persistent_5xx_is_left_transient_within_bounded_time(tenant):
    add_mailbox(tenant)
    tenant.control("PUT", "/faults", {"rules": [{"service": "graph", "path": "/events$", "action": "status", "status": 503, "retry_after": 0}]})
    async with calendar(tenant, max_wait_s=3) as cal:
        result = await cal.apply(ADDRESS, [create_op(booking())])
    assert next(iter(result.values())).outcome == Outcome.TRANSIENT


async def test_r_e1_a_timed_out_create_is_retried_without_a_duplicate(tenant):
    add_mailbox(tenant)
    b = booking()
    tenant.control("PUT", "/faults", {"rules": [{"service": "graph", "method": "POST", "path": "/events$", "action": "latency",
                                                  "delay_ms": 1500, "times": 1}]})
    async with calendar(tenant, timeout_s=0.5, max_retries=0) as cal:
        result = await cal.apply(ADDRESS, [create_op(b)])
    await asyncio.sleep(1.2)                       # the first, slow request still lands on the server
    assert result[b.id].outcome in (Outcome.OK, Outcome.ALREADY_CREATED)     # whichever of the two Graph saw first
    assert len(events(tenant)) == 1
    creates = [e for e in tenant.control("GET", "/log?service=graph")["value"] if e["method"] == "POST" and e["path"].endswith("/events")]
    assert len(creates) == 2                       # the timed-out attempt and the retry both reached Graph


async def test_r_e1_errors_of_the_recovery_look_up_are_classified_like_any_other(tenant):
    """The look-up by ownership tag that crash recovery makes: throttled -> transient (the mailbox stays retryable),
    a refused mailbox -> mailbox unavailable with an actionable reason (M6)."""
    from sync.ports import MailboxUnavailable, TransientError
    add_mailbox(tenant)
    tenant.control("PUT", "/faults", {"rules": [{"service": "graph", "method": "GET", "path": "/events$", "action": "status",
                                                 "status": 429, "retry_after": 0, "code": "ApplicationThrottled"}]})
    async with calendar(tenant) as cal:
        with pytest.raises(TransientError):
            await cal.find_tagged(ADDRESS, "https://contoso.crm.dynamics.com", "00000000-0000-0000-0000-000000000001")
    tenant.control("DELETE", "/faults")
    add_mailbox(tenant, "denied@contoso.example", in_scope=False)
    async with calendar(tenant) as cal:
        with pytest.raises(MailboxUnavailable) as refused:
            await cal.find_tagged("denied@contoso.example", "https://contoso.crm.dynamics.com", "00000000-0000-0000-0000-000000000001")
        assert refused.value.reason.startswith("access_denied")
        with pytest.raises(MailboxUnavailable):
            await cal.list_events("nobody@contoso.example")


async def test_a_burst_of_concurrent_mailboxes_reuses_its_connections(tenant):
    """A worker runs several mailbox syncs at once (host.json); the second burst must find the first burst's
    connections kept alive, not close and reopen them (a TLS handshake each against Graph)."""
    mailboxes = [f"tech{i:02d}@contoso.example" for i in range(32)]
    for address in mailboxes:
        add_mailbox(tenant, address)
    async with calendar(tenant) as cal:
        async def burst() -> int:
            before = cal.transport.connections_opened
            await asyncio.gather(*(cal.apply(a, [create_op(booking())]) for a in mailboxes))
            return cal.transport.connections_opened - before

        first = await burst()
        second = await burst()
    assert first > 20                                          # more in use at once than httpx's own pool keeps alive
    assert second == 0                                         # none closed, none new


async def test_r_m2_a_token_endpoint_that_fails_leaves_the_mailbox_to_test_again_not_failed(tenant):
    """The managed identity's token endpoint fails now and then on Functions; the credential is the seam (the endpoint
    cannot run here) and refuses its first tokens as azure-identity does. The probe is auth_failed and transient, so
    test & enable leaves the mailbox's status as it was (6c040fe: Failure, until someone tested again), and the
    next test passes."""
    from azure.core.exceptions import ClientAuthenticationError

    from sync.adapters.memory import MemoryState
    from sync.admin.mailboxes import MailboxAdmin
    from sync.core.domain import MailboxTestStatus

    class FailsTwice(LoopbackDevCredential):                      # the bulk $batch, then its one-by-one retry
        left = 2

        async def get_token(self, *scopes, **kw):
            if FailsTwice.left:
                FailsTwice.left -= 1
                raise ClientAuthenticationError("ManagedIdentityCredential authentication unavailable")
            return await super().get_token(*scopes, **kw)

    add_mailbox(tenant)
    state = MemoryState()
    async with GraphCalendar(tenant.emulator_url + "/v1.0", FailsTwice()) as graph:
        admin = MailboxAdmin(state.mailboxes, graph)
        await admin.register(ADDRESS, "https://contoso.crm.dynamics.com", approved=True)
        [first] = await admin.test_and_enable([ADDRESS], NOW)
        assert (first.ok, first.reason) == (False, "auth_failed") and "again" in (first.message or "")
        assert (await state.mailboxes.get(ADDRESS)).mailbox.test_status == MailboxTestStatus.NOT_TESTED
        [second] = await admin.test_and_enable([ADDRESS], NOW)
    assert second.ok and (await state.mailboxes.get(ADDRESS)).mailbox.test_status == MailboxTestStatus.SUCCESS

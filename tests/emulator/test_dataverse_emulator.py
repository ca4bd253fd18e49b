"""The emulated Dataverse Web API answers as Microsoft documents it (shared/reference/dataverse/examples)."""
from __future__ import annotations

import json
import time
import uuid
from urllib.parse import quote, unquote

import httpx
import pytest

from tests.conftest import shared_reference

pytestmark = pytest.mark.stack

FORMATTED = "@OData.Community.Display.V1.FormattedValue"


def seed(tenant, entity_set: str, rows: list[dict]) -> list[dict]:
    return tenant.control("POST", f"/orgs/default/tables/{entity_set}", rows)["value"]


def seed_bookings(tenant, n: int) -> list[dict]:
    wo = seed(tenant, "msdyn_workorders", [{"msdyn_name": "00042"}])[0]
    return seed(tenant, "bookableresourcebookings", [
        {"name": f"b{i}", "starttime": f"2026-11-{10 + i % 10:02d}T09:00:00Z", "endtime": f"2026-11-{10 + i % 10:02d}T10:00:00Z",
         "_msdyn_workorder_value": wo["msdyn_workorderid"] if i % 2 else None, "statecode": (i % 3 == 0 and 1) or 0}
        for i in range(n)])


def test_request_without_bearer_token_is_refused(tenant):
    resp = httpx.get(tenant.emulator_url + "/api/data/v9.2/bookableresourcebookings")
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer authorization_uri=")


def test_select_with_formatted_values_has_documented_shape(tenant, dataverse):
    doc = json.loads((shared_reference() / "dataverse/examples/select.2-formatted-values.json").read_text())
    status = seed(tenant, "bookingstatuses", [{"name": "Scheduled", "status": 2, "msdyn_fieldservicestatus": 690970000}])[0]
    seed(tenant, "bookableresourcebookings", [{"name": "b", "starttime": "2026-11-23T09:00:00Z", "endtime": "2026-11-23T10:00:00Z",
                                               "_bookingstatus_value": status["bookingstatusid"]}])
    prefer = doc["request"]["headers"]["Prefer"]
    resp = dataverse.get("bookableresourcebookings", params={"$select": "name,_bookingstatus_value,statecode,starttime"},
                         headers={"Prefer": prefer})
    assert resp.status_code == 200
    assert resp.headers["Preference-Applied"] == doc["response"]["headers"]["Preference-Applied"]
    row = resp.json()["value"][0]
    assert row["@odata.etag"].startswith('W/"')
    assert row["_bookingstatus_value" + FORMATTED] == "Scheduled"
    assert row["statecode" + FORMATTED] == "Active"
    assert row["starttime" + FORMATTED] == "11/23/2026 9:00 AM"
    assert "bookableresourcebookingid" in row  # primary key returned unasked, as documented
    documented = doc["response"]["body"]["value"][0]
    assert {k.split("@")[1] for k in documented if "@" in k[1:]} == {k.split("@")[1] for k in row if "@" in k[1:]}


def test_unknown_property_in_select_is_a_400_naming_it(dataverse):
    resp = dataverse.get("bookableresourcebookings", params={"$select": "name,nonsense"})
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["code"] == "0x80060888"
    assert "nonsense" in err["message"] and "bookableresourcebooking" in err["message"]


def test_filter_forms_the_client_sends(tenant, dataverse):
    rows = seed_bookings(tenant, 10)
    ids = [r["bookableresourcebookingid"] for r in rows]

    def names(flt: str) -> set[str]:
        resp = dataverse.get("bookableresourcebookings", params={"$select": "name", "$filter": flt})
        assert resp.status_code == 200, resp.text
        return {r["name"] for r in resp.json()["value"]}

    assert names("statecode eq 0 and _msdyn_workorder_value ne null") == {"b1", "b5", "b7"}
    assert names("starttime ge 2026-11-18T00:00:00Z or name eq 'b0'") == {"b0", "b8", "b9"}
    assert names(f"Microsoft.Dynamics.CRM.In(PropertyName='bookableresourcebookingid',PropertyValues=['{ids[2]}','{ids[4]}'])") == {"b2", "b4"}
    assert names("name eq 'it''s'") == set()
    assert names("msdyn_workorder/msdyn_name eq '00042'") == {"b1", "b3", "b5", "b7", "b9"}
    assert dataverse.get("bookableresourcebookings", params={"$filter": "name eq"}).status_code == 400
    # Query functions name columns; a lookup's _x_value property is refused (reports from the field of Dataverse
    # answering 400 "... doesn't contain attribute with Name = '_x_value'"); `eq ... or` is the documented form.
    wo = rows[1]["_msdyn_workorder_value"]
    refused = dataverse.get("bookableresourcebookings", params={
        "$select": "name", "$filter": f"Microsoft.Dynamics.CRM.In(PropertyName='_msdyn_workorder_value',PropertyValues=['{wo}'])"})
    assert refused.status_code == 400 and "_msdyn_workorder_value" in refused.json()["error"]["message"]
    assert names(f"(_msdyn_workorder_value eq {wo} or _msdyn_workorder_value eq {ids[0]})") == {"b1", "b3", "b5", "b7", "b9"}


def test_expand_nested_single_valued_navigation(tenant, dataverse):
    prio = seed(tenant, "msdyn_priorities", [{"msdyn_name": "High"}])[0]
    wo = seed(tenant, "msdyn_workorders", [{"msdyn_name": "00077", "_msdyn_priority_value": prio["msdyn_priorityid"]}])[0]
    seed(tenant, "bookableresourcebookings", [{"name": "b", "_msdyn_workorder_value": wo["msdyn_workorderid"]}])
    resp = dataverse.get("bookableresourcebookings", params={
        "$select": "name", "$expand": "msdyn_workorder($select=msdyn_name;$expand=msdyn_priority($select=msdyn_name)),Resource($select=name)"})
    assert resp.status_code == 200, resp.text
    row = resp.json()["value"][0]
    assert row["msdyn_workorder"]["msdyn_name"] == "00077"
    assert row["msdyn_workorder"]["msdyn_priority"]["msdyn_name"] == "High"
    assert row["Resource"] is None
    bad = dataverse.get("bookableresourcebookings", params={"$expand": "WorkOrder"})
    assert bad.status_code == 400 and "WorkOrder" in bad.json()["error"]["message"]


def test_paging_with_maxpagesize_and_next_link(tenant, dataverse):
    seed_bookings(tenant, 7)
    doc = json.loads((shared_reference() / "dataverse/examples/paging.1-first-page.json").read_text())
    seen, pages, url, params = [], 0, "bookableresourcebookings", {"$select": "name"}
    while url:
        resp = dataverse.get(url, params=params, headers={"Prefer": "odata.maxpagesize=3"})
        assert resp.status_code == 200
        assert resp.headers["Preference-Applied"] == "odata.maxpagesize=3"
        body = resp.json()
        assert set(body) <= set(doc["response"]["body"]) | {"@odata.nextLink"}
        seen += [r["name"] for r in body["value"]]
        pages += 1
        url, params = body.get("@odata.nextLink"), None
        if url:
            assert "$skiptoken=" in url and unquote(url).count("pagenumber=") == 1
    assert pages == 3
    assert sorted(seen) == sorted(f"b{i}" for i in range(7))


@pytest.mark.parametrize("tracking", [False, True])
def test_the_next_page_of_a_list_sees_a_row_changed_after_the_first(tenant, dataverse, tracking):
    """The emulator keeps a list's matching rows for its next pages only while no row changes: a booking renamed
    after page 1 is answered on page 2 as a list made afresh answers it (out of the filter; for change tracking,
    past the version the read started at), and the pages of an unchanged list are the same either way. Learn,
    "Page results using Web API" (odata.maxpagesize, @odata.nextLink), and "Use change tracking to synchronize data
    with external systems"; a kept list is a speed-up only, never an answer Dataverse would not give."""
    seed_bookings(tenant, 6)
    if tracking:
        params, prefer = {"$select": "name"}, {"Prefer": "odata.track-changes,odata.maxpagesize=3"}
    else:
        params, prefer = {"$select": "name", "$filter": "startswith(name,'b')", "$orderby": "name"}, {"Prefer": "odata.maxpagesize=3"}

    def pages(between=None) -> list[list[str]]:
        out, url, query = [], "bookableresourcebookings", params
        while url:
            body = dataverse.get(url, params=query, headers=prefer).json()
            out.append(sorted(r["name"] for r in body["value"]))
            url, query = body.get("@odata.nextLink"), None
            if between and len(out) == 1:
                between()
        return out

    unchanged = pages()
    assert unchanged == pages() and sorted(n for page in unchanged for n in page) == [f"b{i}" for i in range(6)] and len(unchanged) == 2
    ids = {r["name"]: r["bookableresourcebookingid"] for r in dataverse.get("bookableresourcebookings", params={"$select": "name"}).json()["value"]}
    later = unchanged[1][0]
    renamed = pages(lambda: tenant.control("PATCH", f"/orgs/default/tables/bookableresourcebookings/{ids[later]}", {"name": "x"}))
    assert renamed[0] == unchanged[0] and renamed[1] == [n for n in unchanged[1] if n != later]


def test_a_paged_delta_gives_every_change_and_every_deletion_once_across_page_boundaries(tenant, dataverse):
    """The pages of a delta hold the changed rows, then the $deletedEntity entries; a page may hold both (Learn, "Use
    change tracking to synchronize data with external systems" and "Page results using OData": odata.maxpagesize,
    @odata.nextLink, the deltaLink on the last page). The emulator projects only the page asked for."""
    rows = seed_bookings(tenant, 6)
    first = dataverse.get("bookableresourcebookings", params={"$select": "name"}, headers={"Prefer": "odata.track-changes"})
    delta_link = first.json()["@odata.deltaLink"]
    for r in rows[:3]:
        tenant.control("PATCH", f"/orgs/default/tables/bookableresourcebookings/{r['bookableresourcebookingid']}", {"name": "changed"})
    for r in rows[3:]:
        tenant.control("DELETE", f"/orgs/default/tables/bookableresourcebookings/{r['bookableresourcebookingid']}")
    changed, deleted, sizes, url = [], [], [], delta_link
    while url:
        body = dataverse.get(url, headers={"Prefer": "odata.track-changes,odata.maxpagesize=2"}).json()
        sizes.append(len(body["value"]))
        changed += [r["bookableresourcebookingid"] for r in body["value"] if "name" in r]
        deleted += [r["id"] for r in body["value"] if r.get("@odata.context", "").endswith("$deletedEntity")]
        url = body.get("@odata.nextLink")
    assert sizes == [2, 2, 2] and body.get("@odata.deltaLink")
    assert sorted(changed) == sorted(r["bookableresourcebookingid"] for r in rows[:3])
    assert sorted(deleted) == sorted(r["bookableresourcebookingid"] for r in rows[3:])


def test_change_tracking_initial_delta_and_deleted_entities(tenant, dataverse):
    doc = json.loads((shared_reference() / "dataverse/examples/change-tracking.2-delta.json").read_text())
    rows = seed_bookings(tenant, 3)
    first = dataverse.get("bookableresourcebookings", params={"$select": "name"}, headers={"Prefer": "odata.track-changes"})
    assert first.status_code == 200
    assert "odata.track-changes" in first.headers["Preference-Applied"]
    delta_link = first.json()["@odata.deltaLink"]
    assert "$deltatoken=" in delta_link and len(first.json()["value"]) == 3

    empty = dataverse.get(delta_link)        # "An empty JSON response is returned if no table changes have occurred"
    assert empty.status_code == 200 and empty.json() == {}

    tenant.control("PATCH", f"/orgs/default/tables/bookableresourcebookings/{rows[0]['bookableresourcebookingid']}", {"name": "moved"})
    tenant.control("DELETE", f"/orgs/default/tables/bookableresourcebookings/{rows[1]['bookableresourcebookingid']}")
    seed(tenant, "bookableresourcebookings", [{"name": "new"}])
    delta = dataverse.get(delta_link).json()
    assert delta["@odata.context"].endswith("/$delta")
    changed = {r["name"] for r in delta["value"] if "name" in r}
    deleted = [r for r in delta["value"] if r.get("@odata.context", "").endswith("$deletedEntity")]
    assert changed == {"moved", "new"}
    assert [d["id"] for d in deleted] == [rows[1]["bookableresourcebookingid"]]
    documented_deleted = doc["response"]["body"]["value"][1]
    assert set(deleted[0]) == set(documented_deleted) and deleted[0]["reason"] == "deleted"
    assert delta["@odata.deltaLink"] != delta_link


@pytest.mark.parametrize("option", ["$filter", "$expand", "$top", "$orderby"])
def test_change_tracking_refuses_unsupported_query_options(dataverse, option):
    value = {"$filter": "statecode eq 0", "$expand": "Resource", "$top": "5", "$orderby": "name"}[option]
    resp = dataverse.get("bookableresourcebookings", params={"$select": "name", option: value}, headers={"Prefer": "odata.track-changes"})
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == f'The "{option}" query parameter isn\'t supported when Change Tracking is enabled.'


def test_expired_delta_token_is_refused_with_the_documented_message(tenant, dataverse):
    seed_bookings(tenant, 1)
    link = dataverse.get("bookableresourcebookings", params={"$select": "name"}, headers={"Prefer": "odata.track-changes"}).json()["@odata.deltaLink"]
    tenant.control("POST", "/orgs/default/expire-change-tracking")
    resp = dataverse.get(link)
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == "Version stamp associated with the client has expired. Please perform a full sync."


def test_dop_hint_header_and_service_protection_429(tenant, dataverse):
    tenant.control("PUT", "/orgs/default/limits", {"dop_hint": 7, "request_budget": 3, "budget_window_s": 2})
    statuses = []
    for _ in range(4):
        resp = dataverse.get("bookingstatuses")
        statuses.append(resp.status_code)
    assert statuses == [200, 200, 200, 429]
    assert resp.headers["x-ms-dop-hint"] == "7"
    assert int(resp.headers["Retry-After"]) >= 1
    assert resp.json()["error"]["code"] == "0x80072322"
    time.sleep(2.1)
    assert dataverse.get("bookingstatuses").status_code == 200


def test_single_row_by_id_and_guid_validation(tenant, dataverse):
    row = seed_bookings(tenant, 1)[0]
    got = dataverse.get(f"bookableresourcebookings({row['bookableresourcebookingid']})", params={"$select": "name"})
    assert got.status_code == 200 and got.json()["name"] == "b0" and got.json()["@odata.context"].endswith("/$entity")
    assert dataverse.get(f"bookableresourcebookings({uuid.uuid4()})").status_code == 404
    assert dataverse.get("bookableresourcebookings(not-a-guid)").status_code == 400


def test_injected_faults_and_latency_apply_to_dataverse(tenant, dataverse):
    tenant.control("PUT", "/faults", {"latency_ms": {"dataverse": 150}, "rules": [
        {"service": "dataverse", "action": "status", "status": 503, "retry_after": 2, "times": 1}]})
    started = time.monotonic()
    first = dataverse.get("bookingstatuses")
    assert first.status_code == 503 and first.headers["Retry-After"] == "2"
    assert dataverse.get("bookingstatuses").status_code == 200
    assert time.monotonic() - started >= 0.3
    stats = tenant.control("GET", "/stats")
    assert stats["services"]["dataverse"]["by_status"] == {"503": 1, "200": 1}


def test_control_api_rejects_unknown_columns(tenant):
    with pytest.raises(Exception) as err:
        tenant.control("POST", "/orgs/default/tables/bookableresourcebookings", [{"not_a_column": 1}])
    assert "400" in str(err.value)


def test_batch_of_gets_is_answered_in_order_with_per_request_status(tenant, dataverse):
    seed_bookings(tenant, 2)
    boundary = "batch_4e8a1c2d"
    base = tenant.emulator_url + "/api/data/v9.2/"

    def part(url, prefer=None):
        lines = ["--" + boundary, "Content-Type: application/http", "Content-Transfer-Encoding: binary", "", f"GET {url} HTTP/1.1",
                 "Accept: application/json"] + ([f"Prefer: {prefer}"] if prefer else []) + ["", ""]
        return "\r\n".join(lines)

    body = part(base + "bookableresourcebookings?$select=name", "odata.track-changes") + part(base + "bookingstatuses?$select=nonsense") \
        + part("msdyn_workorders?$select=msdyn_name") + f"--{boundary}--"
    resp = dataverse.post("$batch", content=body.encode(), headers={"Content-Type": f"multipart/mixed; boundary={boundary}",
                                                                  "Prefer": "odata.continue-on-error"})   # every part answered
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("multipart/mixed; boundary=batchresponse_")
    from sync.adapters.dataverse import parse_batch_response
    answers = parse_batch_response(resp.headers["Content-Type"], resp.content)
    assert [status for status, _ in answers] == [200, 400, 200]
    assert len(answers[0][1]["value"]) == 2 and "@odata.deltaLink" in answers[0][1]
    assert "nonsense" in answers[1][1]["error"]["message"]
    stats = tenant.control("GET", "/stats")["services"]["dataverse"]
    assert stats["requests"] == 1 and stats["operations"] == 3
    bad = dataverse.post("$batch", content=b"x", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400


def _batch(parts: list[str]) -> tuple[str, bytes]:
    boundary = "batch_e1"
    lines = []
    for url in parts:
        lines += [f"--{boundary}", "Content-Type: application/http", "Content-Transfer-Encoding: binary", "", f"GET {url} HTTP/1.1",
                  "Accept: application/json", "", ""]
    lines.append(f"--{boundary}--")
    return f"multipart/mixed; boundary={boundary}", "\r\n".join(lines).encode()


def test_batch_stops_at_the_first_failing_part_unless_continue_on_error(dataverse):
    """Microsoft Learn, "Execute batch operations using the Web API", Handling errors: "When an error occurs for a
    request within a batch, the error for that request will be returned for the batch request and more requests
    won't be processed. You can use the Prefer: odata.continue-on-error request header to specify that more
    requests be processed when errors occur. The batch request will return 200 OK and individual response errors
    will be returned in the batch response body.\""""
    from sync.adapters.dataverse import parse_batch_response
    content_type, body = _batch(["/api/data/v9.2/bookingstatuses?$select=name", "/api/data/v9.2/nosuchtables",
                                 "/api/data/v9.2/territories?$select=name"])
    stopped = dataverse.post("$batch", content=body, headers={"Content-Type": content_type})
    assert stopped.status_code == 404                                    # the failing request's error is the batch's answer
    answers = parse_batch_response(stopped.headers["Content-Type"], stopped.content)
    assert [status for status, _ in answers] == [200, 404], "no request after the failing one was processed"
    assert answers[-1][1]["error"]["code"]
    carried_on = dataverse.post("$batch", content=body, headers={"Content-Type": content_type, "Prefer": "odata.continue-on-error"})
    assert carried_on.status_code == 200 and carried_on.headers["Preference-Applied"] == "odata.continue-on-error"
    assert [status for status, _ in parse_batch_response(carried_on.headers["Content-Type"], carried_on.content)] == [200, 404, 200]


def _id_chain_url(known: str, terms: int) -> str:
    ids = [str(uuid.uuid4()) for _ in range(terms - 1)] + [known]
    return "bookableresourcebookings?$select=name&$filter=" + quote(" or ".join(f"bookableresourcebookingid eq {i}" for i in ids))


def test_urls_are_read_up_to_the_documented_limits_and_refused_past_them(tenant, dataverse):
    """Learn, "Compose HTTP requests and handle errors", Maximum URL length: 32 KB for a request, 64 KB for one sent
    inside a $batch body. (The answer past a limit is the emulator's guess: 414.)"""
    from sync.adapters.dataverse import parse_batch_response
    known = seed_bookings(tenant, 1)[0]["bookableresourcebookingid"]
    long, too_long, batch_only = (_id_chain_url(known, n) for n in (300, 440, 800))
    assert 8_190 < len(long) < 32_768 < len(too_long) < len(batch_only) < 65_536
    resp = dataverse.get(long)
    assert resp.status_code == 200 and [r["bookableresourcebookingid"] for r in resp.json()["value"]] == [known]
    refused = dataverse.get(too_long)
    assert refused.status_code == 414 and refused.json()["error"]["code"]
    in_batch = "/api/data/v9.2/" + batch_only
    content_type, body = _batch([in_batch, in_batch + "x" * (65_537 - len(in_batch))])
    answers = parse_batch_response(*(lambda r: (r.headers["Content-Type"], r.content))(
        dataverse.post("$batch", content=body, headers={"Content-Type": content_type, "Prefer": "odata.continue-on-error"})))
    assert [status for status, _ in answers] == [200, 414]
    assert [r["bookableresourcebookingid"] for r in answers[0][1]["value"]] == [known]


def test_or_chains_of_ids_answer_exactly_the_rows_named_with_or_without_more_conditions(tenant, dataverse):
    """The emulator's shortcut for `id eq a or id eq b ...` (no full-table scan) must not change an answer."""
    rows = seed_bookings(tenant, 12)
    ids = [r["bookableresourcebookingid"] for r in rows]
    chain = " or ".join(f"bookableresourcebookingid eq {i.upper() if n % 2 else i}" for n, i in enumerate(ids[:5]))
    got = dataverse.get("bookableresourcebookings", params={"$filter": chain, "$select": "name"}).json()["value"]
    assert sorted(r["bookableresourcebookingid"] for r in got) == sorted(ids[:5])
    active = dataverse.get("bookableresourcebookings", params={"$filter": f"({chain}) and statecode eq 0", "$select": "name"}).json()["value"]
    assert sorted(r["bookableresourcebookingid"] for r in active) == sorted(r["bookableresourcebookingid"] for r in rows[:5] if r["statecode"] == 0)
    mixed = dataverse.get("bookableresourcebookings", params={"$filter": f"bookableresourcebookingid eq {ids[0]} or name eq 'b7'"}).json()["value"]
    assert sorted(r["name"] for r in mixed) == sorted(["b0", "b7"])
    # The shortcut answers as the full evaluation does (a term on another column turns the shortcut off): also for
    # a literal that reads as a date-time, which the emulator's comparison equates with other spellings of the
    # instant, where lower-cased text does not. Whether Dataverse would is not the point: the shortcut must not
    # change the emulator's answer.
    seed(tenant, "bookableresourcebookings", [{"name": "2026-11-10T09:00:00+00:00"}])
    for expression in (chain, "name eq '2026-11-10T09:00:00Z' or name eq 'b1'"):
        answers = [sorted(r["bookableresourcebookingid"] for r in dataverse.get(
            "bookableresourcebookings", params={"$filter": f, "$select": "name"}).json()["value"]) for f in (expression, f"{expression} or statecode eq 99")]
        assert answers[0] == answers[1] and answers[0]


@pytest.mark.parametrize("flt", ["nosuchcolumn eq 1", "Resource/nosuchcolumn eq 'x'",
                                 "Microsoft.Dynamics.CRM.In(PropertyName='_msdyn_workorder_value',PropertyValues=['00000000-0000-0000-0000-000000000001'])",
                                 "statecode eq 0 or nosuchcolumn eq 1"])
def test_a_filter_naming_what_the_table_lacks_is_refused_before_any_row_is_read(dataverse, flt):
    """Dataverse checks a query against the table's metadata, not row by row: on an empty table, and past a short-circuit
    (`x or bad`), a filter naming a column the table lacks is 400, as it is on a full one (Learn, "Filter rows", and
    the field report of Microsoft.Dynamics.CRM.In refusing a lookup's _x_value property)."""
    answer = dataverse.get("bookableresourcebookings", params={"$select": "name", "$filter": flt})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] in ("0x80060888", "0x80041103")

"""Every request the product sends, checked against Microsoft's published reference (../shared/reference): each
Graph call's path, method, query options and body properties against the Graph OpenAPI subset, and each Dataverse
query's entity set, columns, navigation properties and filtered columns against the column reference. Runs the
demo org, then a cycle with moves, cancels, deletes and reassignments, then a diagnosis and a calendar listing."""
from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, unquote

import pytest

from sync.admin.diagnose import diagnose
from sync.app.clients import Clients
from sync.app.settings import load
from sync.local.cycle import run_cycle
from tests.conftest import shared_reference
from tests.dvseed import iso
from tests.stack_helpers import enable_all_mailboxes

pytestmark = pytest.mark.stack
API = "/api/data/v9.2/"
# Not in the vendored column reference, and documented elsewhere on Microsoft Learn (the standard territory
# table: entity set `territories`, primary name `name`); read only to check sync filter values (D5).
OUTSIDE_THE_REFERENCE = {"territories": {"name", "territoryid"}}
OPERATORS = r"\s(?:eq|ne|lt|le|gt|ge)\s"


def _graph_reference() -> dict:
    return json.loads((shared_reference() / "graph/graph_v1.0_subset.openapi.json").read_text())


def _properties(doc: dict, schema: dict) -> set[str]:
    if "$ref" in schema:
        return _properties(doc, doc["components"]["schemas"][schema["$ref"].split("/")[-1]])
    found = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        found |= _properties(doc, part)
    return found


def graph_findings(entries: list[dict]) -> list[str]:
    doc = _graph_reference()
    templates = [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", re.escape(p).replace(r"\{", "{").replace(r"\}", "}")) + "$"), p)
                 for p in doc["paths"]]
    parameters = doc["components"].get("parameters", {})
    findings = []
    for e in entries:
        method = "post" if e["method"] == "POST-BATCH" else e["method"].lower()
        template = next((p for rx, p in templates if rx.match(unquote(e["path"]))), None)
        if template is None or method not in doc["paths"][template]:
            findings.append(f"graph {e['method']} {e['path']}: no such operation in the reference")
            continue
        operation = doc["paths"][template][method]
        allowed = set()
        for p in operation.get("parameters", []):
            allowed.add(parameters[p["$ref"].split("/")[-1]]["name"] if "$ref" in p else p["name"])
        used = {k for k, _ in parse_qsl(e.get("query") or "", keep_blank_values=True)}
        if used - allowed:
            findings.append(f"graph {method} {template}: query options {sorted(used - allowed)} not in {sorted(allowed)}")
        body = e.get("body")
        schema = (((operation.get("requestBody") or {}).get("content") or {}).get("application/json") or {}).get("schema")
        if isinstance(body, dict) and schema is not None and template != "/$batch":
            extra = set(body) - _properties(doc, schema)
            if extra:
                findings.append(f"graph {method} {template}: body properties {sorted(extra)} not in the reference")
    return findings


def _select(value: str) -> list[str]:
    return [c for c in value.split(",") if c]


def _expand_items(value: str) -> list[tuple[str, str]]:
    """Top-level $expand items: (navigation property, its options)."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(value + ","):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            item = value[start:i]
            name, _, options = item.partition("(")
            items.append((name, options[:-1] if options.endswith(")") else options))
            start = i + 1
    return [i for i in items if i[0]]


def _check_dataverse_query(tables: dict, table: dict, name: str, options: dict[str, str], where: str, findings: list[str]) -> None:
    columns = set(table["web_api_properties"]) | {table["primary_id"]}
    for column in _select(options.get("$select", "")):
        if column not in columns:
            findings.append(f"{where}: $select {column} is not a column of {name}")
    for nav, inner in _expand_items(options.get("$expand", "")):
        target = table["navigation_properties"].get(nav)
        if target is None:
            findings.append(f"{where}: $expand {nav} is not a navigation property of {name}")
            continue
        inner_options = dict(part.split("=", 1) for part in re.split(r";(?![^(]*\))", inner) if "=" in part)
        _check_dataverse_query(tables, tables[target["target"]], target["target"], inner_options, where, findings)
    for identifier in re.findall(r"([A-Za-z_][\w/]*)" + OPERATORS, options.get("$filter", "")):
        head = identifier.split("/")[0]
        if head not in columns and head not in table["navigation_properties"]:
            findings.append(f"{where}: $filter names {identifier}, not a column of {name}")
    if "Microsoft.Dynamics.CRM.In(PropertyName='_" in options.get("$filter", ""):
        findings.append(f"{where}: a query function names a lookup's _x_value property")


def dataverse_findings(entries: list[dict]) -> list[str]:
    tables = json.loads((shared_reference() / "dataverse/columns.json").read_text())["tables"]
    by_set = {t["entity_set"]: (logical, t) for logical, t in tables.items()}
    findings = []
    for e in entries:
        if e["method"] == "POST-BATCH" or API not in e["path"]:
            continue
        segment = e["path"].split(API, 1)[1]
        entity_set = re.sub(r"\(.*\)$", "", segment)
        options = dict(parse_qsl(e.get("query") or "", keep_blank_values=True))
        if entity_set == "WhoAmI" or "$deltatoken" in options or "$skiptoken" in options:
            continue                                           # service-made links: the product follows them as given
        if entity_set in OUTSIDE_THE_REFERENCE:
            extra = set(_select(options.get("$select", ""))) - OUTSIDE_THE_REFERENCE[entity_set]
            findings += [f"dataverse {entity_set}: $select {sorted(extra)}"] if extra else []
            continue
        if entity_set not in by_set:
            findings.append(f"dataverse {e['method']} {entity_set}: no such entity set in the reference")
            continue
        logical, table = by_set[entity_set]
        _check_dataverse_query(tables, table, logical, options, f"dataverse {entity_set}", findings)
    return findings


async def test_every_request_of_the_demo_and_a_busy_second_cycle_is_in_microsofts_reference(tenant, table_prefix, monkeypatch):
    summary = tenant.control("POST", "/demo", {"technicians": 8, "bookings": 80})
    for key, value in {**tenant.environment(), "STATE_TABLE_PREFIX": table_prefix, "SYNC_PROFILE": "enhanced"}.items():
        monkeypatch.setenv(key, value)
    settings = load()
    tenant.control("DELETE", "/log")
    await enable_all_mailboxes(settings)
    first = await run_cycle(settings)
    assert first["totals"].get("created")

    rows = [r for r in tenant.control("GET", "/orgs/default/tables/bookableresourcebookings")["value"]
            if r.get("_msdyn_workorder_value") and r.get("statecode") == 0]
    now = datetime.now(UTC)
    future = [r for r in rows if r["starttime"] > iso(now + timedelta(hours=2)) and r["starttime"] < iso(now + timedelta(days=10))]
    statuses = {r["name"]: r["bookingstatusid"] for r in tenant.control("GET", "/orgs/default/tables/bookingstatuses")["value"]}
    resources = sorted({r["_resource_value"] for r in rows})
    for r in future[:4]:                                                                  # moved (C2)
        start = now + timedelta(days=3, hours=len(r["name"]) % 5)
        tenant.control("PATCH", f"/orgs/default/tables/bookableresourcebookings/{r['bookableresourcebookingid']}",
                       {"starttime": iso(start), "endtime": iso(start + timedelta(hours=1)), "msdyn_latitude": 47.1})
    for r in future[4:6]:                                                                 # canceled (X2)
        tenant.control("PATCH", f"/orgs/default/tables/bookableresourcebookings/{r['bookableresourcebookingid']}",
                       {"_bookingstatus_value": statuses.get("Canceled")})
    for r in future[6:8]:                                                                 # deleted (D1)
        tenant.control("DELETE", f"/orgs/default/tables/bookableresourcebookings/{r['bookableresourcebookingid']}")
    for r in future[8:10]:                                                                # reassigned (C6)
        other = next(x for x in resources if x != r["_resource_value"])
        tenant.control("PATCH", f"/orgs/default/tables/bookableresourcebookings/{r['bookableresourcebookingid']}",
                       {"_resource_value": other})
    second = await run_cycle(settings)
    assert {"updated", "deleted"} <= set(second["totals"]), second["totals"]
    async with Clients(settings) as rt:
        await diagnose(future[0]["bookableresourcebookingid"], rt.source(settings.environments[0]), rt.store, settings.sync, now)
        await rt.calendar.list_events(summary["mailboxes"][0])

    entries = tenant.control("GET", "/log")["value"]
    graph = [e for e in entries if e["service"] == "graph" and e["status"] != 401]
    dataverse = [e for e in entries if e["service"] == "dataverse"]
    assert len(graph) > 50 and len(dataverse) > 5
    assert all(e.get("headers", {}).get("Authorization", "Bearer <redacted>") == "Bearer <redacted>" for e in entries)
    assert any(e["kind"] == "batch-item" and e.get("body") for e in graph), "batch parts are logged whole"
    findings = graph_findings(graph) + dataverse_findings(dataverse)
    assert findings == [], "\n".join(findings[:20])

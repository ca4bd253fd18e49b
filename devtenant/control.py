"""The emulator's control API (`/_control/...`): what tests, the demo and benchmarks use to shape the tenant.

No authentication: the emulator binds to loopback only. See the README's "Local tenant emulator".
"""
from __future__ import annotations

import time
import uuid
from dataclasses import fields
from datetime import datetime
from typing import Any

from aiohttp import web

from . import demo
from .graph import GraphError, GraphService
from .schema import DATAVERSE
from .tenant import HOME_TENANT, Directory, FaultRule, Mailbox, Tenant, scope_now

PREFIX = "/_control"
SCOPE_DELAY_S = 1800.0           # Exchange: "between 30 minutes and 2 hours" (the shortest)


def _bad(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


class ControlApi:
    def __init__(self, tenant: Tenant, graph: GraphService):
        self.tenant, self.graph = tenant, graph

    def routes(self) -> list[web.RouteDef]:
        p = PREFIX
        return [
            web.get(p + "/health", self.health),
            web.post(p + "/reset", self.reset),
            web.get(p + "/orgs/{org}/tables/{set}", self.list_rows),
            web.post(p + "/orgs/{org}/tables/{set}", self.upsert_rows),
            web.patch(p + "/orgs/{org}/tables/{set}/{id}", self.update_row),
            web.delete(p + "/orgs/{org}/tables/{set}/{id}", self.delete_row),
            web.post(p + "/orgs/{org}/expire-change-tracking", self.expire_tokens),
            web.put(p + "/orgs/{org}/change-tracking", self.set_change_tracking),
            web.post(p + "/orgs/{org}/webhooks", self.register_webhook),
            web.get(p + "/orgs/{org}/webhooks", self.webhook_status),
            web.put(p + "/orgs/{org}/limits", self.org_limits),
            web.get(p + "/tenants", self.list_tenants),
            web.post(p + "/tenants", self.add_tenant),
            web.patch(p + "/tenants/{tid}", self.update_tenant),
            web.post(p + "/mailboxes", self.add_mailboxes),
            web.get(p + "/mailboxes", self.list_mailboxes),
            web.patch(p + "/mailboxes/{mailbox}", self.update_mailbox),
            web.get(p + "/mailboxes/{mailbox}/events", self.mailbox_events),
            web.post(p + "/mailboxes/{mailbox}/events", self.add_personal_event),
            web.delete(p + "/mailboxes/{mailbox}/events/{event}", self.owner_deletes_event),
            web.post(p + "/mailboxes/{mailbox}/events/{event}/move", self.owner_moves_event),
            web.get(p + "/mailboxes/{mailbox}/cancellations", self.cancellations),
            web.put(p + "/graph/limits", self.graph_limits),
            web.put(p + "/faults", self.set_faults),
            web.delete(p + "/faults", self.clear_faults),
            web.get(p + "/log", self.log),
            web.delete(p + "/log", self.clear_log),
            web.get(p + "/stats", self.stats),
            web.post(p + "/demo", self.load_demo),
        ]

    async def health(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def reset(self, _: web.Request) -> web.Response:
        self.tenant.reset()
        return web.json_response({"status": "reset"})

    # --- Dataverse rows ---------------------------------------------------------------------------
    def _table(self, request: web.Request):
        table = DATAVERSE.by_entity_set.get(request.match_info["set"])
        if table is None:
            raise web.HTTPNotFound(text=f"unknown entity set {request.match_info['set']}")
        return self.tenant.org(request.match_info["org"]), table

    @staticmethod
    def _check_columns(table, row: dict) -> str | None:
        unknown = [k for k in row if k not in table.web_api_properties and k not in ("createdon", "modifiedon", "versionnumber")]
        return f"unknown properties for {table.entity_set}: {', '.join(sorted(unknown))}" if unknown else None

    async def list_rows(self, request: web.Request) -> web.Response:
        org, table = self._table(request)
        return web.json_response({"value": list(org.rows[table.logical_name].values())})

    async def upsert_rows(self, request: web.Request) -> web.Response:
        org, table = self._table(request)
        body = await request.json()
        rows = body if isinstance(body, list) else [body]
        for row in rows:
            problem = self._check_columns(table, row)
            if problem:
                return _bad(problem)
        saved = []
        for row in rows:
            pk = row.get(table.primary_id)
            before = org.rows[table.logical_name].get(str(pk).lower()) if pk else None
            saved.append(org.upsert(table.logical_name, row))
            await self._notify(org, table.logical_name, "Update" if before else "Create", saved[-1], dict(before) if before else None)
        return web.json_response({"value": saved}, status=201)

    async def update_row(self, request: web.Request) -> web.Response:
        org, table = self._table(request)
        row_id = request.match_info["id"].lower()
        if row_id not in org.rows[table.logical_name]:
            return _bad("no such row", 404)
        body = await request.json()
        problem = self._check_columns(table, body)
        if problem:
            return _bad(problem)
        before = dict(org.rows[table.logical_name][row_id])
        saved = org.upsert(table.logical_name, {**body, table.primary_id: row_id})
        await self._notify(org, table.logical_name, "Update", saved, before)
        return web.json_response(saved)

    async def delete_row(self, request: web.Request) -> web.Response:
        org, table = self._table(request)
        row_id = request.match_info["id"].lower()
        before = org.rows[table.logical_name].get(row_id)
        if not org.delete(table.logical_name, row_id):
            return _bad("no such row", 404)
        await self._notify(org, table.logical_name, "Delete", before, before)
        return web.Response(status=204)

    async def _notify(self, org, table: str, message: str, row: dict, before: dict | None) -> None:
        """Registered service endpoints hear about booking changes, as Dataverse webhook steps post them."""
        if table == "bookableresourcebooking":
            org.webhooks.notify(org.name, message, row, before)

    async def register_webhook(self, request: web.Request) -> web.Response:
        org = self.tenant.org(request.match_info["org"])
        body = await request.json()
        if not isinstance(body, dict) or not str(body.get("url", "")).startswith("http"):
            return _bad("a webhook needs a url; optional auth ({type: WebhookKey|HttpHeader|HttpQueryString, value|values}), "
                        "drop (lose the next N), size_exceeded, delay_ms")
        # The domain name Dataverse sends as x-ms-dynamics-organization: the emulator's orgs share one host, so its
        # host and the org's path (the product matches an environment URL with a path that way).
        body.setdefault("organization", f"{request.host}/orgs/{org.name}")
        try:
            return web.json_response(org.webhooks.register(body), status=201)
        except ValueError as exc:
            return _bad(str(exc))

    async def webhook_status(self, request: web.Request) -> web.Response:
        return web.json_response(self.tenant.org(request.match_info["org"]).webhooks.status())

    async def expire_tokens(self, request: web.Request) -> web.Response:
        org = self.tenant.org(request.match_info["org"])
        org.min_valid_version = org.next_version()
        return web.json_response({"min_valid_version": org.min_valid_version})

    async def set_change_tracking(self, request: web.Request) -> web.Response:
        """{"table": LOGICAL_NAME, "enabled": false}: the table answers requests for its changes with 0x80072491.
        (Dataverse cannot turn tracking off once on; this models an environment where it was never turned on.)"""
        org = self.tenant.org(request.match_info["org"])
        body = await request.json()
        table = str(body.get("table", ""))
        if table not in org.rows:
            return _bad(f"unknown table {table!r}")
        (org.untracked.add if body.get("enabled") is False else org.untracked.discard)(table)
        return web.json_response({"untracked": sorted(org.untracked)})

    async def org_limits(self, request: web.Request) -> web.Response:
        org = self.tenant.org(request.match_info["org"])
        body = await request.json()
        for key in ("dop_hint", "request_budget", "budget_window_s", "max_concurrent"):
            if key in body:
                setattr(org, key, body[key])
        return web.json_response({k: getattr(org, k) for k in ("dop_hint", "request_budget", "budget_window_s", "max_concurrent")})

    # --- mailboxes --------------------------------------------------------------------------------
    async def add_mailboxes(self, request: web.Request) -> web.Response:
        body = await request.json()
        out = []
        for m in body if isinstance(body, list) else [body]:
            if str(m.get("tenant", HOME_TENANT)).lower() not in self.tenant.graph.directories:
                return _bad(f"unknown tenant {m.get('tenant')}: add it with POST /_control/tenants first")
            mailbox = self.tenant.graph.add(Mailbox(id=str(m.get("id") or uuid.uuid4()).lower(), address=m["address"],
                                                    display_name=m.get("displayName", m["address"]),
                                                    time_zone=m.get("timeZone", "UTC"), state=m.get("state", "enabled"),
                                                    in_scope=m.get("in_scope", True), tenant_id=str(m.get("tenant", HOME_TENANT)).lower()))
            if "roles" in m:
                mailbox.roles = set(m["roles"])
            out.append({"id": mailbox.id, "address": mailbox.address})
        return web.json_response({"value": out}, status=201)

    # --- Entra tenants ------------------------------------------------------------------------------
    @staticmethod
    def _directory_json(d: Directory) -> dict:
        return {"id": d.id, "home": d.id == HOME_TENANT, "consented": d.consented, "federation_trusted": d.federation_trusted}

    async def list_tenants(self, _: web.Request) -> web.Response:
        return web.json_response({"value": [self._directory_json(d) for d in self.tenant.graph.directories.values()]})

    async def add_tenant(self, request: web.Request) -> web.Response:
        body = await request.json()
        tid = str(body.get("id") or uuid.uuid4()).lower()
        directory = self.tenant.graph.directories.setdefault(tid, Directory(tid))
        directory.consented = bool(body.get("consented", directory.consented))
        directory.federation_trusted = bool(body.get("federation_trusted", directory.federation_trusted))
        return web.json_response(self._directory_json(directory), status=201)

    async def update_tenant(self, request: web.Request) -> web.Response:
        """Grant or revoke the app's admin consent in a tenant, or break its federated trust."""
        directory = self.tenant.graph.directories.get(request.match_info["tid"].lower())
        if directory is None:
            return _bad("no such tenant", 404)
        body = await request.json()
        for name in ("consented", "federation_trusted"):
            if name in body:
                setattr(directory, name, bool(body[name]))
        return web.json_response(self._directory_json(directory))

    def _mailbox(self, request: web.Request) -> Mailbox:
        mailbox = self.tenant.graph.find(request.match_info["mailbox"])
        if mailbox is None:
            raise web.HTTPNotFound(text="no such mailbox")
        return mailbox

    async def list_mailboxes(self, _: web.Request) -> web.Response:
        return web.json_response({"value": [{"id": m.id, "address": m.address, "tenant": m.tenant_id, "timeZone": m.time_zone, "state": m.state,
                                              "in_scope": m.in_scope, "roles": sorted(m.roles), "events": len(m.events)}
                                             for m in self.tenant.graph.mailboxes.values()]})

    async def update_mailbox(self, request: web.Request) -> web.Response:
        mailbox = self._mailbox(request)
        body = await request.json()
        for key, attr in (("state", "state"), ("timeZone", "time_zone")):
            if key in body:
                setattr(mailbox, attr, body[key])
        if "in_scope" in body:
            # M8: Exchange applies a scope change after 30 minutes to 2 hours; `scope_delay_s` (default 1800) sets when
            # it lands here, and 0 applies it at once (a test's shortcut, as Test-ServicePrincipalAuthorization sees it).
            delay = float(body.get("scope_delay_s", SCOPE_DELAY_S))
            if delay <= 0:
                mailbox.in_scope, mailbox.scope_change = bool(body["in_scope"]), None
            else:
                mailbox.scope_change = (bool(body["in_scope"]), time.monotonic() + delay)
        if "roles" in body:
            mailbox.roles = set(body["roles"])
        return web.json_response({"id": mailbox.id, "state": mailbox.state, "in_scope": scope_now(mailbox),
                                  "roles": sorted(mailbox.roles), "scope_change_pending": mailbox.scope_change is not None})

    async def mailbox_events(self, request: web.Request) -> web.Response:
        mailbox = self._mailbox(request)
        events = []
        for e in sorted(mailbox.events.values(), key=lambda e: (e["_start"], e["id"])):
            # Named by their immutable ids, the ids the product holds (it asks for them on every request: C9); the
            # default id, which a move changes, rides along.
            rendered = {**self.graph.render(mailbox, e, {"$expand": "singleValueExtendedProperties"}, {"Prefer": 'IdType="ImmutableId"'}),
                        "defaultId": e["id"]}
            events.append(rendered)
        return web.json_response({"value": events})

    async def add_personal_event(self, request: web.Request) -> web.Response:
        mailbox = self._mailbox(request)
        try:
            status, _, body = self.graph.create_event(mailbox, await request.json(), {})
        except GraphError as err:
            return _bad(err.message)
        return web.json_response(body, status=status)

    async def owner_deletes_event(self, request: web.Request) -> web.Response:
        from .graph import find_event
        mailbox = self._mailbox(request)
        event = find_event(mailbox, request.match_info["event"])
        if event is None:
            return _bad("no such event", 404)
        del mailbox.events[event["id"]]
        return web.Response(status=204)

    async def owner_moves_event(self, request: web.Request) -> web.Response:
        """The mailbox's owner drags an event into another calendar ({"calendar": NAME}, default "Other")."""
        from .graph import move_event
        mailbox = self._mailbox(request)
        body = await request.json() if request.can_read_body else {}
        moved = move_event(mailbox, request.match_info["event"], str((body or {}).get("calendar") or "Other"))
        if moved is None:
            return _bad("no such event", 404)
        return web.json_response({"id": moved["id"], "immutableId": moved["_immutable"]})

    async def cancellations(self, request: web.Request) -> web.Response:
        return web.json_response({"value": self._mailbox(request).cancellations})

    async def graph_limits(self, request: web.Request) -> web.Response:
        body = await request.json()
        g = self.tenant.graph
        if "duplicate_transaction" in body and str(body["duplicate_transaction"]) not in ("400", "409", "201"):
            return web.json_response({"error": "duplicate_transaction is 400, 409 or 201"}, status=400)
        keys = ("mailbox_concurrency", "mailbox_budget", "mailbox_window_s", "duplicate_transaction")
        for key in keys:
            if key in body:
                setattr(g, key, str(body[key]) if key == "duplicate_transaction" else body[key])
        return web.json_response({k: getattr(g, k) for k in keys})

    # --- faults and observation ---------------------------------------------------------------------
    async def set_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        allowed = {f.name for f in fields(FaultRule)} - {"hits", "seen"}
        rules = []
        for raw in body.get("rules", []):
            unknown = set(raw) - allowed
            if unknown or raw.get("action") not in ("status", "latency", "drop_after_apply"):
                return _bad(f"bad fault rule {raw!r}: action must be status, latency or drop_after_apply; unknown keys {sorted(unknown)}")
            rules.append(FaultRule(**raw))
        self.tenant.faults = rules
        if "latency_ms" in body:
            self.tenant.latency_ms.update(body["latency_ms"])
        if "jitter_ms" in body:
            self.tenant.jitter_ms.update(body["jitter_ms"])
        return web.json_response({"rules": len(rules), "latency_ms": self.tenant.latency_ms, "jitter_ms": self.tenant.jitter_ms})

    async def clear_faults(self, _: web.Request) -> web.Response:
        self.tenant.faults = []
        self.tenant.latency_ms = {"graph": 0.0, "dataverse": 0.0}
        self.tenant.jitter_ms = {"graph": 0.0, "dataverse": 0.0}
        return web.Response(status=204)

    async def log(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", 0))
        service = request.query.get("service")
        entries = [e for e in self.tenant.log.entries[since:] if service in (None, e["service"])]
        return web.json_response({"value": entries, "next": len(self.tenant.log.entries)})

    async def clear_log(self, _: web.Request) -> web.Response:
        from .tenant import RequestLog
        self.tenant.log = RequestLog()
        return web.Response(status=204)

    async def stats(self, _: web.Request) -> web.Response:
        return web.json_response(self.tenant.log.stats())

    async def load_demo(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        now = datetime.fromisoformat(body["now"].replace("Z", "+00:00")) if body.get("now") else None
        org_name = body.get("org", "default")
        partner = body.get("partner")
        if partner:
            partner = {"tenant": str(partner["tenant"]).lower(), "domain": partner.get("domain", "fabrikam.example"),
                       "technicians": int(partner.get("technicians", 5))}
            self.tenant.graph.directories.setdefault(partner["tenant"], Directory(partner["tenant"]))
        generated = demo.generate(now=now, seed=int(body.get("seed", 7)), technicians=int(body.get("technicians", 25)),
                                  bookings=int(body.get("bookings", 300)), partner=partner)
        org = self.tenant.org(org_name)
        for entity_set, rows in generated.tables.items():
            table = DATAVERSE.by_entity_set[entity_set]
            for row in rows:
                org.upsert(table.logical_name, row)
        for m in generated.mailboxes:
            self.tenant.graph.add(Mailbox(id=str(uuid.uuid4()), address=m["address"], display_name=m["displayName"],
                                          time_zone=m["timeZone"], in_scope=m.get("in_scope", True),
                                          tenant_id=m.get("tenant", HOME_TENANT)))
        for address, event in generated.personal_events:
            self.graph.create_event(self.tenant.graph.find(address), event, {})
        summary: dict[str, Any] = {"org": org_name, "now": generated.now.isoformat(),
                                   "counts": {k: len(v) for k, v in generated.tables.items()},
                                   "mailboxes": [m["address"] for m in generated.mailboxes], "edge_cases": generated.edge_cases}
        return web.json_response(summary, status=201)

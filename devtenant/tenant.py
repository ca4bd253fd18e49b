"""The emulated tenant's state: Dataverse organisations, Exchange mailboxes, the request log and faults.

Everything lives in memory and is changed only through the control API (tests, demo, benchmarks) or
through the emulated service endpoints themselves.
"""
from __future__ import annotations

import itertools
import random
import re
import time
import uuid
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .schema import DATAVERSE


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class DataverseOrg:
    """One Dataverse environment: rows keyed by Web API property name, with row versions for change tracking."""

    def __init__(self, name: str):
        self.name = name
        self.rows: dict[str, dict[str, dict]] = {t: {} for t in DATAVERSE.tables}
        self.tombstones: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self._version = itertools.count(1_000_000)
        self.version = next(self._version)
        self.min_valid_version = 0
        # Tables whose change tracking is off (EntityMetadata.ChangeTrackingEnabled false): asked for changes, they
        # answer 0x80072491 (Learn, "Web service error codes": ChangeTrackingNotEnabledForEntity). Every table the
        # sync reads is tracked by default, as in an environment set up as docs/deploy.md says.
        self.untracked: set[str] = set()
        # A paged list's matching rows, in order, kept for its next pages while no row changes (dataverse.py)
        self.result_sets: dict[tuple, tuple[list[dict], list[dict]]] = {}
        self.dop_hint = 4
        self.request_budget = 6000          # service protection: requests per window per caller
        self.budget_window_s = 300.0
        self.max_concurrent = 52
        self.inflight = 0
        self._window: deque[float] = deque()
        from .webhooks import WebhookRegistry
        self.webhooks = WebhookRegistry()

    def next_version(self) -> int:
        self.version = next(self._version)
        return self.version

    def upsert(self, table: str, row: dict) -> dict:
        meta = DATAVERSE.tables[table]
        pk = meta.primary_id
        row = dict(row)
        row_id = str(row.get(pk) or uuid.uuid4()).lower()
        row[pk] = row_id
        current = self.rows[table].get(row_id, {})
        merged = {**current, **row}
        now = iso(utcnow())
        merged.setdefault("createdon", now)
        merged["modifiedon"] = now
        merged["versionnumber"] = self.next_version()
        if "statecode" in meta.columns:
            merged.setdefault("statecode", 0)
        self.rows[table][row_id] = merged
        return merged

    def delete(self, table: str, row_id: str) -> bool:
        row_id = row_id.lower()
        if self.rows[table].pop(row_id, None) is None:
            return False
        self.tombstones[table].append((self.next_version(), row_id))
        return True

    def admit(self) -> float | None:
        """Service protection: returns seconds to wait when the caller is over its budget."""
        now = time.monotonic()
        while self._window and now - self._window[0] > self.budget_window_s:
            self._window.popleft()
        if len(self._window) >= self.request_budget:
            return max(1.0, self.budget_window_s - (now - self._window[0]))
        self._window.append(now)
        return None


HOME_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


@dataclass
class Directory:
    """A Microsoft Entra tenant as the app meets it: whether an admin of it consented to the app (its service
    principal exists there), and whether the app's federated credential is accepted (the trust is configured)."""
    id: str
    consented: bool = True
    federation_trusted: bool = True


def token_tenant(authorization: str) -> str:
    """The tenant a bearer token was issued in. Tokens from the emulator's token endpoint name it
    (`devtenant;tid=...;...`); any other token, as the emulator has always accepted, is the home tenant's."""
    token = authorization[7:].strip() if authorization.startswith("Bearer ") else authorization
    if token.startswith("devtenant;"):
        fields = dict(part.split("=", 1) for part in token.split(";")[1:] if "=" in part)
        return fields.get("tid", HOME_TENANT)
    return HOME_TENANT


@dataclass
class Mailbox:
    id: str
    address: str
    display_name: str
    time_zone: str = "UTC"
    state: str = "enabled"        # enabled | disabled (soft-deleted / inactive / on-premises)
    in_scope: bool = True         # inside the app's Exchange RBAC for Applications scope
    # A change of that scope, and when it takes effect (time.monotonic()): Exchange applies changes to app permissions
    # after "cache maintenance that varies between 30 minutes and 2 hours" ("Role Based Access Control for
    # Applications", Limitations). The control API delays a change by 30 minutes unless told otherwise.
    scope_change: tuple[bool, float] | None = None
    tenant_id: str = HOME_TENANT  # the Entra tenant whose Exchange Online holds the mailbox
    # The application roles the app holds for this mailbox's scope (Exchange RBAC for Applications). The default is
    # exactly what docs/deploy.md and infra/scripts/grant-mailbox-access.ps1 grant: "Application Calendars.ReadWrite".
    roles: set = field(default_factory=lambda: {"Calendars.ReadWrite"})
    events: dict[str, dict] = field(default_factory=dict)
    calendar_id: str = field(default_factory=lambda: "AAMkCal" + uuid.uuid4().hex[:16] + "AAA=")
    cancellations: list = field(default_factory=list)     # cancel messages sent to attendees
    inflight: int = 0
    window: deque = field(default_factory=deque)


def scope_now(mailbox: Mailbox) -> bool:
    """Whether the mailbox is in the app's scope now, a pending change applied once its time came."""
    if mailbox.scope_change is not None and time.monotonic() >= mailbox.scope_change[1]:
        mailbox.in_scope, mailbox.scope_change = mailbox.scope_change[0], None
    return mailbox.in_scope


class GraphTenant:
    def __init__(self) -> None:
        self.mailboxes: dict[str, Mailbox] = {}
        self.by_address: dict[str, str] = {}
        self.tenant_id = HOME_TENANT
        self.directories: dict[str, Directory] = {HOME_TENANT: Directory(HOME_TENANT)}
        self.mailbox_concurrency = 4
        self.mailbox_budget = 10_000
        self.mailbox_window_s = 600.0
        # What a create repeating a transactionId gets. Graph's event resource says the id lets the server "avoid
        # redundant POST operations in case of client retries" and documents no answer; clients in the field meet
        # 400 ErrorDuplicateTransactionId, some a 409. A guess, so the default is the strictest seen (400), and the
        # control API switches to 409 or to 201 with the existing event (PUT /_control/graph/limits).
        self.duplicate_transaction = "400"

    def add(self, mailbox: Mailbox) -> Mailbox:
        self.mailboxes[mailbox.id] = mailbox
        self.by_address[mailbox.address.lower()] = mailbox.id
        return mailbox

    def find(self, key: str) -> Mailbox | None:
        key = key.lower()
        if key in self.mailboxes:
            return self.mailboxes[key]
        mid = self.by_address.get(key)
        return self.mailboxes.get(mid) if mid else None


@dataclass
class FaultRule:
    action: str                       # status | latency | drop_after_apply | reset
    service: str = "*"                # graph | dataverse | *
    method: str | None = None
    path: str | None = None           # regular expression searched in the request path
    mailbox: str | None = None        # address or id; graph only
    status: int = 503
    retry_after: float | None = None
    delay_ms: float = 0
    times: int | None = None          # how many matching requests it hits; None = every one
    skip: int = 0                     # let this many matching requests through first
    code: str | None = None
    hits: int = 0
    seen: int = 0

    def matches(self, service: str, method: str, path: str, mailbox: Mailbox | None) -> bool:
        if self.service not in ("*", service):
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        if self.path and not re.search(self.path, path):
            return False
        return not (self.mailbox and (mailbox is None or self.mailbox.lower() not in (mailbox.id, mailbox.address.lower())))

    def take(self) -> bool:
        self.seen += 1
        if self.seen <= self.skip:
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        self.hits += 1
        return True


def redacted(headers: Any) -> dict[str, str]:
    """Request headers as logged: every header, the credential replaced."""
    return {k: ("Bearer <redacted>" if k.lower() == "authorization" else str(v)) for k, v in dict(headers or {}).items()}


class RequestLog:
    """Every request the emulator answered, whole: method, path, query, headers (authorization redacted), body,
    status and response body; top-level requests (kind http) and each part of a $batch (batch-item / op)."""
    def __init__(self) -> None:
        self.entries: list[dict] = []
        self.max_concurrency: Counter[str] = Counter()     # per mailbox, counted on arrival
        self.max_concurrency_dataverse = 0

    def add(self, **entry: Any) -> None:
        entry["seq"] = len(self.entries)
        entry["at"] = time.time()
        self.entries.append(entry)

    def stats(self) -> dict:
        by = Counter()
        for e in self.entries:
            by[(e["service"], e.get("kind", "http"), e["method"], e["status"])] += 1
        per_service: dict[str, Any] = defaultdict(lambda: {"requests": 0, "operations": 0, "by_status": Counter(), "by_method": Counter()})
        for (service, kind, method, status), n in by.items():
            s = per_service[service]
            if kind == "http":
                s["requests"] += n
            if kind in ("op", "batch-item") or (kind == "http" and method != "POST-BATCH"):
                s["operations"] += n
            s["by_status"][str(status)] += n
            s["by_method"][method] += n
        throttled = sum(1 for e in self.entries if e["status"] == 429)
        return {
            "services": {k: {**v, "by_status": dict(v["by_status"]), "by_method": dict(v["by_method"])} for k, v in per_service.items()},
            "throttled": throttled,
            "max_concurrency_per_mailbox": dict(self.max_concurrency),
            "max_concurrency_overall_mailbox": max(self.max_concurrency.values(), default=0),
            "max_concurrency_dataverse": self.max_concurrency_dataverse,
            "entries": len(self.entries),
        }


class Tenant:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.orgs: dict[str, DataverseOrg] = {"default": DataverseOrg("default")}
        self.graph = GraphTenant()
        self.log = RequestLog()
        self.faults: list[FaultRule] = []
        self.latency_ms: dict[str, float] = {"graph": 0.0, "dataverse": 0.0}
        self.jitter_ms: dict[str, float] = {"graph": 0.0, "dataverse": 0.0}     # added uniformly at random, 0..jitter

    def latency(self, service: str) -> float:
        """The injected service latency of one request, in ms (a benchmark's stand-in for the real services')."""
        jitter = self.jitter_ms.get(service, 0.0)
        return self.latency_ms.get(service, 0.0) + (random.uniform(0.0, jitter) if jitter else 0.0)

    def org(self, name: str) -> DataverseOrg:
        if name not in self.orgs:
            self.orgs[name] = DataverseOrg(name)
        return self.orgs[name]

    def fault_for(self, service: str, method: str, path: str, mailbox: Mailbox | None = None) -> FaultRule | None:
        for rule in self.faults:
            if rule.matches(service, method, path, mailbox) and rule.take():
                return rule
        return None

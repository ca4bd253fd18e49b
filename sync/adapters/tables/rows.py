"""Stored rows <-> the ports' records, written with their schema version and read tolerantly (E5).

A reader ignores every column it does not know (a newer version's) and defaults every one that is missing (an
older version's). A row that still does not read as its record is reported, never raised past its repository: a
link as unreadable (its booking is set aside), an observation as UNREADABLE_OBSERVATION (kept, set aside), a
mailbox with `unreadable` set (never synced on a guess).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from ...core.domain import Link, LinkState, Mailbox, MailboxTestStatus
from ...core.serialize import filter_from_dict, filter_to_dict
from ...ports import ROW_SCHEMA, UNREADABLE_OBSERVATION, MailboxFields, MailboxLease, MailboxRecord, Observation
from .keys import RELEASED, etag_of, iso, key, required_when, unkey, when

OBSERVATION_PREFIX, ERROR_PREFIX, LEASE_ROW = "^p|", "^e|", "^lease"
COUNT_PREFIX = "count_"
_RECORD_FIELDS = frozenset(f.name for f in fields(MailboxRecord)) - {"mailbox", "etag", "counts", "unreadable"}


def link_entity(link: Link) -> dict[str, Any]:
    return {"PartitionKey": key(link.mailbox), "RowKey": key(link.booking_id), "schema": ROW_SCHEMA, "booking_id": link.booking_id.lower(),
            "mailbox": link.mailbox.lower(), "environment": link.environment.lower(), "event_id": link.event_id or "",
            "generation": link.generation, "trigger_fp": link.trigger_fingerprint, "content_fp": link.content_fingerprint,
            "event_start": iso(link.event_start), "event_end": iso(link.event_end), "state": link.state.value,
            "has_attendees": link.has_attendees, "written_at": iso(link.written_at)}


def link_of(e: Any) -> Link:
    """Raises KeyError, TypeError or ValueError for a row that does not read as a link (its repository reports it)."""
    return Link(booking_id=e["booking_id"], mailbox=e["mailbox"], environment=e["environment"], event_id=e.get("event_id") or None,
                generation=int(e["generation"]), trigger_fingerprint=e["trigger_fp"], content_fingerprint=e["content_fp"],
                event_start=required_when(e["event_start"]), event_end=required_when(e["event_end"]), state=LinkState(e["state"]),
                has_attendees=bool(e.get("has_attendees")), written_at=when(e.get("written_at")), etag=etag_of(e))


def index_entity(link: Link) -> dict[str, Any]:
    return {"PartitionKey": key(link.environment), "RowKey": f"{key(link.booking_id)}|{key(link.mailbox)}", "schema": ROW_SCHEMA,
            "booking_id": link.booking_id.lower(), "mailbox": link.mailbox.lower()}


def mailbox_columns(m: Mailbox) -> dict[str, Any]:
    return {"PartitionKey": "mailbox", "RowKey": key(m.address), "schema": ROW_SCHEMA, "address": m.address.lower(),
            "environment": m.environment or "", "sync_method": m.sync_method, "approved": m.approved, "test_status": m.test_status.value,
            "test_reason": m.test_reason or "", "enabled": m.enabled, "time_zone": m.time_zone,
            "filters": json.dumps([filter_to_dict(f) for f in m.filters])}


def field_columns(changes: MailboxFields | Mapping[str, Any]) -> dict[str, Any]:
    """A record's fields as the row's columns (counts as one column per kind, as every version has written them)."""
    unknown = set(changes) - _RECORD_FIELDS - {"counts"}
    if unknown:
        raise TypeError(f"not a field of a mailbox record: {sorted(unknown)}")
    columns = {k: v for k, v in changes.items() if k != "counts"}
    columns.update({COUNT_PREFIX + kind: int(n) for kind, n in dict(changes.get("counts") or {}).items()})
    return columns


def mailbox_of(e: Any) -> MailboxRecord:
    """Any stored mailbox row as a record; one that does not read as a mailbox has `unreadable` set."""
    address = str(e.get("address") or unkey(e["RowKey"])).lower()
    try:
        filters = tuple(filter_from_dict(f) for f in json.loads(e.get("filters") or "[]"))
        mailbox = Mailbox(address=address, environment=e.get("environment") or None, sync_method=e.get("sync_method") or "server-side",
                          approved=bool(e.get("approved")), test_status=MailboxTestStatus(e.get("test_status") or "not_tested"),
                          test_reason=e.get("test_reason") or None, enabled=bool(e.get("enabled", True)),
                          time_zone=e.get("time_zone") or "UTC", filters=filters)
        unreadable = ""
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        mailbox, unreadable = Mailbox(address=address, enabled=False), f"the stored mailbox row does not read ({type(exc).__name__})"
    known: dict[str, Any] = {}
    for name in _RECORD_FIELDS:
        if e.get(name) is not None:
            known[name] = _typed(name, e[name])
    counts = {k[len(COUNT_PREFIX):]: int(v) for k, v in dict(e).items() if k.startswith(COUNT_PREFIX) and isinstance(v, int)}
    return MailboxRecord(mailbox, etag_of(e), counts=counts, unreadable=unreadable, **known)


def _typed(name: str, value: Any) -> Any:
    """A column's value as the record's field type (a column another version wrote as text reads as its default)."""
    default = MailboxRecord.__dataclass_fields__[name].default
    if name == "linked_count":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(default, bool):
        return value if isinstance(value, bool) else default
    if isinstance(default, int):
        return value if isinstance(value, int) and not isinstance(value, bool) else default
    return value if isinstance(value, str) else str(value)


def observation_entity(mailbox: str, booking_id: str, booking: Mapping[str, Any] | None, at: str | None) -> dict[str, Any]:
    return {"PartitionKey": key(mailbox), "RowKey": OBSERVATION_PREFIX + key(booking_id), "schema": ROW_SCHEMA, "booking_id": booking_id,
            "deleted": booking is None, "booking": json.dumps(booking) if booking else "", "observed_at": at}


def observation_of(e: Any) -> Observation:
    """A waiting observation; one whose body does not read comes back as UNREADABLE_OBSERVATION (set aside, kept)."""
    deleted = e.get("deleted")
    readable = isinstance(deleted, bool)           # without the flag, a missing body is no deletion
    booking_id = str(e.get("booking_id") or unkey(e["RowKey"][len(OBSERVATION_PREFIX):]))
    body = None if readable and deleted else (_body(e.get("booking")) if readable else UNREADABLE_OBSERVATION)
    return Observation(booking_id, body, e.get("observed_at"), etag_of(e))


def _body(raw: Any) -> Mapping[str, Any]:
    try:
        value = json.loads(raw) if raw else None
    except (TypeError, ValueError, RecursionError):
        return UNREADABLE_OBSERVATION
    return value if isinstance(value, dict) else UNREADABLE_OBSERVATION


def lease_entity(mailbox: str, holder: str, expires: Any) -> dict[str, Any]:
    return {"PartitionKey": key(mailbox), "RowKey": LEASE_ROW, "schema": ROW_SCHEMA, "holder": holder, "expires": iso(expires)}


def lease_of(e: Any) -> MailboxLease:
    return MailboxLease(str(e.get("holder") or ""), when(e.get("expires")) or RELEASED, etag_of(e))


def error_entity(mailbox: str, booking_id: str, outcome: Mapping[str, Any], at: str | None) -> dict[str, Any]:
    return {"PartitionKey": key(mailbox), "RowKey": ERROR_PREFIX + key(booking_id), "schema": ROW_SCHEMA, "booking_id": booking_id,
            "at": at, **{k: ("" if v is None else v) for k, v in outcome.items()}}


def journal_entity(pk: str, rk: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """Nested values as JSON text (Table columns are flat); `journal_of` gives them back as objects."""
    return {"PartitionKey": pk, "RowKey": rk, "schema": ROW_SCHEMA,
            **{k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in entry.items()}}


def journal_of(e: Any) -> dict[str, Any]:
    return {k: (json.loads(v) if isinstance(v, str) and v[:1] in ("[", "{") else v) for k, v in dict(e).items()
            if k not in ("PartitionKey", "RowKey", "schema")}

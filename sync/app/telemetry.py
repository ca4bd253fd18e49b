"""Telemetry through OpenTelemetry: Azure Monitor when Application Insights is configured.

Spans, metrics and logs carry ids and counts, never personal data: no addresses, names, subjects or
summaries. A mailbox appears as `mailbox_ref`, an HMAC of its address under a per-deployment key kept
in the state store, so one mailbox can be followed across cycles without telemetry revealing who it is
(the status listing shows the same ref beside the address for administrators). The Azure SDK and HTTP
client instrumentations stay off: their URLs carry table keys and Graph paths, which hold addresses.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import metrics, trace

METER = metrics.get_meter("fieldservice_outlook_sync")
TRACER = trace.get_tracer("fieldservice_outlook_sync")
log = logging.getLogger("sync.telemetry")

EVENTS = METER.create_counter("sync.events", unit="{event}",
                              description="Calendar writes by kind (created, updated, cancelled, deleted, unlinked, ...)")
BOOKINGS_READ = METER.create_counter("sync.bookings.read", unit="{booking}", description="Bookings read from Dataverse")
BOOKINGS_SKIPPED = METER.create_counter("sync.bookings.skipped", unit="{booking}", description="Malformed bookings skipped, by reason")
MAILBOX_OUTCOMES = METER.create_counter("sync.mailbox.outcomes", unit="{mailbox}", description="Mailbox syncs by outcome")
THROTTLED = METER.create_counter("sync.throttled", unit="{response}", description="429 answers received")
CYCLE_DURATION = METER.create_histogram("sync.cycle.duration", unit="s", description="Wall time of a cycle")
MAILBOX_DURATION = METER.create_histogram("sync.mailbox.duration", unit="s", description="Wall time of one mailbox's sync")
# Every library instrumentation the distro would turn on (tests/contract/test_telemetry_setup.py holds it to the
# pinned distro's list): httpx's would record each Graph request's URL, which holds the mailbox's address.
DISABLED_INSTRUMENTATIONS = ("azure_sdk", "requests", "urllib", "urllib3", "httpx", "httpx2", "django", "fastapi", "flask", "psycopg2")


# The Functions Python worker hands every record at INFO and above, from any logger, to the host as the function's
# own log, and so to Application Insights. azure-core's HttpLoggingPolicy logs each request's URL at INFO, and httpx
# each request's line: Table addresses hold mailbox addresses as keys, Graph paths /users/{address}. Warnings pass.
QUIETED_LOGGERS = ("azure.core.pipeline.policies.http_logging_policy", "httpx")


def quiet_library_loggers() -> None:
    for name in QUIETED_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_telemetry() -> bool:
    if not os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
        return False
    from azure.monitor.opentelemetry import configure_azure_monitor
    configure_azure_monitor(logger_name="sync", instrumentation_options={name: {"enabled": False} for name in DISABLED_INSTRUMENTATIONS})
    return True


@contextmanager
def span(name: str, **attributes: str | int | float | bool | None) -> Iterator[trace.Span]:
    with TRACER.start_as_current_span(name, attributes={k: v for k, v in attributes.items() if v is not None}) as current:
        yield current


def record_collect(result: dict) -> None:
    attrs = {"mode": result.get("mode", "unknown")}
    BOOKINGS_READ.add(result.get("bookings_read", 0), attrs)
    for reason, n in (result.get("skipped") or {}).items():
        BOOKINGS_SKIPPED.add(n, {"reason": reason})


def record_mailbox(result: dict, ref: str, seconds: float) -> None:
    outcome = result.get("outcome", "unknown")
    MAILBOX_OUTCOMES.add(1, {"outcome": outcome, "mailbox_ref": ref, "tenant": result.get("tenant") or "home"})
    MAILBOX_DURATION.record(seconds, {"outcome": outcome})
    for kind, n in (result.get("counts") or {}).items():
        if n:
            EVENTS.add(n, {"kind": kind, "mailbox_ref": ref})
    if result.get("throttled"):
        THROTTLED.add(result["throttled"], {"service": "graph"})


def record_cycle(summary: dict, seconds: float) -> None:
    CYCLE_DURATION.record(seconds, {"trigger": summary.get("trigger", "unknown"), "outcome": summary.get("outcome", "unknown")})
    log.info("cycle finished", extra={"cycle_id": summary.get("id"), "outcome": summary.get("outcome"),
                                      "failed_environments": sum(1 for e in summary.get("environments", []) if e.get("error")),
                                      "outcomes": str(summary.get("outcomes")),
                                      "totals": str(summary.get("totals")), "seconds": round(seconds, 3)})

"""Telemetry carries ids and counts, never personal data: a full cycle of the demo org with in-memory
OpenTelemetry exporters, searched for every address, name, subject and summary the org contains."""
from __future__ import annotations

import logging
import re

import pytest
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.logging.handler import LoggingHandler  # the one azure-monitor-opentelemetry installs
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devtenant import demo
from sync.app.clients import Clients
from sync.app.settings import load
from sync.app.telemetry import quiet_library_loggers
from sync.local.cycle import run_cycle
from tests.stack_helpers import enable_all_mailboxes

pytestmark = pytest.mark.stack
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


class Forwarded(logging.Handler):
    """What the Functions Python worker does: every record at INFO and above, from any logger, goes to the host."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


@pytest.fixture(scope="module")
def exporters():
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(tracer_provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    handler = LoggingHandler(logger_provider=logger_provider)
    root = logging.getLogger("sync")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    quiet_library_loggers()                                      # as function_app does at start
    forwarded, worker_root = Forwarded(), logging.getLogger()
    level = worker_root.level
    worker_root.addHandler(forwarded)
    worker_root.setLevel(logging.INFO)
    yield spans, reader, logs, forwarded
    worker_root.removeHandler(forwarded)
    worker_root.setLevel(level)
    root.removeHandler(handler)


def strings_in(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in strings_in(v)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in strings_in(k) + strings_in(v)]
    return []


async def test_no_personal_data_in_spans_metrics_or_logs(exporters, tenant, table_prefix, monkeypatch):
    spans, reader, logs, forwarded = exporters
    summary = tenant.control("POST", "/demo", {})
    for key, value in {**tenant.environment(), "STATE_TABLE_PREFIX": table_prefix}.items():
        monkeypatch.setenv(key, value)
    settings = load()
    addresses = sorted(await enable_all_mailboxes(settings))
    result = await run_cycle(settings)
    assert result["totals"]["created"] > 100
    async with Clients(settings) as rt:                          # the direct (non-batch) Graph paths too
        await rt.calendar.find_tagged(addresses[0], settings.environments[0], "00000000-0000-0000-0000-000000000000")
        await rt.calendar.test_mailbox(addresses[0])
        await rt.calendar.list_events(addresses[0])

    texts: list[str] = []
    for s in spans.get_finished_spans():
        texts += [s.name, *strings_in(dict(s.attributes or {}))]
    data = reader.get_metrics_data()
    points = 0
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    points += 1
                    texts += strings_in(dict(point.attributes or {}))
    records = logs.get_finished_logs()
    for record in records:
        texts += strings_in(str(record.log_record.body)) + strings_in(dict(record.log_record.attributes or {}))
    texts += forwarded.messages
    assert spans.get_finished_spans() and points and records and forwarded.messages     # telemetry was really produced

    people = {f"{first} {last}" for first in demo.FIRST for last in demo.LAST} | set(demo.FIRST) | set(demo.LAST)
    rows = lambda s: tenant.control("GET", f"/orgs/default/tables/{s}")["value"]
    from urllib.parse import quote
    forbidden = set(summary["mailboxes"]) | {quote(a, safe="") for a in summary["mailboxes"]} | {a.split("@")[0] for a in summary["mailboxes"]}
    forbidden |= {r["name"] for r in rows("accounts")} | {r["fullname"] for r in rows("contacts")}
    forbidden |= {r["msdyn_workordersummary"][:40] for r in rows("msdyn_workorders") if r.get("msdyn_workordersummary")}
    forbidden |= {r["msdyn_name"] + " " for r in rows("msdyn_workorders")}                         # subjects start "<number> "
    blob = "\n".join(texts)
    assert not EMAIL.search(blob), EMAIL.search(blob)
    leaked = [f for f in forbidden if f and f in blob] + [p for p in people if re.search(rf"\b{re.escape(p)}\b", blob)]
    assert not leaked, leaked[:5]
    assert re.search(r"mbx-[0-9a-f]{12}", blob)                  # mailboxes are followed by pseudonym


async def test_no_address_in_durable_instance_ids_inputs_or_outputs(tenant, table_prefix, monkeypatch):
    """What the Durable host keeps and logs (instance ids, histories with every input and result, outputs) names
    mailboxes by pseudonym only: the timer cycle and a webhook-started mailbox sync, on the demo org."""
    import json

    from sync.app.activities import Activities
    from sync.app.orchestrators import CYCLE_INSTANCE_ID, CYCLE_ORCHESTRATOR
    from sync.local.cycle import cycle_runner
    from sync.local.webhook_host import LocalWebhookHost
    from tests.stack_helpers import webhook_payload

    summary = tenant.control("POST", "/demo", {"technicians": 6, "bookings": 40})
    for key, value in {**tenant.environment(), "STATE_TABLE_PREFIX": table_prefix}.items():
        monkeypatch.setenv(key, value)
    settings = load()
    await enable_all_mailboxes(settings)
    activities = Activities(lambda: settings)
    runner = cycle_runner(activities)
    try:
        output = await runner.run(CYCLE_ORCHESTRATOR, {"environments": list(settings.environments), "trigger": "test"}, CYCLE_INSTANCE_ID)
    finally:
        await activities.close()
    assert output["totals"].get("created")
    host = LocalWebhookHost(settings, "k")
    url = await host.start()
    try:
        import httpx
        booking = tenant.control("GET", "/orgs/default/tables/bookableresourcebookings")["value"][0]["bookableresourcebookingid"]
        async with httpx.AsyncClient() as client:
            assert (await client.post(url + "?code=k", content=webhook_payload(tenant, booking, "Update"))).status_code == 202
        await host.client.idle()
    finally:
        await host.stop()
    instances = [*runner.instances.values(), *host.client.runner.instances.values()]
    assert any(i.name == "sync_mailbox_now" for i in instances)
    blob = json.dumps([{"id": i.instance_id, "history": i.history, "output": i.output, "status": i.custom_status} for i in instances])
    assert not EMAIL.search(blob), EMAIL.search(blob)
    assert not [a for a in summary["mailboxes"] if a.split("@")[0] in blob]
    assert re.search(r"mailbox-sync-mbx-[0-9a-f]{12}-\d+", blob)

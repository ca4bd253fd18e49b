"""Benchmarks: the cost of a sync cycle on the local stack, beside its lower bound.

    python -m bench [--scale smoke|full] [--graph-latency-ms 30] [--dataverse-latency-ms 50] [--out bench/out]

Runs, on one local stack (Azurite + emulator) with injected per-request latency:
  bulk test & enable of 2 x (mailboxes) mailboxes; initial sync of (mailboxes) x (bookings) bookings; a cycle
  with no change; a cycle where 5 % of bookings moved in time; a cycle where 10 % were canceled or deleted; at
  realistic service latency, a cycle where 5 % moved and the initial sync of (mailboxes / 5) newly enabled ones;
then, on a second stack whose Table Storage is the light double (devtenant/tablestore.py) instead of Azurite,
the same organisation's initial sync, quiet cycle, 5 % moved and 10 % canceled or deleted, so the sync's cost is
seen without Azurite's CPU on the same cores; and micro-measures: import time of function_app, planner throughput
on 100,000 bookings, memory of one mailbox activity. Writes results-SCALE.json and prints a readable table.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
import tracemalloc
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from . import round_trips

ROOT = Path(__file__).resolve().parents[1]
SCALES = {"smoke": {"mailboxes": 4, "bookings": 5, "planner": 2_000, "webhook_changes": 5},
          "full": {"mailboxes": 500, "bookings": 20, "planner": 100_000, "webhook_changes": 100}}
GRAPH_CONCURRENCY_PER_MAILBOX = 4


@dataclass
class Scenario:
    name: str
    changed: int              # bookings whose calendar must change (the lower bound of Graph operations)
    figures: dict
    graph_ms: float | None = None   # the scenario's mean Graph latency, when it is not the run's
    mailboxes: int | None = None    # the mailboxes the scenario syncs, when it is not all of the run's


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of another process, from /proc, including its children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(f) for f in fields[11:15])           # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def stack_cpu_s(stack) -> tuple[float, float]:
    """The local stack's own CPU, which shares the machine's cores with the sync: (the emulator, Table Storage)."""
    def of(process) -> float:
        if process is None or process.proc is None:
            return 0.0
        pid = process.proc.pid
        try:                                              # azurite-table is a node process started by a shell shim
            children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            children = []
        return sum(process_cpu_s(p) for p in [pid, *children])
    return of(stack.emulator), of(stack.tables)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Bench:
    def __init__(self, stack, scale: dict, graph_ms: float, dataverse_ms: float, activities: int):
        self.stack, self.scale, self.graph_ms, self.dataverse_ms = stack, scale, graph_ms, dataverse_ms
        self.activities = activities
        self.rng = random.Random(11)
        self.now = datetime.now(UTC).replace(second=0, microsecond=0)
        self.bookings: list[str] = []
        self.starts: dict[str, datetime] = {}
        self.statuses: dict[str, str] = {}
        self.wo_type = ""
        self.env = {**stack.environment(), "STATE_TABLE_PREFIX": "bench" + uuid.uuid4().hex[:8]}
        os.environ.update(self.env)
        from sync.app.settings import load
        self.settings = load()
        self.plan_cpu = 0.0
        self.finished: dict[str, float] = {}          # mailbox_ref -> when its sync activity ended (time.monotonic)
        self.collect_attempts = 0
        self.collect_failures: list[str] = []
        self.collect_s = 0.0                          # wall time of the cycle's collect activities (before any mailbox syncs)
        self.gc_pause_s = 0.0                         # time the sync process spent in the garbage collector
        # One Activities for every cycle, as a Functions worker keeps its clients (and their connections) between
        # invocations; the first cycle pays for making them.
        from sync.app.activities import Activities
        from sync.app.clients import Clients
        from sync.app.gc_tuning import tune_collector
        # Its Table client reports every request to round_trips, which counts them per mailbox activity.
        self.worker = Activities(lambda: self.settings, clients=lambda s: Clients(s, raw_request_hook=round_trips.count_request))
        tune_collector()                       # as function_app does, and the worker's first activity

    # -- the organisation --------------------------------------------------------------------------------------
    def build_org(self, count: int | None = None, prefix: str = "tech") -> list[str]:
        """`count` technicians (the scale's by default) with their mailboxes and bookings; returns the addresses."""
        c = self.stack.control
        if not self.statuses:
            for name, status, fs in [("Scheduled", 2, 690970000), ("Canceled", 3, 690970005)]:
                self.statuses[name] = c("POST", "/orgs/default/tables/bookingstatuses", [{"name": name, "status": status, "msdyn_fieldservicestatus": fs}])["value"][0]["bookingstatusid"]
            self.wo_type = c("POST", "/orgs/default/tables/msdyn_workordertypes", [{"msdyn_name": "Maintenance"}])["value"][0]["msdyn_workordertypeid"]
        wo_type = self.wo_type
        mailboxes = [f"{prefix}{i:04d}@contoso.example" for i in range(self.scale["mailboxes"] if count is None else count)]
        users = c("POST", "/orgs/default/tables/systemusers", [{"fullname": f"Tech {i}", "internalemailaddress": a} for i, a in enumerate(mailboxes)])["value"]
        resources = c("POST", "/orgs/default/tables/bookableresources",
                      [{"name": f"Tech {i}", "resourcetype": 3, "_userid_value": u["systemuserid"]} for i, u in enumerate(users)])["value"]
        c("POST", "/mailboxes", [{"address": a, "displayName": f"Tech {i}"} for i, a in enumerate(mailboxes)])
        rows = []
        for r in resources:
            for _ in range(self.scale["bookings"]):
                start = self.now.replace(hour=0, minute=0) + timedelta(days=self.rng.randint(-6, 13), hours=self.rng.choice([8, 10, 13, 15]))
                rows.append((r["bookableresourceid"], start))
        wos = []
        for i in range(0, len(rows), 1000):
            chunk = rows[i:i + 1000]
            wos += c("POST", "/orgs/default/tables/msdyn_workorders", [{"msdyn_name": f"{prefix}{i + j:05d}", "_msdyn_workordertype_value": wo_type,
                                                                       "msdyn_address1": "1 Main St", "msdyn_city": "Seattle"} for j in range(len(chunk))])["value"]
        for i in range(0, len(rows), 1000):
            chunk = rows[i:i + 1000]
            created = c("POST", "/orgs/default/tables/bookableresourcebookings", [
                {"name": "b", "starttime": iso(start), "endtime": iso(start + timedelta(hours=2)), "_resource_value": res, "statecode": 0,
                 "_bookingstatus_value": self.statuses["Scheduled"], "_msdyn_workorder_value": wos[i + j]["msdyn_workorderid"]}
                for j, (res, start) in enumerate(chunk)])["value"]
            self.bookings += [b["bookableresourcebookingid"] for b in created]
            self.starts.update({b["bookableresourcebookingid"]: start for b, (_, start) in zip(created, chunk, strict=True)})
        return mailboxes

    # -- measuring -----------------------------------------------------------------------------------------------
    def stats(self) -> dict:
        return self.stack.control("GET", "/stats")

    def delta(self, before: dict, after: dict) -> dict:
        def svc(s, name, key):
            return s["services"].get(name, {}).get(key, 0)
        return {"graph_http_requests": svc(after, "graph", "requests") - svc(before, "graph", "requests"),
                "graph_operations": svc(after, "graph", "operations") - svc(before, "graph", "operations"),
                "dataverse_requests": svc(after, "dataverse", "requests") - svc(before, "dataverse", "requests"),
                "throttled_429": after["throttled"] - before["throttled"]}

    async def cycle(self, name: str, changed: int) -> Scenario:
        from sync.local.cycle import run_cycle
        self.stack.control("DELETE", "/log")                        # resets the per-mailbox concurrency high-water mark
        before = self.stats()
        plan_before, gc_before = self.plan_cpu, self.gc_pause_s
        started, cpu_started, stack_started = time.monotonic(), time.process_time(), stack_cpu_s(self.stack)
        self.finished.clear()
        self.collect_attempts, self.collect_failures, self.collect_s = 0, [], 0.0
        summary = await run_cycle(self.settings, max_concurrent_activities=self.activities, activities=self.worker)
        wall, cpu = time.monotonic() - started, time.process_time() - cpu_started
        emulator_cpu, tables_cpu = (after - before for after, before in zip(stack_cpu_s(self.stack), stack_started, strict=True))
        after = self.stats()
        touched = [r for r in summary["mailboxes"] if any(v for k, v in (r.get("counts") or {}).items() if k != "skipped")]
        done = sorted(self.finished[r["mailbox_ref"]] - started for r in touched if r.get("mailbox_ref") in self.finished)
        pick = (lambda q: round(done[min(len(done) - 1, int(q * len(done)))], 2)) if done else (lambda q: None)
        figures = {"wall_s": round(wall, 2), "sync_cpu_s": round(cpu, 2), "local_stack_cpu_s": round(emulator_cpu + tables_cpu, 2),
                   "emulator_cpu_s": round(emulator_cpu, 2), "table_storage_cpu_s": round(tables_cpu, 2), **self.delta(before, after),
                   "max_concurrency_per_mailbox": after["max_concurrency_overall_mailbox"],
                   "peak_rss_mb": round(rss_mb(), 1), "planning_cpu_s": round(self.plan_cpu - plan_before, 3),
                   "gc_pause_s": round(self.gc_pause_s - gc_before, 3),
                   "calendar_writes": sum(v for k, v in summary["totals"].items() if k != "skipped"), "outcomes": summary["outcomes"],
                   "touched_mailboxes": len(touched), "collect_attempts": self.collect_attempts, "collect_failures": self.collect_failures,
                   "collect_s": round(self.collect_s, 2),
                   "table_round_trips_per_touched_mailbox": round(sum(r.get("table_round_trips", 0) for r in touched) / len(touched), 2)
                   if touched else None,
                   "sync_cpu_ms_per_touched_mailbox": round(cpu * 1000 / len(touched), 1) if touched else None,
                   "sync_cpu_ms_per_graph_operation": round(cpu * 1000 / after_ops, 2) if (after_ops := self.delta(before, after)["graph_operations"])
                   else None,
                   "mailbox_done_s": {"p50": pick(0.50), "p95": pick(0.95), "max": round(done[-1], 2) if done else None}}
        return Scenario(name, changed, figures)

    async def preflight(self) -> dict:
        """G3 at the service latency in force: the preflight over every enabled mailbox (the spares of the bulk test
        enabled again for it, so that 1,000 and more are)."""
        from sync.admin.mailboxes import MailboxAdmin
        from sync.admin.preflight import preflight
        from sync.app.clients import Clients
        async with Clients(self.settings) as rt:
            admin = MailboxAdmin(rt.store.mailboxes, rt.calendar)
            spares = [r.address for r in await rt.store.mailboxes.all() if r.address.startswith("spare")]
            for a in spares:
                await admin.set_enabled(a, True)
            enabled = sum(1 for r in await rt.store.mailboxes.all() if r.syncs)
            started = time.monotonic()
            result = await preflight(rt, self.settings.environments, self.now)
            seconds = time.monotonic() - started
            for a in spares:
                await admin.set_enabled(a, False)
        return {"enabled_mailboxes": enabled, "seconds": round(seconds, 2), "verdict": result["verdict"],
                "checks": {c["check"].split(":")[0]: c["status"] for c in result["checks"]}}

    async def enable(self, mailboxes: list[str]) -> None:
        """Registers, approves, tests and enables mailboxes, unmeasured (their first cycle reads their window)."""
        from sync.admin.mailboxes import MailboxAdmin
        from sync.app.clients import Clients
        async with Clients(self.settings) as rt:
            await rt.store.ensure_tables()
            admin = MailboxAdmin(rt.store.mailboxes, rt.calendar)
            for a in mailboxes:
                await admin.register(a, self.settings.environments[0], approved=True)
            await admin.test_and_enable(mailboxes, self.now)

    async def test_and_enable(self, mailboxes: list[str]) -> Scenario:
        from sync.admin.mailboxes import MailboxAdmin
        from sync.app.clients import Clients
        extra = [f"spare{i:04d}@contoso.example" for i in range(len(mailboxes))]
        self.stack.control("POST", "/mailboxes", [{"address": a} for a in extra])
        everyone = mailboxes + extra
        self.stack.control("DELETE", "/log")
        async with Clients(self.settings) as rt:
            await rt.store.ensure_tables()
            admin = MailboxAdmin(rt.store.mailboxes, rt.calendar)
            for a in everyone:
                await admin.register(a, self.settings.environments[0], approved=True)
            before = self.stats()
            started = time.monotonic()
            reports = await admin.test_and_enable(everyone, self.now)
            wall = time.monotonic() - started
            for a in extra:                                             # the spares only measure testing
                await admin.set_enabled(a, False)
        after = self.stats()
        figures = {"wall_s": round(wall, 2), **self.delta(before, after), "mailboxes": len(everyone), "succeeded": sum(r.ok for r in reports),
                   "max_concurrency_per_mailbox": after["max_concurrency_overall_mailbox"], "peak_rss_mb": round(rss_mb(), 1)}
        return Scenario(f"bulk test & enable of {len(everyone)} mailboxes", 0, figures)

    def change(self, fraction: float, kind: str) -> int:
        """Changes bookings; returns how many calendar operations the contract requires for them."""
        chosen = self.rng.sample(self.bookings, int(len(self.bookings) * fraction))
        required = 0
        for booking_id in chosen:
            if kind == "move":
                start = self.starts[booking_id]
                while start == self.starts[booking_id]:    # a move to where it already is changes nothing (C4)
                    start = self.now + timedelta(days=self.rng.randint(1, 10), hours=self.rng.choice([9, 11, 14]))
                self.stack.control("PATCH", f"/orgs/default/tables/bookableresourcebookings/{booking_id}",
                                   {"starttime": iso(start), "endtime": iso(start + timedelta(hours=2))})
                self.starts[booking_id] = start
                required += 1                                           # C2: one update
            elif self.rng.random() < 0.5:
                self.stack.control("PATCH", f"/orgs/default/tables/bookableresourcebookings/{booking_id}", {"_bookingstatus_value": self.statuses["Canceled"]})
                self.bookings.remove(booking_id)                        # X1 (default profile): the event stays, nothing to write
            else:
                self.stack.control("DELETE", f"/orgs/default/tables/bookableresourcebookings/{booking_id}")
                self.bookings.remove(booking_id)
                required += 1 if self.starts[booking_id] > self.now else 0   # D1 deletes future events; D2 unlinks past ones
        return required

def lower_bounds(s: Scenario, graph_ms: float, mailboxes: int, activities: int, kind: str) -> dict:
    """One Graph operation per changed booking, none for a no-change cycle, and wall time no lower than
    latency x operations / the concurrency allowed (4 per mailbox, for the mailboxes in flight at once)."""
    in_flight = min(mailboxes, activities) * GRAPH_CONCURRENCY_PER_MAILBOX
    ops_bound = s.changed
    # To the 0.1 ms: the small-change cycles' bounds are near 0.1 s, where a bound rounded to 0.01 s moved their
    # ratios by up to 6 % either way (0.0837 s read as 0.08, 0.0853 s as 0.09).
    bound = {"graph_operations": ops_bound, "wall_s": round(graph_ms / 1000 * max(ops_bound, 1) / in_flight, 4) if ops_bound else 0.0}
    return bound


def micro(scale: dict) -> dict:
    out = {}
    code = "import time; t=time.perf_counter(); import function_app; print(time.perf_counter()-t)"
    env = {**os.environ, "DATAVERSE_ENVIRONMENTS": "https://contoso.crm.dynamics.com", "STATE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true",
           "SYNC_CREDENTIAL": "managed-identity", "GRAPH_BASE_URL": "https://graph.microsoft.com/v1.0"}
    runs = [float(subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout) for _ in range(3)]
    out["function_app_import_s"] = round(min(runs), 3)

    from sync.core.domain import Mailbox, MailboxTestStatus
    from sync.core.plan import plan
    from sync.core.settings import SyncSettings
    sys.path.insert(0, str(ROOT))
    from tests.factories import NOW, booking
    n = scale["planner"]
    bookings = {b.id: b for b in (booking("tech@contoso.example", start=NOW + timedelta(minutes=7 * i % 20000)) for i in range(n))}
    mailbox = Mailbox("tech@contoso.example", "https://contoso.crm.dynamics.com", approved=True, test_status=MailboxTestStatus.SUCCESS)
    gc.collect()
    started = time.process_time()
    result = plan(bookings, set(), {}, mailbox, SyncSettings(), NOW)
    cpu = time.process_time() - started
    out["planner_bookings"] = n
    out["planner_cpu_s"] = round(cpu, 3)
    out["planner_bookings_per_s"] = int(n / cpu) if cpu else None
    out["planner_actions"] = len(result.actions)
    return out


async def webhook_latency(bench: Bench, changes: int) -> dict:
    """T3: time from a booking change in Dataverse to the updated event in Outlook, through the webhook."""
    from sync.local.webhook_host import LocalWebhookHost
    host = LocalWebhookHost(bench.settings, "bench-key")
    url = await host.start()
    bench.stack.control("POST", "/orgs/default/webhooks", {"url": url + "?code=bench-key"})
    rows = {r["bookableresourcebookingid"]: r for r in bench.stack.control("GET", "/orgs/default/tables/bookableresourcebookings")["value"]
            if r["_bookingstatus_value"] == bench.statuses["Scheduled"]}
    resources = {r["bookableresourceid"]: r for r in bench.stack.control("GET", "/orgs/default/tables/bookableresources")["value"]}
    users = {u["systemuserid"]: u["internalemailaddress"] for u in bench.stack.control("GET", "/orgs/default/tables/systemusers")["value"]}
    latencies = []
    try:
        for booking_id in bench.rng.sample(sorted(rows), changes):
            address = users[resources[rows[booking_id]["_resource_value"]]["_userid_value"]]
            start = bench.now + timedelta(days=bench.rng.randint(1, 12), hours=bench.rng.randint(7, 17), minutes=bench.rng.choice([5, 20, 35, 50]))
            wanted = start.strftime("%Y-%m-%dT%H:%M")
            began = time.monotonic()
            bench.stack.control("PATCH", f"/orgs/default/tables/bookableresourcebookings/{booking_id}",
                                {"starttime": iso(start), "endtime": iso(start + timedelta(hours=2))})
            while time.monotonic() - began < 30:
                events = bench.stack.control("GET", f"/mailboxes/{address}/events")["value"]
                if any(e["start"]["dateTime"].startswith(wanted) for e in events):
                    latencies.append(time.monotonic() - began)
                    break
                await asyncio.sleep(0.02)
            else:
                latencies.append(float("inf"))
    finally:
        await host.stop()
    ordered = sorted(latencies)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)
    return {"changes": changes, "p50_s": pick(0.50), "p95_s": pick(0.95), "max_s": round(ordered[-1], 3),
            "lost": sum(1 for x in latencies if x == float("inf"))}


async def mailbox_activity_memory(bench: Bench, mailbox: str) -> float:
    """Peak Python heap of one mailbox activity (tracemalloc), with work to do: its bookings moved."""
    from sync.app.activities import Activities
    acts = Activities(lambda: bench.settings)
    payload = {"mailbox": mailbox, "now": bench.now.isoformat()}
    tracemalloc.start()
    await acts.sync_mailbox(payload)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    await acts.close()
    return round(peak / 1024 / 1024, 2)


async def first_cycles(bench: Bench, mailboxes: int, suffix: str = "") -> list[Scenario]:
    """At the run's latency: the initial sync, a quiet cycle, 5 % of bookings moved, 10 % canceled or deleted."""
    in_window = len(bench.bookings)                              # every booking is inside the window
    out = [await bench.cycle(f"initial sync of {mailboxes} mailboxes x {bench.scale['bookings']} bookings{suffix}", in_window),
           await bench.cycle(f"cycle with no change{suffix}", 0)]
    moved = bench.change(0.05, "move")
    out.append(await bench.cycle(f"cycle with 5 % of bookings moved{suffix}", moved))
    gone = bench.change(0.10, "cancel-or-delete")
    # default profile: a canceled booking's event stays (X1), a deleted future one is deleted (D1)
    out.append(await bench.cycle(f"cycle with 10 % canceled or deleted{suffix}", gone))
    return out


def instrument(bench: Bench):
    """Counts the planner's CPU and the collector's pauses, and notes when each mailbox's sync ends, for `bench`;
    returns the undo."""
    import sync.engine.mailbox as executor
    from sync.app.activities import Activities
    original, original_sync = executor.plan, Activities.sync_mailbox
    collecting = [0.0]

    def timed_gc(phase: str, _: dict) -> None:
        if phase == "start":
            collecting[0] = time.perf_counter()
        else:
            bench.gc_pause_s += time.perf_counter() - collecting[0]

    def timed_plan(*a, **kw):
        started = time.process_time()
        try:
            return original(*a, **kw)
        finally:
            bench.plan_cpu += time.process_time() - started

    async def timed_sync(self, payload):
        with round_trips.counting() as counter:
            result = await original_sync(self, payload)
        result["table_round_trips"] = counter.requests
        bench.finished[result.get("mailbox_ref", "")] = time.monotonic()
        return result

    original_collect = Activities.collect_environment

    async def counted_collect(self, payload):
        # A collect that fails is retried by the orchestrator after collect_retry's interval: the figures would
        # show only a slower cycle. Each attempt and each failure's type and code are kept with the scenario.
        bench.collect_attempts += 1
        started = time.monotonic()
        try:
            return await original_collect(self, payload)
        except Exception as exc:
            code = getattr(exc, "code", None) or getattr(exc, "error_code", None) or getattr(exc, "status_code", None)
            bench.collect_failures.append(type(exc).__name__ + (f" ({code})" if code else ""))
            raise
        finally:
            bench.collect_s += time.monotonic() - started

    executor.plan = timed_plan
    Activities.sync_mailbox = timed_sync                      # type: ignore[method-assign]
    Activities.collect_environment = counted_collect          # type: ignore[method-assign]
    gc.callbacks.append(timed_gc)

    def undo() -> None:
        gc.callbacks.remove(timed_gc)
        executor.plan = original
        Activities.sync_mailbox = original_sync               # type: ignore[method-assign]
        Activities.collect_environment = original_collect     # type: ignore[method-assign]
    return undo


DOUBLE = " (Table double)"


async def run(scale_name: str, graph_ms: float, dataverse_ms: float, activities: int) -> dict:
    from devtenant.stack import LocalStack
    scale = SCALES[scale_name]
    with LocalStack() as stack:
        bench = Bench(stack, scale, graph_ms, dataverse_ms, activities)
        undo = instrument(bench)
        mailboxes = bench.build_org()
        stack.control("PUT", "/faults", {"latency_ms": {"graph": graph_ms, "dataverse": dataverse_ms}})
        scenarios = [await bench.test_and_enable(mailboxes)]
        scenarios += await first_cycles(bench, len(mailboxes))
        # Realistic service latency: Graph 150 ms per request item (+0-100 ms jitter), Dataverse 80 ms (+0-40 ms).
        stack.control("PUT", "/faults", {"latency_ms": {"graph": 150, "dataverse": 80}, "jitter_ms": {"graph": 100, "dataverse": 40}})
        realistic = bench.change(0.05, "move")
        scenarios.append(await bench.cycle("cycle with 5 % moved, realistic latency (Graph 150-250 ms, Dataverse 80-120 ms)", realistic))
        scenarios[-1].graph_ms = 200.0
        # An initial sync where the services' latency, not the local stack's CPU, sets the pace: newly enabled mailboxes.
        newcomers = bench.build_org(max(2, scale["mailboxes"] // 5), prefix="new")
        await bench.enable(newcomers)
        scenarios.append(await bench.cycle(f"initial sync of {len(newcomers)} more mailboxes x {scale['bookings']} bookings, realistic latency",
                                           len(newcomers) * scale["bookings"]))
        scenarios[-1].graph_ms, scenarios[-1].mailboxes = 200.0, len(newcomers)
        checked = await bench.preflight()                       # G3, at the realistic latency
        stack.control("PUT", "/faults", {"latency_ms": {"graph": graph_ms, "dataverse": dataverse_ms}, "jitter_ms": {"graph": 0, "dataverse": 0}})
        changed = bench.change(0.02, "move")
        await bench.cycle("cycle with 2 % moved (for activity memory)", changed)
        undo()
        await bench.worker.close()
        memory = await mailbox_activity_memory(bench, mailboxes[0])
        latency = await webhook_latency(bench, scale["webhook_changes"])
    # The same organisation and the same changes (the seed is the same), with Table Storage answered by the light
    # double: what the sync costs when Azurite's CPU is not on the same two cores (devtenant/tablestore.py).
    with LocalStack(tables="tablestore") as stack:
        double = Bench(stack, scale, graph_ms, dataverse_ms, activities)
        undo = instrument(double)
        addresses = double.build_org()
        stack.control("PUT", "/faults", {"latency_ms": {"graph": graph_ms, "dataverse": dataverse_ms}})
        await double.enable(addresses)
        scenarios += await first_cycles(double, len(addresses), DOUBLE)
        undo()
        await double.worker.close()
    results = {"scale": scale_name, "graph_latency_ms": graph_ms, "dataverse_latency_ms": dataverse_ms, "mailbox_activities_in_flight": activities,
               "machine": machine(), "command": " ".join(["python -m bench", *sys.argv[1:]]), "scenarios": [], "micro": micro(scale)}
    results["micro"]["mailbox_activity_peak_heap_mb"] = memory
    results["webhook_latency"] = latency
    results["preflight"] = checked
    for s in scenarios:
        entry = {"name": s.name, "changed_bookings": s.changed, **s.figures}
        if not s.name.startswith("bulk"):
            bound = lower_bounds(s, s.graph_ms or graph_ms, s.mailboxes or len(mailboxes), activities, s.name)
            entry["bound"] = bound
            ops = s.figures["graph_operations"]
            entry["ratio"] = {"graph_operations": round(ops / bound["graph_operations"], 3) if bound["graph_operations"] else (0.0 if ops == 0 else None),
                              "wall_s": round(s.figures["wall_s"] / bound["wall_s"], 2) if bound["wall_s"] else None,
                              "ops_per_http_request": round(ops / s.figures["graph_http_requests"], 1) if s.figures["graph_http_requests"] else None}
        results["scenarios"].append(entry)
    return results


def machine() -> dict:
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3, 1),
            "date": datetime.now(UTC).strftime("%Y-%m-%d")}


def _cell(value: object) -> object:
    return "-" if value is None else value


def table(results: dict) -> str:
    rows = ["| scenario | wall s (bound, ratio) | sync CPU s | emulator CPU s | Table Storage CPU s | Graph ops (bound, ratio) | Graph HTTP | ops/HTTP | Dataverse req | max conc/mailbox | 429s | peak RSS MB | planning CPU s | GC pauses s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in results["scenarios"]:
        b, r = s.get("bound", {}), s.get("ratio", {})
        wall = f"{s['wall_s']}" + ((f" ({b['wall_s']}, {r['wall_s']}x)" if r.get("wall_s") else " (0, -)") if b else "")
        ops = f"{s['graph_operations']}" + (f" ({b['graph_operations']}, {r.get('graph_operations')})" if b else "")
        rows.append(f"| {s['name']} | {wall} | {s.get('sync_cpu_s', '')} | {s.get('emulator_cpu_s', '')} | {s.get('table_storage_cpu_s', '')} | {ops} | {s['graph_http_requests']} | {_cell(r.get('ops_per_http_request', ''))} | {s['dataverse_requests']} | "
                    f"{s['max_concurrency_per_mailbox']} | {s['throttled_429']} | {s['peak_rss_mb']} | {s.get('planning_cpu_s', '')} | {s.get('gc_pause_s', '')} |")
    rows += ["", "| scenario | collect s | touched mailboxes | Table round trips / touched mailbox | sync CPU ms / touched mailbox | "
                 "sync CPU ms / Graph op | mailbox writes done after (s): p50 / p95 / max |", "|---|---|---|---|---|---|---|"]
    for s in results["scenarios"]:
        if "touched_mailboxes" in s:
            d = s["mailbox_done_s"]
            rows.append(f"| {s['name']} | {s.get('collect_s', '')} | {s['touched_mailboxes']} | {_cell(s['table_round_trips_per_touched_mailbox'])} | "
                        f"{_cell(s['sync_cpu_ms_per_touched_mailbox'])} | {_cell(s['sync_cpu_ms_per_graph_operation'])} | {_cell(d['p50'])} / {_cell(d['p95'])} / {_cell(d['max'])} |")
    retried = [f"{s['name']}: {s['collect_attempts']} attempts ({', '.join(s['collect_failures'])})" for s in results["scenarios"]
               if s.get("collect_attempts", 1) > 1]
    m = results["micro"]
    rows += ["", f"- collect retried: {'; '.join(retried) if retried else 'in no scenario'}",
             f"- `function_app` import (cold start): {m['function_app_import_s']} s",
             f"- planner: {m['planner_bookings']} bookings in {m['planner_cpu_s']} s CPU ({m['planner_bookings_per_s']} bookings/s)",
             f"- one mailbox activity: peak Python heap {m['mailbox_activity_peak_heap_mb']} MB"]
    pre = results.get("preflight")
    if pre:
        rows.append(f"- preflight (G3) at realistic latency, {pre['enabled_mailboxes']} enabled mailboxes: {pre['seconds']} s, "
                    f"verdict {pre['verdict']}")
    w = results.get("webhook_latency")
    if w:
        rows.append(f"- webhook (T3): booking change -> event updated, over {w['changes']} changes: p50 {w['p50_s']} s, p95 {w['p95_s']} s, "
                    f"max {w['max_s']} s, lost {w['lost']}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=sorted(SCALES), default="full")
    p.add_argument("--graph-latency-ms", type=float, default=30)
    p.add_argument("--dataverse-latency-ms", type=float, default=50)
    p.add_argument("--activities", type=int, default=32, help="mailbox activities in flight (maxConcurrentActivityFunctions x instances)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = p.parse_args(argv)
    results = asyncio.run(run(args.scale, args.graph_latency_ms, args.dataverse_latency_ms, args.activities))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"results-{args.scale}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nwritten: {args.out / f'results-{args.scale}.json'}")
    return 0

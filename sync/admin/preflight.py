"""G3: the preflight. With the app's own identity, before the first cycle, it checks what a real deployment needs and
says for each check what it found and what to do (sync/core/preflight.py). Checks made so far:

- the state store: its tables, a write and a read (a named lease taken and given back);
- per environment: the application user (WhoAmI), change tracking on the tables the sync reads (T5), and the
  registered mailboxes whose Dynamics mailbox already syncs appointments through server-side synchronization (M7);
- Exchange: the test of the mailboxes that sync (a sample of at most SAMPLE), refusals told apart, with M8's delay
  (a mailbox already in Failure is listed by `mailboxes list` with its reason; this finds a scope that drifted);
- each other Entra tenant: its mailboxes' tests refused by the tenant (consent, federated trust).

Every check runs whatever the others found, and a check that cannot run says so as its failure, never as an error.
"""
from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError

from ..core import mailbox_reasons
from ..core.preflight import FAIL, PASS, WARN, Check, verdict
from ..core.tenants import TENANT_REASONS
from ..ports import MailboxRecord, Services, SyncError

SAMPLE = 25                       # enabled mailboxes tested (Exchange's scope is per mailbox: a sample shows a gap)
TIMEOUT_S = 25.0                  # each check's budget: the whole preflight answers within 30 s
DEPLOY = "docs/deploy.md"
DATAVERSE_PAGE = f"{DEPLOY}#2-give-the-identity-read-access-to-dataverse-least-privilege"


async def preflight(services: Services, environments: tuple[str, ...], now: datetime) -> dict[str, Any]:
    store, records = await _store(services, now)      # first: the other checks weigh the mailboxes it read
    found: list[Any] = [store, *await asyncio.gather(*(_environment(services, e, records) for e in environments),
                                                     _exchange(services, records))]
    flat: list[Check] = []
    for checks in found:
        flat.extend(checks if isinstance(checks, list) else [checks])
    return {"verdict": verdict(flat), "checks": [c.to_dict() for c in flat]}


async def _bounded(name: str, page: str, work: Any) -> Any:
    """A check's result, or its failure when it could not run: an answer, never an error."""
    try:
        return await asyncio.wait_for(work, TIMEOUT_S)
    except TimeoutError:
        return Check(name, FAIL, {"seconds": TIMEOUT_S}, f"no answer within {TIMEOUT_S:.0f} s; check the network path to the service", page)
    except (AzureError, OSError, SyncError) as exc:
        return Check(name, FAIL, {"error": type(exc).__name__}, "the check could not run: the service did not answer, or refused the "
                     "app's identity (see the other checks)", page)


async def _store(services: Services, now: datetime) -> tuple[Check, list[MailboxRecord]]:
    """The store's check, and the mailboxes it read (none when it could not)."""
    read: list[MailboxRecord] = []

    async def run() -> Check:
        holder = f"preflight-{uuid.uuid4()}"
        try:
            await services.store.ensure_tables()
            wrote = await services.store.leases.acquire("preflight", holder, now, 30)
            await services.store.leases.release("preflight", holder)
            read.extend(await services.store.mailboxes.all())
            mailboxes = len(read)
        except (AzureError, OSError, SyncError) as exc:
            return Check("state store", FAIL, {"error": type(exc).__name__},
                         "the app cannot write its Table Storage: check STATE_STORAGE_* and the identity's Storage Table Data "
                         "Contributor role on the account", f"{DEPLOY}#1-deploy-the-azure-resources-and-the-code")
        if not wrote:
            return Check("state store", WARN, {"mailboxes": mailboxes}, "another preflight holds its probe row; run it again", DEPLOY)
        return Check("state store", PASS, {"mailboxes": mailboxes, "write_and_read": True})
    return await _bounded("state store", DEPLOY, run()), read


async def _environment(services: Services, environment: str, records: list[MailboxRecord]) -> list[Check]:
    async def run() -> list[Check]:
        source = services.source(environment)
        try:
            facts = await source.environment_facts()
        except (SyncError, AzureError, OSError) as exc:
            return [Check(f"dataverse: {environment}", FAIL, {"error": type(exc).__name__, "code": getattr(exc, "code", "")},
                          "the app's identity is not an application user of this environment with the sync's security role: "
                          "add it (Power Platform admin center > Application users)", DATAVERSE_PAGE)]
        checks = [Check(f"dataverse: {environment}", PASS, {"application_user": facts.application_user})]
        tracking = facts.tracking
        off = sorted(t for t, on in tracking.items() if not on)
        if off:
            checks.append(Check(f"change tracking: {environment}", WARN, {"off": off},
                                "every cycle reads the whole window until change tracking is on for these tables (T5): Power Apps > "
                                "Tables > the table > Properties > Advanced options > Track changes", DATAVERSE_PAGE))
        else:
            checks.append(Check(f"change tracking: {environment}", PASS, {"tables": sorted(tracking)}))
        checks.append(await _dynamics_sync(source, environment, records))
        return checks
    return await _bounded(f"dataverse: {environment}", DEPLOY, run())


async def _dynamics_sync(source: Any, environment: str, records: list[MailboxRecord]) -> Check:
    """M7: registered mailboxes that Dynamics' own server-side sync already serves would get every booking twice."""
    synced = await source.dynamics_synced()
    both = sorted(r.address for r in records
                  if r.address in synced and (r.mailbox.environment or environment).lower() == environment.lower())
    if not both:
        return Check(f"dynamics sync: {environment}", PASS, {"served_by_dynamics": len(synced), "registered_here": 0})
    return Check(f"dynamics sync: {environment}", WARN, {"served_by_dynamics": len(synced), "registered_here": len(both)},
                 mailbox_reasons.sentence(mailbox_reasons.DYNAMICS_SYNC), f"{DEPLOY}#5-turn-off-the-built-in-field-service-booking-sync")


async def _exchange(services: Services, records: list[MailboxRecord]) -> list[Check]:
    async def run() -> list[Check]:
        enabled = [r for r in records if r.syncs]
        sample = sorted(r.address for r in enabled)[:SAMPLE]
        if not sample:
            return [Check("exchange scope", WARN, {"enabled": 0}, "no mailbox is enabled yet: discover, approve and test them "
                          "(python -m sync mailboxes discover, approve, test)", "README.md")]
        probes = await services.calendar.test_mailboxes(sample)
        reasons = Counter(p.reason or "ok" for p in probes.values() if not p.ok)
        tenant_refused = {r: n for r, n in reasons.items() if r in TENANT_REASONS}
        found: dict[str, Any] = {"enabled": len(enabled), "tested": len(sample), "sampled": len(enabled) > len(sample),
                                 "refused": dict(reasons)}
        checks = []
        denied = reasons.get(mailbox_reasons.ACCESS_DENIED, 0)
        others = sum(n for r, n in reasons.items() if r not in TENANT_REASONS)
        if others:
            advice = (mailbox_reasons.sentence(mailbox_reasons.ACCESS_DENIED) if denied else
                      "the refused mailboxes are named by `python -m sync mailboxes list` with their reasons")
            checks.append(Check("exchange scope", WARN if denied == others else FAIL, found, advice,
                                f"{DEPLOY}#3-let-the-identity-write-the-technicians-calendars-and-nobody-elses"))
        else:
            checks.append(Check("exchange scope", PASS, found))
        if tenant_refused:
            checks.append(Check("other tenants", FAIL, {"refused": tenant_refused},
                                "a tenant named in MAILBOX_TENANTS refuses the app: consent and the federated trust (docs/cross-tenant.md)",
                                "docs/cross-tenant.md"))
        elif services.tenants.domains:
            checks.append(Check("other tenants", PASS, {"tenants": len(set(services.tenants.domains.values()))}))
        return checks
    return await _bounded("exchange scope", DEPLOY, run())

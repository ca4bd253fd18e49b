"""The orchestrators: they only orchestrate. No I/O, no clock but `context.current_utc_datetime`, plain dicts.

sync_cycle           per environment, one activity reads the changes once (retry options on transient
                     errors); then one activity per mailbox with pending work (T2), in groups of
                     MAILBOX_GROUP through sub-orchestrations so each history stays small; mailboxes that
                     failed transiently get further rounds after a durable timer; progress in the custom
                     status; a summary recorded.
sync_mailbox_group   one group's fan-out.
sync_mailbox_now     T3: one mailbox now, for a webhook; loops while work is pending.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import azure.durable_functions as df

# Every name the host knows these functions by, in one place (functions.py registers them, the local runner
# drives them by the same names).
CYCLE_ORCHESTRATOR = "sync_cycle"
GROUP_ORCHESTRATOR = "sync_mailbox_group"
MAILBOX_ORCHESTRATOR = "sync_mailbox_now"
COLLECT_ACTIVITY = "collect_environment"
SYNC_MAILBOX_ACTIVITY = "sync_mailbox"
RECORD_RUN_ACTIVITY = "record_run"
FINISH_MAILBOX_SYNC_ACTIVITY = "finish_mailbox_sync"
GUARD_ACTIVITY = "check_removals"
RETEST_ACTIVITY = "retest_mailboxes"
CYCLE_INSTANCE_ID = "fieldservice-outlook-sync-cycle"
MAILBOX_GROUP = 50
RETRY_ROUNDS = 2
RETRY_DELAYS_S = (30, 120)


def collect_retry() -> df.RetryOptions:
    options = df.RetryOptions(first_retry_interval_in_milliseconds=5_000, max_number_of_attempts=3)
    options.backoff_coefficient = 3
    return options


def sync_cycle(context: df.DurableOrchestrationContext):
    settings: dict[str, Any] = context.get_input() or {}
    now = context.current_utc_datetime
    environments = settings.get("environments") or []
    # To the microsecond: the id also names the cycle's one listing of the mailboxes (app/listing.py), and two cycles
    # started within one second must not share it.
    run = {"id": context.instance_id + ":" + now.strftime("%Y%m%dT%H%M%S.%fZ"), "started": now.isoformat(),
           "trigger": settings.get("trigger", "timer"), "environments": [], "mailboxes": []}

    context.set_custom_status({"phase": "collect", "environments": len(environments)})
    mailboxes: set[str] = set()
    carried: set[str] = set()                       # mailboxes whose work was waiting before this cycle (D5's guard)
    retest: set[str] = set()
    for index, environment in enumerate(environments):
        # The last collect's listing of the mailbox rows, made after every collect of the cycle wrote, can be the one
        # its activities share (`cycle`); an earlier one's cannot.
        last = index == len(environments) - 1
        try:
            collected = yield context.call_activity_with_retry(COLLECT_ACTIVITY, collect_retry(),
                                                                {"environment": environment, "now": now.isoformat(),
                                                                 "cycle": run["id"] if last else None})
        except Exception as exc:
            collected = {"environment": environment, "error": str(exc)[:500], "mailboxes": []}
        run["environments"].append({k: v for k, v in collected.items() if k not in ("mailboxes", "carried", "retest")})
        mailboxes.update(collected.get("mailboxes", []))
        carried.update(collected.get("carried", []))
        retest.update(collected.get("retest", []))
    if retest:                                      # M8: mailboxes Exchange refused while it may still apply the app's scope
        run["retested"] = yield context.call_activity(RETEST_ACTIVITY, {"mailboxes": sorted(retest), "now": now.isoformat(),
                                                                        "cycle": run["id"]})

    results: dict[str, dict] = {}
    todo = sorted(mailboxes)
    guard_message = None
    candidates = sum(e.get("removal_candidates", 0) for e in run["environments"])
    held = sum(e.get("removals_held", 0) for e in run["environments"])
    if todo and (candidates or held or carried) and not settings.get("force", False):   # D5, before any mailbox removes anything
        context.set_custom_status({"phase": "guard", "mailboxes": len(todo)})
        run["guard"] = yield context.call_activity(GUARD_ACTIVITY, {"mailboxes": todo, "candidates": candidates, "held": held,
                                                                    "carried": sorted(carried),
                                                                    "now": now.isoformat(), "cycle": run["id"]})
        guard_message = run["guard"].get("message")
    for attempt in range(RETRY_ROUNDS + 1):
        if not todo:
            break
        if attempt:
            yield context.create_timer(context.current_utc_datetime + timedelta(seconds=RETRY_DELAYS_S[attempt - 1]))
        context.set_custom_status({"phase": "sync", "round": attempt + 1, "mailboxes": len(todo), "done": len(results)})
        batch = {"mailboxes": todo, "now": now.isoformat(), "force": settings.get("force", False), "guard_message": guard_message,
                 "instance": context.instance_id, "cycle": run["id"]}
        outcome = yield from _fan_out(context, batch)
        for r in outcome:
            results[r["mailbox_ref"]] = r
        todo = sorted(r["mailbox_ref"] for r in outcome if r.get("retryable"))

    run["mailboxes"] = [results[m] for m in sorted(results)]
    run.update(_summarise(run["mailboxes"]))
    run["outcome"] = _cycle_outcome(run)
    run["finished"] = context.current_utc_datetime.isoformat()
    context.set_custom_status({"phase": "done", **run["totals"]})
    yield context.call_activity(RECORD_RUN_ACTIVITY, run)
    return run


def _fan_out(context: df.DurableOrchestrationContext, batch: dict):
    mailboxes = batch["mailboxes"]
    if len(mailboxes) <= MAILBOX_GROUP:
        return (yield context.task_all([context.call_activity(SYNC_MAILBOX_ACTIVITY, _mailbox_input(batch, m)) for m in mailboxes]))
    groups = [mailboxes[i:i + MAILBOX_GROUP] for i in range(0, len(mailboxes), MAILBOX_GROUP)]
    nested = yield context.task_all([context.call_sub_orchestrator(GROUP_ORCHESTRATOR, {**batch, "mailboxes": g})
                                     for g in groups])
    return [r for group in nested for r in group]


def sync_mailbox_group(context: df.DurableOrchestrationContext):
    batch = context.get_input()
    results = yield context.task_all([context.call_activity(SYNC_MAILBOX_ACTIVITY, _mailbox_input(batch, m)) for m in batch["mailboxes"]])
    return results


def _mailbox_input(batch: dict, ref: str) -> dict[str, Any]:
    # the lease holder is this orchestration's own call: a re-run of the activity after a host crash takes its lease over
    # `cycle`: the activities of one cycle share one listing of the mailbox rows, made after its collect
    return {"mailbox_ref": ref, "now": batch["now"], "force": batch["force"], "guard_message": batch.get("guard_message"),
            "lease_holder": f"{batch.get('instance', 'cycle')}:{ref}", "cycle": batch.get("cycle")}


def _cycle_outcome(run: dict) -> str:
    """failed: an environment could not be collected; partial: some mailboxes failed or were blocked; else succeeded."""
    if any(e.get("error") for e in run["environments"]):
        return "failed"
    if any(outcome not in ("synced", "skipped") for outcome in run["outcomes"]):
        return "partial"
    return "succeeded"


def _summarise(results: list[dict]) -> dict:
    totals: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    for r in results:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
        for name, n in (r.get("counts") or {}).items():
            totals[name] = totals.get(name, 0) + n
    return {"totals": totals, "outcomes": outcomes}


MAILBOX_ROUNDS = 20
BUSY_WAIT_S = 2


def sync_mailbox_now(context: df.DurableOrchestrationContext):
    """T3: one mailbox, now, for the webhook. Changes arriving meanwhile mark the mailbox dirty (WakeStore) and
    this loop goes round again; it ends only when `finish_mailbox_sync` finds nothing marked since, so no
    change waits for the timer. Input and output carry the mailbox's pseudonym, never its address."""
    request = context.get_input()
    ref, generation = request["mailbox_ref"], request["generation"]
    rounds = 0
    totals: dict[str, int] = {}
    result: dict = {}
    done = False
    while not done and rounds < MAILBOX_ROUNDS:
        rounds += 1
        result = yield context.call_activity(SYNC_MAILBOX_ACTIVITY, {"mailbox_ref": ref, "now": context.current_utc_datetime.isoformat(),
                                                                     "force": False, "lease_holder": f"{context.instance_id}:{ref}"})
        for name, n in (result.get("counts") or {}).items():
            totals[name] = totals.get(name, 0) + n
        if result.get("outcome") == "busy":                  # the timer cycle holds the mailbox: wait for it
            yield context.create_timer(context.current_utc_datetime + timedelta(seconds=BUSY_WAIT_S))
            continue
        synced = result.get("outcome") == "synced"
        if synced and result.get("pending_left"):
            continue
        finished = yield context.call_activity(FINISH_MAILBOX_SYNC_ACTIVITY, _finish(ref, generation, context, release=not synced))
        done = finished["done"]
    if not done:                                             # out of rounds: hand over to the next webhook or the timer
        yield context.call_activity(FINISH_MAILBOX_SYNC_ACTIVITY, _finish(ref, generation, context, release=True))
    return {"mailbox_ref": ref, "rounds": rounds, "outcome": result.get("outcome"), "totals": totals}


def _finish(ref: str, generation: int, context: df.DurableOrchestrationContext, *, release: bool) -> dict[str, Any]:
    return {"mailbox_ref": ref, "generation": generation, "now": context.current_utc_datetime.isoformat(), "release": release}


ORCHESTRATORS = {CYCLE_ORCHESTRATOR: sync_cycle, GROUP_ORCHESTRATOR: sync_mailbox_group, MAILBOX_ORCHESTRATOR: sync_mailbox_now}

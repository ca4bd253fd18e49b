"""The orchestrators, run through the Durable SDK's own replay executor (sync/local/durable.py) with
activities that stand in for Dataverse and Graph work (T1, T2, M6, E1)."""
from __future__ import annotations

from collections import Counter
from datetime import UTC

from sync.app.orchestrators import CYCLE_ORCHESTRATOR, GROUP_ORCHESTRATOR, MAILBOX_GROUP, sync_cycle, sync_mailbox_group
from sync.local.durable import DurableRunner
from sync.ports import TransientError


class Activities:
    def __init__(self, mailboxes_by_env: dict[str, list[str]], mailbox_outcomes: dict[str, list[dict]] | None = None,
                 collect_failures: dict[str, int] | None = None):
        self.mailboxes_by_env = mailboxes_by_env
        self.mailbox_outcomes = mailbox_outcomes or {}
        self.collect_failures = dict(collect_failures or {})
        self.calls: Counter[str] = Counter()
        self.recorded: list[dict] = []

    async def collect_environment(self, payload):
        env = payload["environment"]
        self.calls["collect:" + env] += 1
        if self.collect_failures.get(env, 0) > 0:
            self.collect_failures[env] -= 1
            raise TransientError(f"{env} answered 503 after retries")
        return {"environment": env, "mode": "delta", "mailboxes": self.mailboxes_by_env[env]}

    async def sync_mailbox(self, payload):
        mailbox = payload["mailbox_ref"]          # orchestrations carry the keys collect returned (pseudonyms in the app)
        self.calls["sync:" + mailbox] += 1
        queued = self.mailbox_outcomes.get(mailbox)
        if queued:
            return {"mailbox_ref": mailbox, **queued.pop(0)}
        return {"mailbox_ref": mailbox, "outcome": "synced", "counts": {"created": 1}, "retryable": False}

    async def record_run(self, run):
        self.recorded.append(run)
        return {"recorded": run["id"]}


def runtime(acts: Activities) -> DurableRunner:
    return DurableRunner({CYCLE_ORCHESTRATOR: sync_cycle, GROUP_ORCHESTRATOR: sync_mailbox_group},
                               {"collect_environment": acts.collect_environment, "sync_mailbox": acts.sync_mailbox,
                                "record_run": acts.record_run})


async def run(acts: Activities, environments=("https://a.crm.dynamics.com",), **input_):
    rt = runtime(acts)
    output = await rt.run(CYCLE_ORCHESTRATOR, {"environments": list(environments), **input_}, "cycle")
    return output, rt


async def test_r_t2_fans_out_one_activity_per_mailbox():
    mailboxes = [f"m{i:02d}@x.example" for i in range(12)]
    acts = Activities({"https://a.crm.dynamics.com": mailboxes})
    output, rt = await run(acts)
    assert sorted(r["mailbox_ref"] for r in output["mailboxes"]) == mailboxes
    assert all(acts.calls["sync:" + m] == 1 for m in mailboxes)
    assert output["totals"] == {"created": 12} and output["outcomes"] == {"synced": 12}
    assert acts.recorded[0]["id"] == output["id"]
    assert rt.instances["cycle"].custom_status["phase"] == "done"


async def test_the_local_runner_runs_at_most_its_limit_of_activities_at_once_in_fan_out_order():
    """host.json's maxConcurrentActivityFunctions, as the local runner keeps it; a failed activity frees its slot."""
    import asyncio

    def fan_out(context):
        try:
            return (yield context.task_all([context.call_activity("work", i) for i in range(context.get_input())]))
        except Exception:
            return "failed"

    running, peak, started = set(), [0], []

    async def work(i):
        started.append(i)
        running.add(i)
        peak[0] = max(peak[0], len(running))
        await asyncio.sleep(0.001)
        running.discard(i)
        if i % 7 == 0:
            raise RuntimeError("the activity failed")
        return i

    rt = DurableRunner({"fan_out": fan_out}, {"work": work}, max_concurrent_activities=5)
    assert await rt.run("fan_out", 200) == "failed"
    assert peak[0] == 5
    assert started == list(range(200))                                    # every one ran, in the order fanned out


async def test_r_t2_large_organisations_fan_out_through_sub_orchestrations_with_small_histories():
    mailboxes = [f"m{i:03d}@x.example" for i in range(3 * MAILBOX_GROUP + 7)]
    acts = Activities({"https://a.crm.dynamics.com": mailboxes})
    output, rt = await run(acts)
    assert len(output["mailboxes"]) == len(mailboxes) and output["outcomes"] == {"synced": len(mailboxes)}
    groups = [i for i in rt.instances.values() if i.name == GROUP_ORCHESTRATOR]
    assert len(groups) == 4
    # the cycle's own history holds 4 sub-orchestrations, not 157 activities
    assert rt.instances["cycle"].history_events < 40
    assert max(len(g.activities) for g in groups) == MAILBOX_GROUP


async def test_r_m6_one_mailbox_failing_permanently_does_not_stop_the_others():
    mailboxes = ["a@x.example", "b@x.example", "c@x.example"]
    acts = Activities({"https://a.crm.dynamics.com": mailboxes},
                      {"b@x.example": [{"outcome": "failed", "error": "access_denied", "counts": {}, "retryable": False}]})
    output, _ = await run(acts)
    assert output["outcomes"] == {"synced": 2, "failed": 1}
    assert acts.calls["sync:b@x.example"] == 1                          # permanent: not retried


async def test_r_e1_transient_mailbox_failure_is_retried_in_a_later_round():
    acts = Activities({"https://a.crm.dynamics.com": ["a@x.example", "b@x.example"]},
                      {"a@x.example": [{"outcome": "error", "error": "503", "counts": {}, "retryable": True}]})
    output, rt = await run(acts)
    assert output["outcomes"] == {"synced": 2}
    assert acts.calls["sync:a@x.example"] == 2 and acts.calls["sync:b@x.example"] == 1
    assert rt.instances["cycle"].episodes >= 4                          # collect, sync, timer, retry, record


async def test_r_e1_transient_collect_failure_is_retried_by_the_activity_retry_options():
    acts = Activities({"https://a.crm.dynamics.com": ["a@x.example"]}, collect_failures={"https://a.crm.dynamics.com": 2})
    output, _ = await run(acts)
    assert acts.calls["collect:https://a.crm.dynamics.com"] == 3
    assert output["outcomes"] == {"synced": 1}


async def test_an_environment_that_stays_unreachable_does_not_stop_the_others():
    acts = Activities({"https://a.crm.dynamics.com": ["a@x.example"], "https://b.crm.dynamics.com": ["b@x.example"]},
                      collect_failures={"https://a.crm.dynamics.com": 99})
    output, _ = await run(acts, environments=("https://a.crm.dynamics.com", "https://b.crm.dynamics.com"))
    assert acts.calls["collect:https://a.crm.dynamics.com"] == 3            # max_number_of_attempts
    errors = {e["environment"]: e.get("error") for e in output["environments"]}
    assert "503" in errors["https://a.crm.dynamics.com"] and errors["https://b.crm.dynamics.com"] is None
    assert [r["mailbox_ref"] for r in output["mailboxes"]] == ["b@x.example"]


async def test_orchestration_time_comes_from_the_context_not_the_clock():
    from datetime import datetime
    fixed = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    acts = Activities({"https://a.crm.dynamics.com": ["a@x.example"]})
    seen = []
    original = acts.sync_mailbox

    async def capture(payload):
        seen.append(payload["now"])
        return await original(payload)

    acts.sync_mailbox = capture
    rt = DurableRunner({CYCLE_ORCHESTRATOR: sync_cycle, GROUP_ORCHESTRATOR: sync_mailbox_group},
                             {"collect_environment": acts.collect_environment, "sync_mailbox": capture, "record_run": acts.record_run},
                             clock=lambda: fixed)
    output = await rt.run(CYCLE_ORCHESTRATOR, {"environments": ["https://a.crm.dynamics.com"]}, "cycle")
    assert output["started"] == fixed.isoformat() and seen == [fixed.isoformat()]


async def test_r_t3_a_mailbox_sync_goes_round_again_while_changes_arrive_and_ends_only_when_none_did():
    from sync.app.orchestrators import FINISH_MAILBOX_SYNC_ACTIVITY, MAILBOX_ORCHESTRATOR, ORCHESTRATORS, SYNC_MAILBOX_ACTIVITY
    finishes = [{"done": False}, {"done": False}, {"done": True}]       # two changes were marked while it ran
    seen: list[dict] = []

    async def sync(payload):
        seen.append(payload)
        return {"mailbox_ref": payload["mailbox_ref"], "outcome": "synced", "counts": {"updated": 1}, "pending_left": 0}

    async def finish(payload):
        assert payload["generation"] == 7 and payload["release"] is False
        return finishes.pop(0)

    runner = DurableRunner(ORCHESTRATORS, {SYNC_MAILBOX_ACTIVITY: sync, FINISH_MAILBOX_SYNC_ACTIVITY: finish})
    output = await runner.run(MAILBOX_ORCHESTRATOR, {"mailbox_ref": "mbx-0123456789ab", "generation": 7}, "mailbox-sync-mbx-0123456789ab-7")
    assert output == {"mailbox_ref": "mbx-0123456789ab", "rounds": 3, "outcome": "synced", "totals": {"updated": 3}}
    assert all("@" not in str(p) for p in seen) and not finishes


async def test_r_t3_a_failed_mailbox_sync_releases_its_claim_so_the_next_change_starts_a_new_one():
    from sync.app.orchestrators import FINISH_MAILBOX_SYNC_ACTIVITY, MAILBOX_ORCHESTRATOR, ORCHESTRATORS, SYNC_MAILBOX_ACTIVITY
    released = []

    async def sync(payload):
        return {"mailbox_ref": payload["mailbox_ref"], "outcome": "failed", "counts": {}, "error": "access_denied"}

    async def finish(payload):
        released.append(payload["release"])
        return {"done": True}

    runner = DurableRunner(ORCHESTRATORS, {SYNC_MAILBOX_ACTIVITY: sync, FINISH_MAILBOX_SYNC_ACTIVITY: finish})
    output = await runner.run(MAILBOX_ORCHESTRATOR, {"mailbox_ref": "mbx-0123456789ab", "generation": 1}, "i")
    assert output["rounds"] == 1 and released == [True]


async def test_r_d5_work_waiting_from_before_the_cycle_brings_the_guard_even_without_new_candidates():
    """Collect names the mailboxes whose work was already waiting; the cycle asks the deployment-wide guard about
    them even when this collect found nothing that could remove, and its verdict holds every mailbox's removals."""
    mailboxes = ["m01@x.example", "m02@x.example"]
    acts = Activities({"https://a.crm.dynamics.com": mailboxes})
    collected = acts.collect_environment
    asked: list[dict] = []
    held: list[object] = []

    async def collect_with_waiting_work(payload):
        return {**await collected(payload), "removal_candidates": 0, "carried": ["m01@x.example"]}

    async def check_removals(payload):
        asked.append(payload)
        return {"removals": 11, "exact": True, "links": 20, "blocked": True, "message": "held"}

    async def sync_mailbox(payload):
        held.append(payload["guard_message"])
        return {"mailbox_ref": payload["mailbox_ref"], "outcome": "blocked", "counts": {}, "retryable": False}

    rt = DurableRunner({CYCLE_ORCHESTRATOR: sync_cycle, GROUP_ORCHESTRATOR: sync_mailbox_group},
                       {"collect_environment": collect_with_waiting_work, "sync_mailbox": sync_mailbox,
                        "record_run": acts.record_run, "check_removals": check_removals})
    output = await rt.run(CYCLE_ORCHESTRATOR, {"environments": ["https://a.crm.dynamics.com"]}, "cycle")
    assert [a["carried"] for a in asked] == [["m01@x.example"]] and held == ["held", "held"]
    assert output["guard"]["blocked"] and "carried" not in output["environments"][0]


async def test_r_t2_two_cycles_started_within_one_second_have_their_own_listing():
    """The cycle's id names the one listing of the mailbox rows its activities share (made after its collect, with the
    observations collect left on the rows): a second cycle within the same second must not reuse the first's."""
    from datetime import datetime
    seen: list[str] = []
    acts = Activities({"https://a.crm.dynamics.com": ["m@x.example"]})
    sync = acts.sync_mailbox

    async def noting(payload):
        seen.append(payload["cycle"])
        return await sync(payload)

    acts.sync_mailbox = noting
    for microsecond in (100, 900):
        rt = runtime(acts)
        rt.clock = lambda microsecond=microsecond: datetime(2026, 12, 7, 8, 0, 0, microsecond, tzinfo=UTC)
        await rt.run(CYCLE_ORCHESTRATOR, {"environments": ["https://a.crm.dynamics.com"]}, "cycle")
    assert len(seen) == 2 and seen[0] != seen[1] and [r["id"] for r in acts.recorded] == seen


async def test_r_t2_only_the_last_collect_of_a_cycle_offers_its_listing_to_the_cycle():
    """Each collect lists the mailbox rows after its writes; only the last environment's listing has every collect's
    marks and inline sets, so only that collect is told the cycle (and may serve its activities)."""
    acts = Activities({"https://a.crm.dynamics.com": ["a@x.example"], "https://b.crm.dynamics.com": ["b@x.example"]})
    payloads: list[dict] = []
    collect = acts.collect_environment

    async def noting(payload):
        payloads.append(payload)
        return await collect(payload)

    acts.collect_environment = noting
    output, _ = await run(acts, environments=("https://a.crm.dynamics.com", "https://b.crm.dynamics.com"))
    assert [p["environment"] for p in payloads] == ["https://a.crm.dynamics.com", "https://b.crm.dynamics.com"]
    assert payloads[0]["cycle"] is None and payloads[1]["cycle"] == output["id"]


def test_r_d5_a_sync_started_by_an_orchestration_from_before_the_rename_keeps_its_guard_verdict():
    """Durable replays an orchestration in flight during a deployment on the new code: its payloads still carry
    `hold_removals`. The guard's message (or its None: not held) is read from either key; a webhook's sync has none."""
    from sync.app.activities import _from_a_cycle, _guard_message
    assert _guard_message({"guard_message": "held"}) == _guard_message({"hold_removals": "held"}) == "held"
    assert _from_a_cycle({"hold_removals": None}) and _from_a_cycle({"guard_message": None})
    assert not _from_a_cycle({"mailbox_ref": "mbx-1", "generation": 1}) and _guard_message({}) is None

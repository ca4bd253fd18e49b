"""Run Durable Functions orchestrators in process, through the Durable SDK's own replay executor.

The Functions host and its Durable extension cannot run here (Core Tools cannot be installed), so the
local runner and the tests drive the *same* orchestrator functions the cloud runs: each episode builds
the history the extension would send (OrchestratorStarted, ExecutionStarted, TaskScheduled,
TaskCompleted/TaskFailed, TimerCreated/TimerFired, SubOrchestrationInstance*), calls the SDK's
`Orchestrator.handle`, and schedules whatever tasks the SDK left open, by the ids the SDK gave them.
Activities run concurrently, up to `max_concurrent_activities` (host.json's setting in the cloud).
"""
from __future__ import annotations

import asyncio
import json
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.durable_functions import DurableOrchestrationContext, Orchestrator
from azure.durable_functions.models.actions.CallActivityAction import CallActivityAction
from azure.durable_functions.models.actions.CallActivityWithRetryAction import CallActivityWithRetryAction
from azure.durable_functions.models.actions.CallSubOrchestratorAction import CallSubOrchestratorAction
from azure.durable_functions.models.actions.CallSubOrchestratorWithRetryAction import CallSubOrchestratorWithRetryAction
from azure.durable_functions.models.actions.CreateTimerAction import CreateTimerAction
from azure.durable_functions.models.history.HistoryEventType import HistoryEventType as E
from azure.durable_functions.models.Task import TaskState

Activity = Callable[[Any], Awaitable[Any]]


@dataclass
class InstanceRecord:
    instance_id: str
    name: str
    status: str = "Running"
    output: Any = None
    custom_status: Any = None
    history_events: int = 0
    episodes: int = 0
    activities: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)     # what the host would keep (and log): inputs, results, output


class OrchestrationFailed(Exception):
    pass


def _ts(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class DurableRunner:
    def __init__(self, orchestrators: dict[str, Callable], activities: dict[str, Activity], *, max_concurrent_activities: int = 8,
                 clock: Callable[[], datetime] | None = None, sleep_timers: bool = False,
                 progress: Callable[[int, int], None] | None = None, tracked: str | None = None):
        """`progress(done, scheduled)` is called as each `tracked` activity completes (a terminal's progress line)."""
        self.orchestrators, self.activities = orchestrators, activities
        self.progress, self.tracked = progress, tracked
        self._counts = [0, 0]                                   # tracked activities done, scheduled
        self.clock = clock or (lambda: datetime.now(UTC))
        self.sleep_timers = sleep_timers
        # Free activity slots as tokens in a queue: a waiter is woken in O(1). asyncio.Semaphore (Python 3.11) scans
        # all its waiters whenever a slot is free, which a fan-out to hundreds of mailboxes made quadratic.
        self._slots: asyncio.Queue[None] = asyncio.Queue()
        for _ in range(max_concurrent_activities):
            self._slots.put_nowait(None)
        self.instances: dict[str, InstanceRecord] = {}

    async def run(self, name: str, input_: Any = None, instance_id: str = "local") -> Any:
        fn = self.orchestrators[name]
        record = self.instances[instance_id] = InstanceRecord(instance_id, name)
        now = self.clock()
        history: list[dict] = [self._event(E.ORCHESTRATOR_STARTED, -1, now),
                               self._event(E.EXECUTION_STARTED, -1, now, Name=name, Input=json.dumps(input_), Version="")]
        scheduled: set[Any] = set()
        while True:
            record.episodes += 1
            context = DurableOrchestrationContext(history=history, instanceId=instance_id, isReplaying=False,
                                                  parentInstanceId=None, input=json.dumps(input_))
            state = json.loads(Orchestrator(fn).handle(context))
            record.custom_status = state.get("customStatus")
            record.history_events = len(history)
            record.history = history
            if state.get("error"):
                record.status = "Failed"
                raise OrchestrationFailed(f"{name} ({instance_id}) failed: {state['error']}")
            if state.get("isDone"):
                record.status, record.output = "Completed", state.get("output")
                return record.output
            # In the order the orchestrator scheduled them (the SDK's open tasks keep it), as the host dispatches them.
            pending = [(task_id, task) for task_id, task in context.open_tasks.items()
                       if task_id not in scheduled and getattr(task, "state", None) is TaskState.RUNNING]
            if not pending:
                raise OrchestrationFailed(f"{name} ({instance_id}) is waiting on something the local runner cannot provide")
            for event in history:
                event["IsPlayed"] = True
            history.append(self._event(E.ORCHESTRATOR_STARTED, -1, self.clock()))
            events = await asyncio.gather(*(self._run_task(task_id, task, instance_id, record) for task_id, task in pending))
            for task_id, _ in pending:
                scheduled.add(task_id)
            for group in events:
                history.extend(group)

    async def _run_task(self, task_id: Any, task: Any, instance_id: str, record: InstanceRecord) -> list[dict]:
        action = task.action_repr[0] if isinstance(task.action_repr, list) else task.action_repr
        parent = getattr(task, "parent", None)
        if type(action).__name__ == "NoOpAction" and parent is not None and hasattr(parent, "retry_options"):
            if "timer" in str(getattr(action, "metadata", "")):
                return await self._timer(task_id, parent.retry_options.first_retry_interval_in_milliseconds / 1000)
            action = parent.actions[0] if isinstance(parent.actions, list) else parent.actions
        now = self.clock()
        if isinstance(action, (CallActivityAction, CallActivityWithRetryAction)):
            record.activities.append(action.function_name)
            tracked = action.function_name == self.tracked
            self._counts[1] += tracked
            scheduled = self._event(E.TASK_SCHEDULED, task_id, now, Name=action.function_name)
            try:
                await self._slots.get()
                try:
                    result = await self.activities[action.function_name](json.loads(action.input_))
                finally:
                    self._slots.put_nowait(None)
                if tracked and self.progress is not None:
                    self._counts[0] += 1
                    self.progress(self._counts[0], self._counts[1])
                return [scheduled, self._event(E.TASK_COMPLETED, -1, self.clock(), TaskScheduledId=task_id, Result=json.dumps(result))]
            except Exception as exc:
                return [scheduled, self._event(E.TASK_FAILED, -1, self.clock(), TaskScheduledId=task_id,
                                               Reason=f"{type(exc).__name__}: {exc}",
                                               Details=traceback.format_exc(limit=3))]
        if isinstance(action, (CallSubOrchestratorAction, CallSubOrchestratorWithRetryAction)):
            child_id = action.instance_id or f"{instance_id}:{task_id}"
            created = self._event(E.SUB_ORCHESTRATION_INSTANCE_CREATED, task_id, now, Name=action.function_name, InstanceId=child_id)
            try:
                output = await self.run(action.function_name, json.loads(action._input), child_id)
                return [created, self._event(E.SUB_ORCHESTRATION_INSTANCE_COMPLETED, -1, self.clock(), TaskScheduledId=task_id,
                                             Result=json.dumps(output))]
            except OrchestrationFailed as exc:
                return [created, self._event(E.SUB_ORCHESTRATION_INSTANCE_FAILED, -1, self.clock(), TaskScheduledId=task_id,
                                             Reason=str(exc), Details="")]
        if isinstance(action, CreateTimerAction):
            return await self._timer(task_id, max(0.0, (action.fire_at - now).total_seconds()), action.fire_at)
        raise OrchestrationFailed(f"the local runner cannot run {type(action).__name__}")

    async def _timer(self, task_id: Any, seconds: float, fire_at: datetime | None = None) -> list[dict]:
        if self.sleep_timers and seconds > 0:
            await asyncio.sleep(seconds)
        fire = fire_at or self.clock()
        return [self._event(E.TIMER_CREATED, task_id, self.clock(), FireAt=_ts(fire)),
                self._event(E.TIMER_FIRED, -1, self.clock(), TimerId=task_id, FireAt=_ts(fire))]

    @staticmethod
    def _event(kind: E, event_id: Any, at: datetime, **extra: Any) -> dict:
        return {"EventType": int(kind), "EventId": event_id, "IsPlayed": False, "Timestamp": _ts(at), **extra}

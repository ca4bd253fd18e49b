"""What the planner needs to know of the deployment's settings; pure data (app/settings.py reads them)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta


@dataclass(frozen=True)
class SyncSettings:
    """What the planner needs; pure data."""
    profile: str = "fieldservice"
    window_past: timedelta = timedelta(days=7)
    window_future: timedelta = timedelta(days=14)
    propagate_cancellations: bool = False
    logical_deletes: str = "unlink"            # unlink | delete
    refresh_work_order_fields: bool = False
    remove_reassigned_future_events: bool = False
    mass_delete_percent: float = 50.0
    mass_delete_min: int = 10

    def with_profile(self, profile: str) -> SyncSettings:
        if profile == "enhanced":
            return replace(self, profile=profile, propagate_cancellations=True, refresh_work_order_fields=True,
                           remove_reassigned_future_events=True)
        return replace(self, profile=profile)

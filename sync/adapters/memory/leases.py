"""NamedLeases' and WakeRows' fakes."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass
class _Held:
    holder: str
    expires: datetime


class MemoryNamedLeases:
    def __init__(self) -> None:
        self.held: dict[str, _Held] = {}

    async def acquire(self, name: str, holder: str, now: datetime, ttl_s: float) -> bool:
        current = self.held.get(name.lower())
        if current is not None and current.holder != holder and current.expires > now:
            return False
        self.held[name.lower()] = _Held(holder, now + timedelta(seconds=ttl_s))
        return True

    async def renew(self, name: str, holder: str, now: datetime, ttl_s: float) -> bool:
        current = self.held.get(name.lower())
        if current is None or current.holder != holder:
            return False
        current.expires = now + timedelta(seconds=ttl_s)
        return True

    async def release(self, name: str, holder: str) -> None:
        current = self.held.get(name.lower())
        if current is not None and current.holder == holder:
            del self.held[name.lower()]


@dataclass
class _Wake:
    generation: int
    running: bool
    dirty: bool
    since: datetime


class MemoryWakeRows:
    def __init__(self) -> None:
        self.rows: dict[str, _Wake] = {}

    async def request(self, mailbox: str, now: datetime, stale_after_s: float) -> int | None:
        row = self.rows.get(mailbox.lower())
        if row is not None and row.running and row.since > now - timedelta(seconds=stale_after_s):
            row.dirty = True
            return None
        generation = (row.generation if row else 0) + 1
        self.rows[mailbox.lower()] = _Wake(generation, True, False, now)
        return generation

    async def finish(self, mailbox: str, generation: int, now: datetime, *, release: bool = False) -> bool:
        row = self.rows.get(mailbox.lower())
        if row is None or row.generation != generation or not row.running:
            return True
        again = row.dirty and not release
        row.running, row.dirty, row.since = again, False, now
        return not again

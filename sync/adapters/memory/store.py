"""The state's fake: one fake of each state port (their modules mirror sync/adapters/tables/ one for one)."""
from __future__ import annotations

from .etags import ETags
from .index import MemoryBookingIndex
from .journal import MemoryCursors, MemoryJournal
from .leases import MemoryNamedLeases, MemoryWakeRows
from .partitions import MemoryMailboxPartitions
from .registry import MemoryDeploymentConfig, MemoryMailboxRegistry


class MemoryState:
    def __init__(self) -> None:
        self.etags = ETags()
        self.mailboxes = MemoryMailboxRegistry(self.etags)
        self.config = MemoryDeploymentConfig()
        self.index = MemoryBookingIndex()
        self.partitions = MemoryMailboxPartitions(self.etags, self.index, self.mailboxes)
        self.cursors = MemoryCursors(self.etags)
        self.runs = MemoryJournal("started", by_id=True)
        self.audit = MemoryJournal("at", by_id=False)
        self.leases = MemoryNamedLeases()
        self.wakes = MemoryWakeRows()

    @property
    def writes(self) -> int:
        """Rows written so far (tests weigh a sync's writes with it)."""
        return self.etags.writes

    @property
    def link_writes(self) -> int:
        return self.partitions.link_writes

    async def ensure_tables(self) -> None:
        return None

    async def close(self) -> None:
        return None

"""The errors every adapter maps its failures to; the engine and the app know no provider's own exceptions."""
from __future__ import annotations


class SyncError(Exception):
    def __init__(self, message: str, code: str = "error"):
        super().__init__(message)
        self.code = code


class TransientError(SyncError):
    """429, 5xx, timeouts: retried with backoff, then left for the next cycle; a mailbox's status is unchanged."""


class PermanentError(SyncError):
    """Configuration or access problems a person must fix."""


class MailboxUnavailable(PermanentError):
    """The mailbox itself refused (not found, access denied, disabled: M6); `reason` is a person's next step."""

    def __init__(self, reason: str):
        super().__init__(reason, code="mailbox_unavailable")
        self.reason = reason


class ChangeTokenExpired(Exception):
    """Dataverse no longer knows the delta token: read the whole window instead (T4)."""


class ChangeTrackingOff(Exception):
    """A table's change tracking is off in the environment (Dataverse's 0x80072491): every cycle reads the whole
    window instead (T5). `table` names it (its logical name), for the run record and the preflight."""

    def __init__(self, table: str):
        super().__init__(f"change tracking is off for {table or 'a table the sync reads'}")
        self.table = table


class StoreConflict(Exception):
    """Someone else changed the row since it was read (ETag mismatch)."""

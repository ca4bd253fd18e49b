"""Error classes the engine acts on: transient (retry later, status unchanged) or permanent (M6)."""
from __future__ import annotations


class SyncError(Exception):
    def __init__(self, message: str, code: str = "error"):
        super().__init__(message)
        self.code = code


class TransientError(SyncError):
    """429, 5xx, timeouts: retried with backoff, then left for the next cycle; a mailbox's status is unchanged."""


class PermanentError(SyncError):
    """Configuration or access problems a person must fix."""



"""The ports: Protocols the engine, the app and the admin tools talk to, and the types they exchange.

One module per concern: errors, the booking source (Dataverse), the calendar (Graph), the state (Table Storage)
and its records, and the services the app hands out. Each port has an in-memory fake (sync/adapters/memory/)
and a real implementation (sync/adapters/), and one contract suite (tests/contract/) runs against both.
"""
from ..core.domain import Booking
from ..core.operations import CalendarOp, OpKind, OpResult, Outcome
from .calendar import Calendar, MailboxProbe
from .errors import ChangeTokenExpired, ChangeTrackingOff, MailboxUnavailable, PermanentError, StoreConflict, SyncError, TransientError
from .records import (
    ROW_SCHEMA,
    UNREADABLE_OBSERVATION,
    WRITE_COUNTS,
    Cursor,
    LeaseAsRead,
    LeaseHeld,
    MailboxCommit,
    MailboxFields,
    MailboxLease,
    MailboxRecord,
    MailboxState,
    Observation,
)
from .services import DurableClient, Services
from .source import FILTER_FIELDS, BookingSource, ChangeSet, EnvironmentFacts, ReadResult, UserResource
from .state import (
    BookingIndex,
    Cursors,
    DeploymentConfig,
    Journal,
    MailboxPartitions,
    MailboxRegistry,
    NamedLeases,
    Observed,
    State,
    WakeRows,
)

__all__ = [
    "FILTER_FIELDS", "ROW_SCHEMA", "UNREADABLE_OBSERVATION", "WRITE_COUNTS", "Booking", "BookingIndex",
    "BookingSource", "Calendar", "CalendarOp", "ChangeSet", "ChangeTokenExpired", "ChangeTrackingOff", "Cursor",
    "Cursors", "DeploymentConfig", "DurableClient", "EnvironmentFacts", "Journal", "LeaseAsRead", "LeaseHeld", "MailboxCommit",
    "MailboxFields", "MailboxLease", "MailboxPartitions", "MailboxProbe", "MailboxRecord", "MailboxRegistry",
    "MailboxState", "MailboxUnavailable", "NamedLeases", "Observation", "Observed", "OpKind", "OpResult", "Outcome",
    "PermanentError", "ReadResult", "Services", "State", "StoreConflict", "SyncError", "TransientError",
    "UserResource", "WakeRows",
]

"""Why a mailbox cannot be synced, in the product's words: one stable code and one sentence per reason, whichever
provider answered. The Graph adapter (adapters/graph_errors.py) converts Graph's answers into these codes; the sync
(M6: the mailbox marked Failure), the mailbox test (M2) and diagnose (G1) all say them with `sentence`."""
from __future__ import annotations

from .tenants import TENANT_REASONS

MAILBOX_NOT_FOUND = "mailbox_not_found"
MAILBOX_DISABLED = "mailbox_disabled"
ACCESS_DENIED = "access_denied"
CALENDAR_READ_ONLY = "calendar_read_only"
AUTH_FAILED = "auth_failed"
DYNAMICS_SYNC = "dynamics_sync"
# M8: Exchange, "Role Based Access Control for Applications", Limitations: "Changes to app permissions are subject to
# cache maintenance that varies between 30 minutes and 2 hours".
SCOPE_CHANGE_DELAY_S = 2 * 3600

SENTENCES = {
    MAILBOX_NOT_FOUND: "Exchange Online has no mailbox for this address; check the user's primary email address and licence.",
    MAILBOX_DISABLED: "The mailbox is inactive, soft-deleted or hosted on-premises; Graph cannot write to it.",
    ACCESS_DENIED: "Access denied: the app's Exchange RBAC for Applications scope does not include this mailbox; "
                   "add it to the management scope of the app's Calendars.ReadWrite role assignment. Exchange applies a "
                   "change of that scope after 30 minutes to 2 hours (Test-ServicePrincipalAuthorization shows it at once), "
                   "so the cycles test the mailbox again for 2 hours.",
    CALENDAR_READ_ONLY: "The app can read but not write this mailbox's calendar.",
    AUTH_FAILED: "The app could not get a token for Microsoft Graph; check its managed identity and Graph permission.",
    DYNAMICS_SYNC: "Dynamics 365 already synchronizes this mailbox's appointments through server-side synchronization, and "
                   "bookings from Field Service start synchronizing automatically: enabled here too, every booking would be "
                   "in the calendar twice (M7). Set the Dynamics mailbox's Appointments, Contacts, and Tasks to None, or "
                   "confirm (mailboxes test --confirm-dynamics-sync).",
}


def sentence(reason: str) -> str:
    return SENTENCES.get(reason, "")


def stated(reason: str | None, message: str | None = None) -> str:
    """`reason: sentence`, what a mailbox's status and a failed sync say. A tenant's refusal (its own sentence names the
    tenant, tenants.py) is said as given."""
    if reason in TENANT_REASONS:
        return message or reason or ""
    code = reason if reason in SENTENCES else MAILBOX_NOT_FOUND
    return f"{code}: {SENTENCES[code]}"

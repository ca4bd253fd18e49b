"""Graph's answers in the product's terms: one place converts a status and error code into an Outcome (what the
sync does next) and a mailbox's failure into its reason (core/mailbox_reasons.py, one sentence per reason), for
the sync's writes, the mailbox test and the direct reads alike.

Graph's codes (Learn, "Microsoft Graph error responses and resource types", and the Outlook calendar API's):
ErrorInvalidUser / MailboxNotFound / ResourceNotFound (no such mailbox), MailboxNotEnabledForRESTAPI (inactive,
soft-deleted or on-premises), ErrorAccessDenied or 403 (outside the app's RBAC scope), ErrorDuplicateTransactionId
(a create's transactionId seen before, C1).
"""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from azure.core.exceptions import ClientAuthenticationError
from kiota_abstractions.api_error import APIError

from ..core import mailbox_reasons
from ..core.operations import OpKind, Outcome
from ..core.tenants import (
    HOME,
    TENANT_CONSENT_MISSING,
    TENANT_CREDENTIAL_REFUSED,
    TENANT_REASONS,
    consent_missing_message,
    credential_refused_message,
)
from ..ports import MailboxProbe, MailboxUnavailable, PermanentError, TransientError

RETRYABLE = {424, 429, 500, 502, 503, 504}
DUPLICATE_TRANSACTION = "ErrorDuplicateTransactionId"
MAILBOX_CODES = {"ErrorInvalidUser", "MailboxNotEnabledForRESTAPI", "ResourceNotFound", "ErrorAccessDenied",
                 "ErrorMailboxStoreUnavailable", "MailboxNotFound"}
# Entra ID's answers when a tenant does not (or no longer) hold the app: no service principal, no consent, unknown app.
CONSENT_CODES = ("AADSTS65001", "AADSTS7000229", "AADSTS700016", "AADSTS500011", "AADSTS650051", "AADSTS90002")


def tenant_refusal(tenant: str, exc: Exception) -> tuple[str, str] | None:
    """(reason code, message) when another tenant refused the app: a credential the tenant's Entra ID refused, or a
    Graph 401 for that tenant's token. None for the home tenant, whose failures are the deployment's (exit 4)."""
    if tenant == HOME:
        return None
    if isinstance(exc, ClientAuthenticationError):
        if any(code in str(exc) for code in CONSENT_CODES):
            return TENANT_CONSENT_MISSING, consent_missing_message(tenant)
        return TENANT_CREDENTIAL_REFUSED, credential_refused_message(tenant)
    if isinstance(exc, APIError) and exc.response_status_code == 401:
        return TENANT_CONSENT_MISSING, consent_missing_message(tenant)
    return None


def classify(status: int, code: str | None, kind: OpKind | None) -> Outcome:
    if status < 300:
        return Outcome.OK
    if code in TENANT_REASONS:
        return Outcome.MAILBOX_UNAVAILABLE
    if kind == OpKind.CREATE and (code == DUPLICATE_TRANSACTION or status == 409):
        return Outcome.ALREADY_CREATED   # Graph saw this transactionId: an earlier attempt created the event (400 or 409)
    if code in MAILBOX_CODES or (status == 403):
        return Outcome.MAILBOX_UNAVAILABLE
    if status == 404:
        return Outcome.GONE if kind != OpKind.CREATE else Outcome.MAILBOX_UNAVAILABLE
    if status in RETRYABLE:
        return Outcome.TRANSIENT
    return Outcome.INVALID


def mailbox_reason(status: int, code: str | None) -> str:
    """The product's reason for a mailbox Graph refused (a tenant's refusal keeps its own code)."""
    if code in TENANT_REASONS:
        return code or ""
    if status == 403 or code == "ErrorAccessDenied":
        return mailbox_reasons.ACCESS_DENIED
    if code == "MailboxNotEnabledForRESTAPI":
        return mailbox_reasons.MAILBOX_DISABLED
    return mailbox_reasons.MAILBOX_NOT_FOUND


def refused_probe(reason: str) -> MailboxProbe:
    return MailboxProbe(False, reason, mailbox_reasons.sentence(reason))


def token_failure_probe() -> MailboxProbe:
    """The app's own identity got no token. On Functions the managed identity's endpoint fails now and then (reports in
    the Functions host's issue tracker), so the mailbox is not marked Failure on it: the test says so and may be run
    again; a credential that never works shows in every test and in the preflight."""
    return MailboxProbe(False, mailbox_reasons.AUTH_FAILED, mailbox_reasons.sentence(mailbox_reasons.AUTH_FAILED) +
                        " A token endpoint that failed once answers at the next try: test the mailbox again.", transient=True)


@contextlib.asynccontextmanager
async def classified(tenant: str) -> AsyncIterator[None]:
    """A direct Graph read (the recovery look-up by tag, a calendar listing) fails like any write would: transient
    (retry later, the mailbox stays retryable), mailbox unavailable (M6, a tenant that refuses the app too), or permanent."""
    try:
        yield
    except (APIError, ClientAuthenticationError) as err:
        refused = tenant_refusal(tenant, err)
        if refused is not None:
            raise MailboxUnavailable(refused[1]) from err
        if isinstance(err, ClientAuthenticationError):
            raise
        raise_classified(err)
    except (TimeoutError, httpx.TransportError) as exc:
        raise TransientError(f"Graph did not answer ({type(exc).__name__})", code="network") from exc


def raise_classified(err: APIError) -> None:
    status, code = err.response_status_code or 0, error_code(err)
    outcome = classify(status, code, OpKind.UPDATE)
    if outcome in (Outcome.TRANSIENT, Outcome.GONE) and status != 404:
        raise TransientError(f"Graph answered {status} ({code}) after retries", code=f"http_{status}") from err
    if outcome in (Outcome.MAILBOX_UNAVAILABLE, Outcome.GONE):
        raise MailboxUnavailable(mailbox_reasons.stated(mailbox_reason(status, code))) from err
    raise PermanentError(f"Graph refused the request ({status} {code})", code=f"http_{status}") from err


def error_code(err: APIError) -> str | None:
    error = getattr(err, "error", None)
    return getattr(error, "code", None)

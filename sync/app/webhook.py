"""T3: Dataverse webhooks sync a changed booking within seconds; the timer cycle stays as the safety net.

Dataverse posts a RemoteExecutionContext for each registered step (Create, Update, Delete of
bookableresourcebooking). The handler answers fast: it validates the payload, reads the booking by id
whatever the message says (a message is only a hint to look: only a 404 from Dataverse is a delete; this
also covers the message-too-large case, where Dataverse strips the body), records a pending
observation for every mailbox the change concerns (the booking's mailbox now, and every mailbox holding
a link for it, so a reassignment reaches both) and wakes the mailbox's own orchestration (WakeStore):
a running one goes round again before it ends, otherwise a new one starts under the mailbox's pseudonym.
A burst of changes coalesces into a few syncs, and two syncs of one mailbox never overlap (a per-mailbox
lease also keeps the timer cycle out).

When Dataverse or the state store cannot be reached for the moment, the answer is 503: Dataverse's webhook
service makes one more attempt for 502, 503 and 504 only (Learn, "Use webhooks", Troubleshoot WebHook
registrations), and the timer cycle catches whatever that attempt misses.
"""
from __future__ import annotations

import hmac
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError, ServiceResponseError

from ..core import scope
from ..core.domain import Booking, SkippedRow
from ..core.ids import environment_named, environment_of_domain, is_guid
from ..core.pseudonym import mailbox_ref
from ..core.serialize import booking_to_dict
from ..core.settings import SyncSettings
from ..engine.collect import Registered, needs_no_sync, with_waiting
from ..ports import BookingSource, DurableClient, MailboxRecord, PermanentError, Services, State, TransientError, WakeRows
from .orchestrators import MAILBOX_ORCHESTRATOR
from .settings import UNRESOLVED_SECRET, AppSettings

log = logging.getLogger("sync.webhook")
MAX_BODY = 512 * 1024
ENTITY = "bookableresourcebooking"
MESSAGES = {"Create", "Update", "Delete"}
SIZE_EXCEEDED_HEADER = "x-ms-dynamics-msg-size-exceeded"
WAKE_STALE_S = 600.0          # a claim older than this is taken over: its sync died without ending it


class WebhookRejected(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Notification:
    message: str
    booking_id: str
    correlation_id: str | None


def instance_id(telemetry_key: str, mailbox: str, generation: int) -> str:
    """The mailbox's own orchestration: pseudonymous, so no address lands in the Durable history or in logs."""
    return f"mailbox-sync-{mailbox_ref(telemetry_key, mailbox)}-{generation}"


def check_secret(expected: str | None, given: str | None) -> None:
    """The optional header secret (Dataverse's HttpHeader authentication), compared in constant time."""
    if expected and not hmac.compare_digest(expected.encode(), (given or "").encode()):
        raise WebhookRejected(401, "missing or wrong webhook key")


def parse(body: bytes, headers: dict[str, str]) -> Notification:
    if len(body) > MAX_BODY:
        raise WebhookRejected(413, f"payload larger than {MAX_BODY} bytes")
    try:
        context = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WebhookRejected(400, "the body is not JSON") from exc
    except RecursionError as exc:            # the parser's own depth bound: far beyond any RemoteExecutionContext
        raise WebhookRejected(400, "the body is nested too deeply") from exc
    if not isinstance(context, dict):
        raise WebhookRejected(400, "the body is not a RemoteExecutionContext object")
    entity, message, booking_id = context.get("PrimaryEntityName"), context.get("MessageName"), context.get("PrimaryEntityId")
    if not isinstance(entity, str) or entity != ENTITY:
        raise WebhookRejected(400, f"PrimaryEntityName must be {ENTITY}")
    if not isinstance(message, str) or message not in MESSAGES:
        raise WebhookRejected(400, f"MessageName must be one of {', '.join(sorted(MESSAGES))}")
    if not is_guid(booking_id):
        raise WebhookRejected(400, "PrimaryEntityId must be a GUID")
    correlation = context.get("CorrelationId") if isinstance(context.get("CorrelationId"), str) else None
    if {k.lower() for k in headers} & {SIZE_EXCEEDED_HEADER}:
        log.info("webhook body trimmed by Dataverse (message size exceeded): booking=%s", booking_id)
    return Notification(message, str(booking_id).lower(), correlation)


ORGANIZATION_HEADER = "x-ms-dynamics-organization"


def sending_environment(headers: dict[str, str], params: dict[str, str], environments: tuple[str, ...]) -> str:
    """The configured environment the message came from, as configured, from the domain name Dataverse puts in every
    webhook request (`x-ms-dynamics-organization`); `?environment=` is a documented override for a registration made
    without it. Never guessed: a domain this app does not serve, a parameter that names another environment, or
    (with several served) no name at all is refused with 400 (Dataverse shows it on the step's System Job), since a
    read from the wrong environment would answer 404 for a booking that exists."""
    domain = next((v for k, v in headers.items() if k.lower() == ORGANIZATION_HEADER), None)
    from_header = environment_of_domain(environments, domain) if domain is not None else None
    if domain is not None and from_header is None:
        raise WebhookRejected(400, "the message comes from an environment this app does not serve (its "
                                   f"{ORGANIZATION_HEADER} is not the domain of any DATAVERSE_ENVIRONMENTS entry)")
    given = params.get("environment")
    named = environment_named(environments, given) if given is not None else None
    if given is not None and named is None:
        raise WebhookRejected(400, "environment must be one of the configured DATAVERSE_ENVIRONMENTS")
    if from_header is not None and named is not None and named != from_header:
        raise WebhookRejected(400, f"?environment= names another environment than the one that sent the message ({ORGANIZATION_HEADER})")
    found = from_header or named
    if found is None:
        if len(environments) > 1:
            raise WebhookRejected(400, f"several environments are served and the message names none (no {ORGANIZATION_HEADER}); "
                                       "register each environment's webhook with ?environment=<its URL> (docs/webhooks.md)")
        return environments[0]
    return found


async def route(notification: Notification, source: BookingSource, state: State, settings: SyncSettings,
                now: datetime) -> dict[str, dict[str, Any] | None]:
    """The pending observations this change produces, per mailbox (nothing for mailboxes not registered, nor for
    one whose sync would leave the event alone: X1, as in collect)."""
    # A message is a hint, never the truth: whatever it says, the booking is read from Dataverse, and only
    # its absence there (a 404) is a delete. A forged or stale Delete for a booking that exists is a change.
    # And a 404 is a delete in the environment that answered it only (M4): it reaches the mailboxes holding a link
    # of that environment, and those bound to it whose waiting work names the booking, never another's mailbox.
    environment = source.environment.lower()
    booking = await source.read_booking(notification.booking_id)
    if isinstance(booking, SkippedRow):
        log.warning("webhook booking skipped: booking=%s reason=%s", booking.booking_id, booking.reason)
        return {}
    indexed = await state.index.holders(environment, [notification.booking_id])
    holders = set(indexed.get(notification.booking_id, set()))
    if booking is None:
        registered = Registered.of(await state.mailboxes.all())
        holders = (await with_waiting(state.partitions, registered.waiting_for(environment), {notification.booking_id: None},
                                      indexed)).get(notification.booking_id, set())
    observation = booking_to_dict(booking) if isinstance(booking, Booking) else None
    targets = set(holders)
    if isinstance(booking, Booking) and booking.mailbox:
        targets.add(booking.mailbox)
    routed: dict[str, dict[str, Any] | None] = {}
    for mailbox in sorted(targets):
        record = await state.mailboxes.get(mailbox)
        if record is None:                                               # not registered: nothing to keep for it
            continue
        if mailbox not in holders and not scope.serves(record.mailbox.environment, environment):
            continue                                                     # M4: bound to another environment
        if isinstance(booking, Booking) and await _left_alone(state, booking, record, settings, now):
            log.info("webhook change left alone (X1): booking=%s", notification.booking_id)
            continue
        routed[mailbox] = observation
        await state.partitions.observe({mailbox: {notification.booking_id: observation}})
    return routed


async def _left_alone(state: State, booking: Booking, record: MailboxRecord, settings: SyncSettings, now: datetime) -> bool:
    """needs_no_sync, with the mailbox's own record and filters; the global filters are read only for a cancellation
    that could be left alone."""
    if record.unreadable or not scope.may_be_left_alone(booking, settings, now):   # no filters to read
        return False
    global_filters = () if record.mailbox.filters else await state.config.global_filters()
    return needs_no_sync(booking, record.mailbox, record.has_work, settings, now, global_filters)


async def start_mailbox_syncs(client: DurableClient, wakes: WakeRows, telemetry_key: str, mailboxes: list[str],
                              now: datetime) -> list[str]:
    """Wake each mailbox's own sync: a running one is marked dirty and goes round again before it ends
    (no change waits for the timer); otherwise a new generation is claimed and started."""
    started = []
    for mailbox in mailboxes:
        generation = await wakes.request(mailbox, now, WAKE_STALE_S)
        if generation is None:
            continue
        ref = mailbox_ref(telemetry_key, mailbox)
        instance = instance_id(telemetry_key, mailbox, generation)
        try:
            await client.start_new(MAILBOX_ORCHESTRATOR, instance, {"mailbox_ref": ref, "generation": generation})
        except Exception:
            await wakes.finish(mailbox, generation, now, release=True)    # not started: let the next change claim it
            raise
        started.append(instance)
    return started


async def handle(body: bytes, headers: dict[str, str], params: dict[str, str], settings: AppSettings, client: DurableClient,
                 now_iso: str, services: Services) -> tuple[int, dict[str, Any]]:
    """The webhook function's body, shared by the Functions app and the local receiver. Returns (status, json).
    `services` are the caller's per-loop clients (connections and tokens reused across calls)."""
    if settings.webhook_secret_unresolved:                # fail closed: no secret to check against yet
        log.error("webhook refused: WEBHOOK_HEADER_SECRET did not resolve from Key Vault")
        return 503, {"error": UNRESOLVED_SECRET}
    try:
        check_secret(settings.webhook_secret, headers.get("x-fssync-webhook-key") or headers.get("X-Fssync-Webhook-Key"))
        notification = parse(body, headers)
    except WebhookRejected as exc:
        return exc.status, {"error": str(exc)}
    try:
        environment = sending_environment(headers, params, settings.environments)
    except WebhookRejected as exc:
        return exc.status, {"error": str(exc)}
    try:
        routed = await route(notification, services.source(environment), services.store, settings.sync,
                             datetime.fromisoformat(now_iso))
        started = await start_mailbox_syncs(client, services.store.wakes, await services.store.config.telemetry_key(), sorted(routed),
                                            datetime.fromisoformat(now_iso))
    except (TransientError, ServiceRequestError, ServiceResponseError, ClientAuthenticationError) as exc:
        # A token endpoint that failed (the managed identity's fails now and then on Functions) is a 503 too: Dataverse
        # posts a change once more after 502, 503 or 504 only, and a 500 would leave it to the next timer cycle.
        return _unavailable(notification, exc)
    except PermanentError as exc:
        if exc.code != "auth_failed":                    # the Dataverse client's word for a token it could not get
            raise
        return _unavailable(notification, exc)
    except HttpResponseError as exc:
        if (exc.status_code or 0) < 500 and exc.status_code != 429:
            raise
        return _unavailable(notification, exc)
    log.info("webhook accepted: message=%s booking=%s mailboxes=%d started=%d", notification.message, notification.booking_id,
             len(routed), len(started))
    return 202, {"booking": notification.booking_id, "message": notification.message, "mailboxes": len(routed), "started": len(started)}


def _unavailable(notification: Notification, exc: Exception) -> tuple[int, dict[str, Any]]:
    """503: the one answer (with 502 and 504) after which Dataverse posts the change once more."""
    log.warning("webhook deferred, a service did not answer: booking=%s error=%s", notification.booking_id, type(exc).__name__)
    return 503, {"error": "Dataverse or the state store did not answer; the change is taken on the next delivery or cycle",
                 "booking": notification.booking_id}

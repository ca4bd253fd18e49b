"""Typed, validated settings, read once at start (rule E4: a bad setting fails naming it and its form).

Every name here is an app setting (local.settings.sample.json, infra/ app settings). Profiles: the
`fieldservice` default reproduces Dynamics 365's documented behaviour; `enhanced` turns on the
improvements, each of which is also a setting of its own.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlsplit

from ..adapters.credentials import is_loopback_url
from ..core.ids import is_guid
from ..core.settings import SyncSettings
from ..core.tenants import HOME, TenantMap
from .schedule import ScheduleError
from .schedule import parse as parse_schedule

PROFILES = ("fieldservice", "enhanced")
ENHANCED_DEFAULTS = {"PROPAGATE_CANCELLATIONS": "true", "REFRESH_WORK_ORDER_FIELDS": "true",
                     "REMOVE_REASSIGNED_FUTURE_EVENTS": "true"}


class SettingError(ValueError):
    """A missing or malformed setting; the message names the setting and the expected form."""

    def __init__(self, name: str, expected: str, got: str | None):
        shown = "missing" if got is None else f"got {got!r}"
        super().__init__(f"setting {name}: expected {expected}; {shown}")
        self.setting = name


@dataclass(frozen=True)
class AppSettings:
    sync: SyncSettings
    environments: tuple[str, ...]
    graph_base_url: str = "https://graph.microsoft.com/v1.0"
    schedule: str = "0 */15 * * * *"
    storage_connection_string: str | None = None
    storage_table_endpoint: str | None = None
    table_prefix: str = "fssync"
    credential: str = "managed-identity"       # managed-identity | default | loopback-dev
    managed_identity_client_id: str | None = None
    webhook_secret: str | None = None          # header secret for the Dataverse webhook (a Key Vault reference in Azure)
    webhook_secret_unresolved: bool = False    # the reference is there, the secret not yet: the webhook refuses everything
    tenants: TenantMap = field(default_factory=TenantMap)   # mailbox domain -> tenant (MAILBOX_TENANTS)
    cross_tenant_app_client_id: str | None = None            # the multi-tenant app that trusts the managed identity
    extra: Mapping[str, str] = field(default_factory=dict)


def _bool(env: Mapping[str, str], name: str, default: str) -> bool:
    raw = env.get(name, default).strip().lower()
    if raw in ("true", "1", "yes", "on"):
        return True
    if raw in ("false", "0", "no", "off"):
        return False
    raise SettingError(name, "true or false", raw)


def _int(env: Mapping[str, str], name: str, default: str, low: int, high: int) -> int:
    raw = env.get(name, default).strip()
    if not re.fullmatch(r"-?\d+", raw) or not low <= int(raw) <= high:
        raise SettingError(name, f"a whole number from {low} to {high}", raw)
    return int(raw)


HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def _url(name: str, raw: str, allow_path: bool = True) -> str:
    parts = urlsplit(raw)
    expected = "an absolute URL such as https://contoso.crm.dynamics.com"
    if parts.scheme not in ("https", "http") or not parts.netloc or any(ch.isspace() for ch in raw):
        raise SettingError(name, expected, raw)
    try:
        _ = parts.port                                      # raises for a port that is not a number in range
    except ValueError:
        raise SettingError(name, expected + " (a port, if any, is a number)", raw) from None
    host = parts.hostname or ""
    if not (HOST.match(host) or host in ("::1",)) or parts.username or parts.password:
        raise SettingError(name, expected + " (a host name, no user or password)", raw)
    if parts.query or parts.fragment:
        raise SettingError(name, expected + " (no query or fragment)", raw)
    if not allow_path and parts.path not in ("", "/"):
        raise SettingError(name, expected + " (no path)", raw)
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SettingError(name, "an https URL (plain http is allowed for loopback only)", raw)
    return raw.rstrip("/")


UNRESOLVED_SECRET = ("the webhook's header secret is not set: WEBHOOK_HEADER_SECRET is a Key Vault reference that did not resolve. "
                     "Create the secret webhook-header-secret in the app's Key Vault (docs/webhooks.md); until then the webhook "
                     "refuses every request and the timer cycle syncs every change")


def _webhook_secret(raw: str | None) -> tuple[str | None, bool]:
    """(the secret, whether it is still to be set). App Service leaves a Key Vault reference it could not resolve in place:
    that text is never taken for the secret. The webhook then stays closed (fails safe) while the rest of the app runs,
    so a fresh deployment syncs on its timer before an administrator has created the secret."""
    if raw is not None and raw.startswith("@Microsoft.KeyVault("):
        return None, True
    return raw, False


def _tenants(env: Mapping[str, str]) -> tuple[TenantMap, str | None]:
    """MAILBOX_TENANTS `domain=tenant-id,...` (`home` for the deployment's own tenant) and the app other tenants trust."""
    raw = env.get("MAILBOX_TENANTS", "").strip()
    expected = "comma-separated domain=tenant pairs such as contoso.com=home,fabrikam.com=<tenant GUID>"
    domains: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        domain, _, tenant = (part.strip().lower() for part in pair.partition("="))
        if not HOST.match(domain) or "." not in domain or not (tenant == HOME or is_guid(tenant)):
            raise SettingError("MAILBOX_TENANTS", expected, pair)
        if domains.get(domain, tenant) != tenant:
            raise SettingError("MAILBOX_TENANTS", expected + " (each domain once)", pair)
        domains[domain] = tenant
    tenants = TenantMap(domains)
    app = (env.get("CROSS_TENANT_APP_CLIENT_ID") or "").strip().lower() or None
    if app is not None and not is_guid(app):
        raise SettingError("CROSS_TENANT_APP_CLIENT_ID", "the application (client) id of the cross-tenant app registration, a GUID", app)
    if tenants.other_tenants and app is None:
        raise SettingError("CROSS_TENANT_APP_CLIENT_ID", "the client id of the multi-tenant app registration that trusts the managed "
                           f"identity, because MAILBOX_TENANTS names tenant {tenants.other_tenants[0]} (docs/cross-tenant.md)", None)
    return tenants, app


def sync_settings_from(env: Mapping[str, str]) -> SyncSettings:
    profile = env.get("SYNC_PROFILE", "fieldservice").strip().lower()
    if profile not in PROFILES:
        raise SettingError("SYNC_PROFILE", "fieldservice or enhanced", profile)
    defaults = ENHANCED_DEFAULTS if profile == "enhanced" else {}
    logical = env.get("LOGICAL_DELETES", "unlink").strip().lower()
    if logical not in ("unlink", "delete"):
        raise SettingError("LOGICAL_DELETES", "unlink or delete", logical)
    return SyncSettings(
        profile=profile,
        window_past=timedelta(days=_int(env, "SYNC_WINDOW_PAST_DAYS", "7", 0, 365)),
        window_future=timedelta(days=_int(env, "SYNC_WINDOW_FUTURE_DAYS", "14", 1, 365)),
        propagate_cancellations=_bool(env, "PROPAGATE_CANCELLATIONS", defaults.get("PROPAGATE_CANCELLATIONS", "false")),
        logical_deletes=logical,
        refresh_work_order_fields=_bool(env, "REFRESH_WORK_ORDER_FIELDS", defaults.get("REFRESH_WORK_ORDER_FIELDS", "false")),
        remove_reassigned_future_events=_bool(env, "REMOVE_REASSIGNED_FUTURE_EVENTS", defaults.get("REMOVE_REASSIGNED_FUTURE_EVENTS",
                                                                                                   "false")),
        mass_delete_percent=float(_int(env, "MASS_DELETE_THRESHOLD_PERCENT", "50", 1, 100)),
        mass_delete_min=_int(env, "MASS_DELETE_MIN_COUNT", "10", 1, 100000),
    )


def load(env: Mapping[str, str] | None = None) -> AppSettings:
    env = dict(os.environ if env is None else env)
    raw_envs = env.get("DATAVERSE_ENVIRONMENTS", "").strip()
    if not raw_envs:
        raise SettingError("DATAVERSE_ENVIRONMENTS",
                           "a comma-separated list of environment URLs such as https://contoso.crm.dynamics.com", None)
    environments = tuple(dict.fromkeys(_url("DATAVERSE_ENVIRONMENTS", e.strip()) for e in raw_envs.split(",") if e.strip()))
    schedule = env.get("SYNC_SCHEDULE", "0 */15 * * * *").strip()
    try:
        parse_schedule(schedule)
    except ScheduleError as exc:
        raise SettingError("SYNC_SCHEDULE", f"a six-field NCRONTAB expression such as '0 */15 * * * *' ({exc})", schedule) from None
    conn = env.get("STATE_STORAGE_CONNECTION_STRING") or None
    endpoint = env.get("STATE_STORAGE_TABLE_ENDPOINT") or None
    if not conn and not endpoint:
        raise SettingError("STATE_STORAGE_TABLE_ENDPOINT",
                           "the Table Storage endpoint (https://<account>.table.core.windows.net), "
                           "or STATE_STORAGE_CONNECTION_STRING for Azurite", None)
    if endpoint:
        endpoint = _url("STATE_STORAGE_TABLE_ENDPOINT", endpoint)
    prefix = env.get("STATE_TABLE_PREFIX", "fssync").strip()
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,40}", prefix):
        raise SettingError("STATE_TABLE_PREFIX", "3-41 letters and digits, starting with a letter", prefix)
    credential = env.get("SYNC_CREDENTIAL", "managed-identity").strip().lower()
    if credential not in ("managed-identity", "default", "loopback-dev"):
        raise SettingError("SYNC_CREDENTIAL", "managed-identity, default or loopback-dev", credential)
    graph_url = _url("GRAPH_BASE_URL", env.get("GRAPH_BASE_URL", "https://graph.microsoft.com/v1.0").strip())
    if credential == "loopback-dev":
        remote = [u for u in (*environments, graph_url) if not is_loopback_url(u)]
        if remote:
            raise SettingError("SYNC_CREDENTIAL", "managed-identity or default for a real tenant (loopback-dev signs nothing "
                                                  "and serves the local emulator only)",
                               f"loopback-dev with {urlsplit(remote[0]).hostname}")
    tenants, cross_tenant_app = _tenants(env)
    webhook_secret, unresolved = _webhook_secret(env.get("WEBHOOK_HEADER_SECRET") or None)
    return AppSettings(
        sync=sync_settings_from(env), environments=environments, tenants=tenants, cross_tenant_app_client_id=cross_tenant_app,
        graph_base_url=graph_url,
        schedule=schedule, storage_connection_string=conn, storage_table_endpoint=endpoint, table_prefix=prefix,
        credential=credential, managed_identity_client_id=env.get("AZURE_CLIENT_ID") or None,
        webhook_secret=webhook_secret, webhook_secret_unresolved=unresolved,
    )

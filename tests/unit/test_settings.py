"""E4: a missing or malformed setting fails at start, naming the setting and the expected form."""
from __future__ import annotations

from datetime import timedelta

import pytest

from sync.app.settings import SettingError, load

GOOD = {"DATAVERSE_ENVIRONMENTS": "https://contoso.crm.dynamics.com", "STATE_STORAGE_TABLE_ENDPOINT": "https://acct.table.core.windows.net"}


def test_r_e4_defaults_are_the_fieldservice_profile():
    s = load(GOOD)
    assert s.sync.profile == "fieldservice" and not s.sync.propagate_cancellations and s.sync.logical_deletes == "unlink"
    assert s.sync.window_past == timedelta(days=7) and s.sync.window_future == timedelta(days=14)
    assert s.schedule == "0 */15 * * * *"


def test_r_e4_enhanced_profile_turns_improvements_on_each_overridable():
    s = load({**GOOD, "SYNC_PROFILE": "enhanced", "REFRESH_WORK_ORDER_FIELDS": "false"})
    assert s.sync.propagate_cancellations and s.sync.remove_reassigned_future_events and not s.sync.refresh_work_order_fields


@pytest.mark.parametrize("name,value,expected", [
    ("DATAVERSE_ENVIRONMENTS", "", "environment URLs"),
    ("DATAVERSE_ENVIRONMENTS", "contoso", "absolute URL"),
    ("DATAVERSE_ENVIRONMENTS", "http://contoso.crm.dynamics.com", "https"),
    ("SYNC_PROFILE", "fast", "fieldservice or enhanced"),
    ("LOGICAL_DELETES", "sometimes", "unlink or delete"),
    ("PROPAGATE_CANCELLATIONS", "maybe", "true or false"),
    ("SYNC_WINDOW_PAST_DAYS", "-1", "whole number"),
    ("SYNC_SCHEDULE", "*/15 * * * *", "six-field NCRONTAB"),
    ("SYNC_SCHEDULE", "a b c d e f", "second"),
    ("SYNC_SCHEDULE", "0 */15 24 * * *", "hour"),
    ("SYNC_SCHEDULE", "0 0 9 * Foo *", "month"),
    ("SYNC_SCHEDULE", "0 0 17-9 * * *", "backwards"),
    ("DATAVERSE_ENVIRONMENTS", "https://conto so.crm/ x", "absolute URL"),
    ("DATAVERSE_ENVIRONMENTS", "https://contoso.crm.dynamics.com/?x=1", "no query"),
    ("DATAVERSE_ENVIRONMENTS", "https://contoso.crm.dynamics.com:abc", "port"),
    ("GRAPH_BASE_URL", "https://user:pw@graph.microsoft.com/v1.0", "no user"),
    ("SYNC_CREDENTIAL", "loopback-dev", "loopback-dev signs nothing"),
    ("STATE_TABLE_PREFIX", "bad-prefix", "letters and digits"),
    ("SYNC_CREDENTIAL", "secret", "managed-identity"),
    ("MAILBOX_TENANTS", "contoso.com", "domain=tenant"),
    ("MAILBOX_TENANTS", "contoso.com=not-a-guid", "domain=tenant"),
    ("MAILBOX_TENANTS", "contoso.com=home,contoso.com=4b1d5e2a-7c3f-4a8e-9b6d-2f0e1c3a5b7d", "each domain once"),
    ("MAILBOX_TENANTS", "contoso.com=home,fabrikam.com=4b1d5e2a-7c3f-4a8e-9b6d-2f0e1c3a5b7d", "CROSS_TENANT_APP_CLIENT_ID"),
    ("CROSS_TENANT_APP_CLIENT_ID", "my-app", "a GUID"),
])
def test_r_e4_bad_setting_names_itself_and_the_expected_form(name, value, expected):
    with pytest.raises(SettingError) as err:
        load({**GOOD, name: value})
    setting = "CROSS_TENANT_APP_CLIENT_ID" if expected == "CROSS_TENANT_APP_CLIENT_ID" else name
    assert err.value.setting == setting and setting in str(err.value) and expected in str(err.value)


def test_mailbox_tenants_map_domains_to_tenants_and_default_to_home():
    assert load(GOOD).tenants.tenant_of("ana@anything.example") == "home"
    tid = "4b1d5e2a-7c3f-4a8e-9b6d-2f0e1c3a5b7d"
    settings = load({**GOOD, "MAILBOX_TENANTS": f" Contoso.com=home , fabrikam.com={tid.upper()}",
                     "CROSS_TENANT_APP_CLIENT_ID": "0f6c2d9e-1a4b-4c7d-8e3f-5a6b7c8d9e0f"})
    assert settings.tenants.tenant_of("ana@contoso.com") == "home" and settings.tenants.tenant_of("Bo@Fabrikam.com") == tid
    assert settings.tenants.tenant_of("cy@elsewhere.com") is None and settings.tenants.other_tenants == (tid,)


def test_r_e4_storage_is_required():
    with pytest.raises(SettingError) as err:
        load({"DATAVERSE_ENVIRONMENTS": "https://contoso.crm.dynamics.com"})
    assert "STATE_STORAGE_TABLE_ENDPOINT" in str(err.value)


@pytest.mark.parametrize("schedule", ["0 */15 * * * *", "0 */5 * * * *", "0 0 * * * *", "0 0 */2 * * *", "0 0 9-17 * * *",
                                      "0 30 9 * * *", "0 30 9 * * 1-5", "0 30 9 * Jan Mon", "5,8,10 1-30/5 * * * *"])
def test_r_e4_documented_ncrontab_forms_are_accepted(schedule):
    assert load({**GOOD, "SYNC_SCHEDULE": schedule}).schedule == schedule


def test_r_e4_loopback_dev_is_accepted_for_the_local_emulator_only():
    local = {"DATAVERSE_ENVIRONMENTS": "http://127.0.0.1:8400/orgs/default", "GRAPH_BASE_URL": "http://127.0.0.1:8400/v1.0",
             "STATE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true", "SYNC_CREDENTIAL": "loopback-dev"}
    assert load(local).credential == "loopback-dev"
    with pytest.raises(SettingError) as err:
        load({**local, "GRAPH_BASE_URL": "https://graph.microsoft.com/v1.0"})
    assert err.value.setting == "SYNC_CREDENTIAL" and "graph.microsoft.com" in str(err.value)


def test_r_e4_t3_an_unresolved_key_vault_reference_closes_the_webhook_and_is_never_taken_for_the_secret():
    """The header secret is on by default in Bicep; before an administrator creates it, App Service leaves the reference
    text in place. The app starts (the timer syncs), the webhook refuses everything (test_webhooks), and the text is
    never the secret a forger could send."""
    pending = load({**GOOD, "WEBHOOK_HEADER_SECRET": "@Microsoft.KeyVault(VaultName=kv1;SecretName=webhook-header-secret)"})
    assert pending.webhook_secret is None and pending.webhook_secret_unresolved
    assert load({**GOOD, "WEBHOOK_HEADER_SECRET": "s3cret"}).webhook_secret == "s3cret"

"""Issue 8: the infrastructure check runs in the test command and fails on a broken template; every app
setting the code reads is deployed by Bicep and listed in local.settings.sample.json."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

IAC_PYTHON = REPO / ".venv-iac" / "bin" / "python"


def check(folder: Path) -> subprocess.CompletedProcess:
    if not IAC_PYTHON.exists():
        raise AssertionError(".venv-iac is missing: the Makefile's setup target installs requirements-iac.txt")
    return subprocess.run([str(IAC_PYTHON), str(REPO / "tools" / "check_infra.py"), str(folder)], capture_output=True, text=True, timeout=300)


@pytest.fixture
def infra_copy(tmp_path) -> Path:
    target = tmp_path / "infra"
    shutil.copytree(REPO / "infra", target)
    return target


def test_infra_parses_and_checkov_passes():
    result = check(REPO / "infra")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout


def test_a_syntax_error_fails_the_check(infra_copy):
    path = infra_copy / "app.bicep"
    path.write_text(path.read_text().replace("resource storage 'Microsoft.Storage", "resource storage = 'Microsoft.Storage", 1))
    result = check(infra_copy)
    assert result.returncode == 1 and "app.bicep: does not parse" in result.stdout


def test_an_insecure_setting_fails_the_check(infra_copy):
    path = infra_copy / "app.bicep"
    path.write_text(path.read_text().replace("minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_0'"))
    result = check(infra_copy)
    assert result.returncode == 1 and "CKV_AZURE_44" in result.stdout


def test_a_suppression_without_reason_fails_the_check(infra_copy):
    path = infra_copy / "app.bicep"
    text = path.read_text()
    path.write_text(re.sub(r"(#checkov:skip=CKV_AZURE_43):[^\n]*", r"\1", text, count=1))
    result = check(infra_copy)
    assert result.returncode == 1 and "needs a reason" in result.stdout


def settings_read_by_code() -> set[str]:
    source = (REPO / "sync" / "app" / "settings.py").read_text()
    names = set(re.findall(r'env(?:\.get)?\(\s*"([A-Z][A-Z0-9_]+)"', source)) | set(re.findall(r'_(?:bool|int)\(env, "([A-Z][A-Z0-9_]+)"', source))
    names |= set(re.findall(r'os\.environ\.get\("([A-Z][A-Z0-9_]+)"', (REPO / "sync" / "app" / "telemetry.py").read_text()))
    names.add("DURABLE_TASK_HUB")                                              # read by host.json
    return names


def test_every_app_setting_is_deployed_and_in_the_sample():
    names = settings_read_by_code()
    assert {"DATAVERSE_ENVIRONMENTS", "SYNC_PROFILE", "LOGICAL_DELETES", "MASS_DELETE_MIN_COUNT", "APPLICATIONINSIGHTS_CONNECTION_STRING"} <= names
    bicep = set(re.findall(r"name: '([A-Z][A-Z0-9_]+)'", (REPO / "infra" / "app.bicep").read_text()))
    sample = set(json.loads((REPO / "local.settings.sample.json").read_text())["Values"])
    assert names - bicep == set(), f"not in infra/app.bicep app settings: {sorted(names - bicep)}"
    assert names - sample == set(), f"not in local.settings.sample.json: {sorted(names - sample)}"
    readme = (REPO / "README.md").read_text()
    assert [n for n in names if n not in readme] == []


def test_key_vault_holds_the_webhook_secret_and_provisioning_never_writes_it():
    app = (REPO / "infra" / "app.bicep").read_text()
    vault = app[app.index("resource vault 'Microsoft.KeyVault/vaults"):app.index("resource plan ")]
    assert "enableRbacAuthorization: true" in vault and "enablePurgeProtection: true" in vault and "enableSoftDelete: true" in vault
    assert "keyVaultReferenceIdentity: identity.id" in app
    assert "@Microsoft.KeyVault(VaultName=${vault.name};SecretName=${webhookSecretName})" in app
    assert "Microsoft.KeyVault/vaults/secrets" not in app, "a secret created by Bicep would be overwritten by every provision"
    assert "keyVaultSecretsUser" in app[app.index("resource vaultReader"):]


def test_alerts_cover_failed_or_blocked_cycles_failed_mailboxes_and_silence():
    app = (REPO / "infra" / "app.bicep").read_text()
    assert "Microsoft.Insights/actionGroups" in app and "Microsoft.Insights/scheduledQueryRules" in app
    for name in ("cycle-failed-or-blocked", "mailboxes-turned-failure", "no-successful-cycle-for-an-hour"):
        assert f"name: '{name}'" in app, name
    # the alert queries read what the app emits (sync/app/telemetry.py)
    telemetry = (REPO / "sync" / "app" / "telemetry.py").read_text()
    assert '"cycle finished"' in telemetry and '"outcome"' in telemetry and '"sync.mailbox.outcomes"' in telemetry
    assert all(a in (REPO / "docs" / "deploy.md").read_text() for a in ("ALERT_EMAIL", "WEBHOOK_SECRET_IN_KEY_VAULT"))


def test_administration_sits_behind_app_service_authentication_and_the_webhook_keeps_its_own():
    app = (REPO / "infra" / "app.bicep").read_text()
    auth = app[app.index("resource auth 'Microsoft.Web/sites/config"):app.index("resource vaultReader")]
    assert "name: 'authsettingsV2'" in auth and "requireAuthentication: true" in auth and "azureActiveDirectory" in auth
    assert "'/api/dataverse/webhook'" in auth, "the webhook authenticates with its function key and header secret"
    assert "clientSecret" not in auth, "token validation needs no secret"
    deploy = (REPO / "docs" / "deploy.md").read_text()
    assert all(role in deploy for role in ("Sync.Operator", "Mailbox.Approver", "ADMIN_APP_CLIENT_ID"))


def test_the_package_is_written_by_its_own_identity_into_its_own_account():
    """Issue 32: the runtime identity (Blob Data Owner on the state account) must not hold the account of its own code."""
    app = (REPO / "infra" / "app.bicep").read_text()
    deployment = app[app.index("deployment: {"):app.index("scaleAndConcurrency")]
    assert "packageStorage.properties.primaryEndpoints.blob" in deployment and "deployIdentity.id" in deployment
    writer = app[app.index("resource packageWriter"):]
    writer = writer[:writer.index("\n}\n")]
    assert "scope: packageContainer" in writer and "deployIdentity.properties.principalId" in writer
    assert "storageBlobDataContributor" in writer
    for grant in app.split("resource ")[1:]:
        if grant.split(" ")[0] != "packageWriter" and "roleAssignments" in grant.split("\n")[0]:
            assert "scope: packageStorage" not in grant and "scope: packageContainer" not in grant, grant[:200]


def test_the_header_secret_is_on_by_default_and_the_query_key_is_the_documented_fallback():
    main = (REPO / "infra" / "main.bicep").read_text()
    assert "param webhookSecretInKeyVault string = 'true'" in main
    assert "${WEBHOOK_SECRET_IN_KEY_VAULT=true}" in (REPO / "infra" / "main.parameters.json").read_text()
    assert "WEBHOOK_SECRET_IN_KEY_VAULT false" in (REPO / "docs" / "deploy.md").read_text()


def test_the_private_network_mode_closes_storage_and_vault_and_is_off_by_default():
    main = (REPO / "infra" / "main.bicep").read_text()
    app = (REPO / "infra" / "app.bicep").read_text()
    network = (REPO / "infra" / "private-network.bicep").read_text()
    assert "param privateNetworking string = 'false'" in main
    assert "module network 'private-network.bicep' = if (private)" in app
    assert "virtualNetworkSubnetId: private ? network.outputs.integrationSubnetId : null" in app
    for name in ("resource storage 'Microsoft.Storage", "resource vault 'Microsoft.KeyVault"):
        body = app[app.index(name):]
        body = body[:body.index("\n}\n")]
        assert "publicNetworkAccess: private ? 'Disabled' : 'Enabled'" in body and "defaultAction: private ? 'Deny' : 'Allow'" in body
    for group in ("'blob'", "'queue'", "'table'", "'vault'"):
        assert group in network
    assert "Microsoft.App/environments" in network and "privatelink.vaultcore.azure.net" in network

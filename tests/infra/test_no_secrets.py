"""No client secret or certificate anywhere: every credential is the managed identity, or a federated credential
that trusts it (docs/cross-tenant.md). Settings, Bicep, scripts and docs are held to that."""
from __future__ import annotations

import json
import re

from tests.conftest import REPO
from tests.infra.test_infra import settings_read_by_code

CREDENTIAL_SETTING = re.compile(r"CLIENT_SECRET|CERTIFICATE|PASSWORD|_CERT_|PRIVATE_KEY|CLIENT_ASSERTION", re.I)
# What would create or configure a secret or certificate for an app registration or a service principal.
SECRET_MAKERS = re.compile(r"passwordCredentials|keyCredentials|clientSecret|client_secret|az ad app credential reset|"
                           r"az ad sp credential reset|--create-cert|New-MgApplicationPassword|Add-MgApplicationKey|"
                           r"New-AzADAppCredential|ClientSecretCredential|CertificateCredential|AZURE_CLIENT_CERTIFICATE", re.I)


def test_no_setting_is_a_client_secret_or_a_certificate():
    names = settings_read_by_code() | set(json.loads((REPO / "local.settings.sample.json").read_text())["Values"])
    names |= set(re.findall(r"name: '([A-Z][A-Z0-9_]+)'", (REPO / "infra" / "app.bicep").read_text()))
    assert "CROSS_TENANT_APP_CLIENT_ID" in names and "MAILBOX_TENANTS" in names
    assert [n for n in names if CREDENTIAL_SETTING.search(n)] == []


def test_nothing_in_infra_docs_or_code_makes_a_secret_or_a_certificate():
    files = [*REPO.glob("infra/**/*"), *REPO.glob("docs/*.md"), REPO / "README.md", *REPO.glob("sync/**/*.py"),
             REPO / "azure.yaml", REPO / "function_app.py"]
    found = [f"{path.relative_to(REPO)}: {m.group(0)}" for path in files if path.is_file()
             for m in SECRET_MAKERS.finditer(path.read_text(errors="replace"))]
    assert found == []


def test_the_cross_tenant_app_trusts_the_managed_identity_with_a_federated_credential():
    script = (REPO / "infra" / "scripts" / "create-cross-tenant-app.sh").read_text()
    assert "--sign-in-audience AzureADMultipleOrgs" in script and "az ad app federated-credential create" in script
    assert '"audiences": ["api://AzureADTokenExchange"]' in script.replace("\\", "")
    assert "https://login.microsoftonline.com/$home_tenant/v2.0" in script and '"subject": "$principal"' in script.replace("\\", "")

"""Which Microsoft Entra tenant holds each mailbox: its address's domain, mapped by the MAILBOX_TENANTS setting.

A deployment's own (home) tenant is reached with its managed identity; any other tenant through the
cross-tenant app registration that trusts that identity (docs/cross-tenant.md). With no mapping every mailbox
is in the home tenant; with one, a domain it does not name belongs to no tenant, and such a mailbox is refused
at registration rather than guessed.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

HOME = "home"

# Stable reason codes for a tenant that refuses the app; the engine records them as the mailbox's failure (M6).
TENANT_NOT_MAPPED = "tenant_not_mapped"
TENANT_CONSENT_MISSING = "tenant_consent_missing"
TENANT_CREDENTIAL_REFUSED = "tenant_credential_refused"
TENANT_REASONS = (TENANT_NOT_MAPPED, TENANT_CONSENT_MISSING, TENANT_CREDENTIAL_REFUSED)


def domain_of(address: str) -> str:
    return address.rsplit("@", 1)[-1].lower() if "@" in address else ""


@dataclass(frozen=True)
class TenantMap:
    domains: Mapping[str, str] = field(default_factory=dict)      # mailbox domain -> tenant id, or HOME

    def tenant_of(self, address: str) -> str | None:
        """The tenant id (or HOME) holding the mailbox; None when the mapping names its domain nowhere."""
        if not self.domains:
            return HOME
        return self.domains.get(domain_of(address))

    @property
    def other_tenants(self) -> tuple[str, ...]:
        """The tenants other than home that the mapping names, each once, in a stable order."""
        return tuple(sorted({t for t in self.domains.values() if t != HOME}))

    def not_mapped_message(self, address: str) -> str:
        domain = domain_of(address) or "(none)"
        return (f"{TENANT_NOT_MAPPED}: the mailbox's domain {domain} is in no tenant of MAILBOX_TENANTS; add {domain}=<tenant id> "
                f"(or {domain}=home) to that setting")


def consent_missing_message(tenant: str) -> str:
    return (f"{TENANT_CONSENT_MISSING}: tenant {tenant} has not granted (or has revoked) admin consent for the cross-tenant app; "
            "an admin of that tenant grants it (docs/cross-tenant.md), then test the mailbox again")


def credential_refused_message(tenant: str) -> str:
    return (f"{TENANT_CREDENTIAL_REFUSED}: Microsoft Entra ID refused the app's federated credential for tenant {tenant}; check the "
            "app registration's federated identity credential (issuer, subject = the managed identity's object id, audience "
            "api://AzureADTokenExchange) and CROSS_TENANT_APP_CLIENT_ID")

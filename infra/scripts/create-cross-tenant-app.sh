#!/usr/bin/env bash
# Creates the multi-tenant app registration through which the Function App reaches mailboxes in other Microsoft
# Entra tenants, and makes it trust the app's user-assigned managed identity with a federated identity
# credential ("Configure an application to trust a managed identity"). No client secret or certificate is created.
#
# Run in the home tenant (where the Function App lives), signed in with `az login` as someone who may create
# app registrations:
#   infra/scripts/create-cross-tenant-app.sh <managed identity principal (object) id> [display name]
# The principal id is azd's output MANAGED_IDENTITY_PRINCIPAL_ID. The script prints CROSS_TENANT_APP_CLIENT_ID.
# Bicep cannot do this step: app registrations need the Microsoft Graph Bicep extension, which the pinned
# infrastructure checker cannot parse (docs/cross-tenant.md).
set -euo pipefail

principal="${1:?usage: create-cross-tenant-app.sh <managed identity principal id> [display name]}"
name="${2:-fieldservice-outlook-sync-cross-tenant}"
home_tenant="$(az account show --query tenantId -o tsv)"

app_id="$(az ad app list --display-name "$name" --query '[0].appId' -o tsv)"
if [ -z "$app_id" ]; then
  app_id="$(az ad app create --display-name "$name" --sign-in-audience AzureADMultipleOrgs --query appId -o tsv)"
fi

if ! az ad app federated-credential list --id "$app_id" --query "[?subject=='$principal'].name" -o tsv | grep -q .; then
  az ad app federated-credential create --id "$app_id" --parameters "{
    \"name\": \"function-app-managed-identity\",
    \"issuer\": \"https://login.microsoftonline.com/$home_tenant/v2.0\",
    \"subject\": \"$principal\",
    \"audiences\": [\"api://AzureADTokenExchange\"],
    \"description\": \"The Function App's user-assigned managed identity; no secret\"
  }" > /dev/null
fi

echo "CROSS_TENANT_APP_CLIENT_ID=$app_id"
echo "An admin of each mailbox tenant now consents: https://login.microsoftonline.com/<tenant id>/adminconsent?client_id=$app_id"
